"""Serving MindBot in-process on loopback and placing simulated phone calls to it.

Used by the tests, the examples, ``mindbot call`` and ``mindbot bench``:

    async with serve(bot, run) as base_url:
        report = await simulated_call(ws_url(base_url), ["What is the capital of France?"])
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from mindbot.callsim import BotSpeech, PhoneCall
from mindbot.runtime import MindBot, PipelineRun

DEFAULT_VOICE_CACHE = Path.home() / ".cache" / "mindbot" / "caller-voices"


@dataclass
class Exchange:
    """One thing the caller said (or the call's start) and the bot's spoken answer.

    Args:
        said: What the caller said (empty for the greeting).
        heard: The bot's words, transcribed with the offline Whisper model.
        latency: Seconds from the end of the caller's speech to the bot's first audio
            (for the greeting: from the websocket ``start``).
        speech: The bot's audio as the caller received it.
    """

    said: str
    heard: str
    latency: float | None
    speech: BotSpeech | None = None


@dataclass
class CallReport:
    """What a simulated call heard."""

    greeting: Exchange
    turns: list[Exchange] = field(default_factory=list)
    recording: bytes | None = None
    """The call as a two-channel WAV (caller left, bot right), when asked for."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ws_url(base_url: str) -> str:
    """The Twilio Media Streams websocket URL of a server at ``base_url``."""
    return base_url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"


@asynccontextmanager
async def serve(
    bot: MindBot,
    run: PipelineRun,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    extend: Callable[[FastAPI], None] | None = None,
) -> AsyncIterator[str]:
    """Serve a started ``MindBot`` with ``run`` on loopback for the duration of the block.

    Args:
        bot: The started runtime.
        run: The pipeline's entry point.
        host: Where to listen.
        port: The port (a free one by default).
        extend: Adds routes to the app before it serves (the eval suite's ``/eval``).

    Yields:
        The server's base URL, e.g. ``http://127.0.0.1:40123``.
    """
    from mindbot.server import create_app, server_config

    port = port or free_port(host)
    app = create_app(bot, run)
    if extend is not None:
        extend(app)
    config = server_config(app, bot.settings, host=host, port=port)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped while starting")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        if bot.learning:  # let memories from the last sessions be stored
            await asyncio.wait(bot.learning, timeout=30)


async def simulated_call(
    url: str,
    utterances: list[str],
    *,
    from_number: str = "+15550100001",
    to_number: str = "+15550100002",
    cache_dir: Path | None = DEFAULT_VOICE_CACHE,
    transcribe_replies: bool = True,
    reply_timeout: float = 20.0,
    keep_recording: bool = False,
) -> CallReport:
    """Call a bot's Media Streams websocket, wait for its greeting, and say each utterance.

    Args:
        url: The bot's websocket URL.
        utterances: What the caller says, one reply awaited after each.
        from_number: The caller's number.
        to_number: The number the caller dialled (it can choose the persona).
        cache_dir: Where synthesized caller utterances are cached.
        transcribe_replies: Transcribe the bot's speech with Whisper.
        reply_timeout: How long to wait for each reply.
        keep_recording: Keep the call's two-channel recording in the report.
    """
    from mindbot.speech import synthesize, transcribe

    def hear(speech: BotSpeech) -> str:
        return transcribe(speech.audio, 8000) if transcribe_replies else ""

    audio = [await asyncio.to_thread(synthesize, text, cache_dir=cache_dir) for text in utterances]
    async with PhoneCall(url, from_number=from_number, to_number=to_number) as call:
        greeting = await call.wait_for_bot_speech(timeout=reply_timeout)
        report = CallReport(
            greeting=Exchange("", await asyncio.to_thread(hear, greeting), greeting.start, greeting)
        )
        for text, (pcm, rate) in zip(utterances, audio, strict=True):
            spoken_at = await call.say(pcm, rate)
            reply = await call.wait_for_bot_speech(after=spoken_at, timeout=reply_timeout)
            heard = await asyncio.to_thread(hear, reply)
            report.turns.append(Exchange(text, heard, reply.latency, reply))
        if keep_recording:
            report.recording = call.recording()
    return report
