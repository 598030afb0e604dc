"""Logging: loguru (Pipecat's logger) at the configured level.

Transcripts, memories, phone numbers and keys are logged at DEBUG only, so the default INFO
level keeps personal data out of the logs. Tracebacks are logged without the values of local
variables (loguru's ``diagnose``), which could hold a transcript or a key.
"""

import sys

from loguru import logger


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr at ``level`` and above."""
    logger.remove()
    logger.add(sys.stderr, level=level, diagnose=False)
