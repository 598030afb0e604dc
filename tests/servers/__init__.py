"""Real servers of the protocols MindBot's tools speak, started on loopback for the tests.

Each module starts one kind (Radicale, Dovecot and aiosmtpd, Mosquitto, PostgreSQL, HTTP replay
servers) and stops it by PID when its block ends.
"""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, *, signum: int = signal.SIGTERM, grace: float = 5.0):
    """Stop a server process by PID: ``signum``, then SIGKILL if it outlives ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
