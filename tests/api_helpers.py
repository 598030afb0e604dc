"""Shared by the API tests: a served MindBot with an HTTP client, and API keys for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import httpx

from mindbot.api.auth import create_key
from mindbot.harness import serve
from mindbot.runtime import MindBot
from pipelines.assistant import run


@asynccontextmanager
async def api_client(bot: MindBot) -> AsyncIterator[httpx.AsyncClient]:
    """Serve a started ``bot`` on loopback; yields a client whose base URL is the server's."""
    async with (
        serve(bot, run) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


def new_key(bot: MindBot, scopes: Iterable[str] = ("read",), *, name: str = "test", rate=None):
    """A new API key's ``Authorization`` header (the key is made as ``mindbot keys`` does)."""
    assert bot.storage is not None
    key, _ = create_key(bot.storage, name, scopes, rate)
    return {"Authorization": f"Bearer {key}"}


async def poll(fetch, until, timeout: float = 15.0):
    """Call ``await fetch()`` until ``until(result)`` holds; return that result.

    Fails the test (AssertionError) after ``timeout`` seconds.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = await fetch()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(0.1)
