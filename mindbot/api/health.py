"""``/readyz``: whether this MindBot can take calls now.

Each check answers ``{"ok": bool, "detail": str}``; the server is ready when all are ok:

- ``database``: the SQLite file takes a write (or storage is off);
- ``models``: the shared models are loaded (``MindBot.start()`` finished);
- ``local_llm``: the llama.cpp server MindBot supervises answers (or none is used);
- ``stt``, ``llm``, ``tts``, ``twilio``, ``daily``: the configured provider's host accepts a TCP
  connection (or the stage runs locally / the service is not configured).

Details never carry secrets or file paths: the endpoint is unauthenticated, for load balancers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loguru import logger

from mindbot.errors import StorageError

if TYPE_CHECKING:
    from mindbot.runtime import MindBot

DEEPGRAM_URL = "https://api.deepgram.com"
OPENAI_URL = "https://api.openai.com/v1"
TWILIO_URL = "https://api.twilio.com"
_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


async def readiness(bot: MindBot, *, timeout: float) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every check concurrently, each within ``timeout`` seconds.

    Returns:
        Whether all passed, and each check's result by name.
    """
    checks = {
        "database": _database(bot),
        "models": _models(bot),
        "local_llm": _local_llm(bot),
        **{name: _reachable(url) for name, url in _providers(bot).items()},
    }

    async def bounded(name: str, check) -> tuple[str, dict[str, Any]]:
        try:
            ok, detail = await asyncio.wait_for(check, timeout)
        except TimeoutError:
            ok, detail = False, f"no answer within {timeout:g} s"
        return name, {"ok": ok, "detail": detail}

    results = dict(await asyncio.gather(*(bounded(n, c) for n, c in checks.items())))
    return all(result["ok"] for result in results.values()), results


async def _database(bot: MindBot) -> tuple[bool, str]:
    storage = bot.storage
    if storage is None:
        return True, "storage is off"
    try:
        await asyncio.to_thread(storage.check_writable)
    except StorageError as e:
        logger.warning(f"readyz: the database is not writable: {e}")
        return False, "not writable"
    return True, "writable"


async def _models(bot: MindBot) -> tuple[bool, str]:
    try:
        bot.services  # noqa: B018 - raises until MindBot.start() has loaded the models
    except RuntimeError:
        return False, "not loaded (MindBot is not started)"
    return True, "loaded"


async def _local_llm(bot: MindBot) -> tuple[bool, str]:
    healthy = await asyncio.to_thread(bot.local_llm_healthy)
    if healthy is None:
        return True, "not used"
    return (True, "healthy") if healthy else (False, "not answering")


def _providers(bot: MindBot) -> dict[str, str | None]:
    """Each remote service's URL, or None when it is not configured or runs locally."""
    s, p = bot.settings, bot.providers
    # An llm_base_url with llm=local is a llama.cpp server run by someone else: check it too.
    llm = (s.llm_base_url or OPENAI_URL) if p.llm == "openai" else s.llm_base_url
    return {
        "stt": (s.deepgram_base_url or DEEPGRAM_URL) if p.stt == "deepgram" else None,
        "llm": llm,
        "tts": s.cartesia_url if p.tts == "cartesia" else None,
        "twilio": (s.twilio_api_base_url or TWILIO_URL) if s.twilio_can_hang_up else None,
        "daily": s.daily_api_url if s.daily_api_key else None,
    }


async def _reachable(url: str | None) -> tuple[bool, str]:
    if url is None:
        return True, "not configured"
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port or _PORTS.get(parts.scheme, 443)
    except ValueError:
        return False, "invalid URL"
    if not host:
        return False, "invalid URL"
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        return False, f"{host} unreachable ({type(e).__name__})"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, f"{host} reachable"
