"""Logging: loguru (Pipecat's logger) at the configured level.

Transcripts, memories, phone numbers and keys are logged at DEBUG only, so the default INFO
level keeps personal data out of the logs. Tracebacks are logged without the values of local
variables (loguru's ``diagnose``), which could hold a transcript or a key.
"""

import re
import sys

from loguru import logger

#: Pipecat messages above DEBUG that quote what a caller or the LLM said; the quote is cut.
_QUOTING = (re.compile(r"(Failed to parse function call arguments: ).*", re.DOTALL),)


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr at ``level`` and above."""
    logger.remove()
    logger.configure(patcher=_redact)
    logger.add(sys.stderr, level=level, diagnose=False)


def _redact(record) -> None:
    if record["level"].no > logger.level("DEBUG").no:
        for pattern in _QUOTING:
            record["message"] = pattern.sub(r"\1[redacted]", record["message"])
