"""A Cartesia TTS websocket (``/tts/websocket``) stand-in.

It speaks the real wire protocol (PROTOCOLS.md section 3), so ``CartesiaTTSService`` works
against it unchanged::

    async with CartesiaStandIn() as cartesia:
        tts = CartesiaTTSService(
            api_key="x", url=cartesia.url, settings=CartesiaTTSService.Settings(voice="v")
        )

Each non-empty ``transcript`` becomes ~40 ms ``chunk`` messages of synthetic speech-like PCM
(paced at no more than 4x real time, so a ``cancel`` can land), then one ``timestamps``
message (when the request asks for ``add_timestamps``, as Pipecat does); ``continue: false``
adds ``done`` once the context's audio is out; ``cancel`` drops the context's queued audio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np
from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from mindbot.standins._server import WebSocketStandIn

CHUNK_SECS = 0.04
MAX_SPEEDUP = 4.0
SECS_PER_CHAR = 0.07
MAX_SECS = 8.0
MIN_SECS = 0.2

_Send = Callable[[dict[str, Any]], Awaitable[None]]


def default_synthesize(text: str, sample_rate: int) -> bytes:
    """Make audible, speech-like PCM for ``text``: a gliding tone with a syllable envelope.

    70 ms per character (0.2 s to 8 s) of a 180-260 Hz tone whose amplitude (peak about 8000)
    rises and falls four times a second.

    Args:
        text: The text to "speak".
        sample_rate: Output rate in Hz.

    Returns:
        PCM s16le mono bytes.
    """
    secs = min(MAX_SECS, max(MIN_SECS, SECS_PER_CHAR * len(text)))
    t = np.arange(int(secs * sample_rate)) / sample_rate
    freq = 220.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * 4.0 * t))
    fade = np.minimum(1.0, np.minimum(t, secs - t) / 0.01)
    wave = 8000.0 * envelope * fade * np.sin(phase)
    return wave.astype("<i2").tobytes()


def _word_times(words: list[str], offset: float, secs: float) -> tuple[list[float], list[float]]:
    total = sum(len(w) + 1 for w in words) or 1
    starts, ends, t = [], [], offset
    for word in words:
        span = secs * (len(word) + 1) / total
        starts.append(round(t, 3))
        ends.append(round(t + span * 0.9, 3))
        t += span
    return starts, ends


class _Context:
    """One Cartesia context on one connection: an ordered queue of work and its task.

    The queue holds the context's messages; ``None`` marks ``continue: false`` (send done).
    """

    def __init__(
        self,
        context_id: str,
        run: Callable[[_Context, _Send], Coroutine[Any, Any, None]],
        send: _Send,
        on_finished: Callable[[_Context], None],
    ):
        self.context_id = context_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.offset = 0.0
        self.closed = False
        self.task = asyncio.create_task(run(self, send), name=f"cartesia-context-{context_id}")
        self.task.add_done_callback(lambda _: on_finished(self))


class CartesiaStandIn(WebSocketStandIn):
    """Cartesia's TTS websocket on loopback.

    Records ``requests`` (every JSON message received), ``connections`` (path, query,
    headers) and ``cancelled`` (context ids cancelled by the client).
    """

    path = "/tts/websocket"

    def __init__(
        self,
        *,
        synthesize: Callable[[str, int], bytes] | None = None,
        first_chunk_delay: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        """Initialize the stand-in (call ``start()`` or use ``async with``).

        Args:
            synthesize: ``(text, sample_rate) -> PCM s16le bytes``, called in a thread.
                Defaults to ``default_synthesize``.
            first_chunk_delay: Seconds between a transcript arriving and its first chunk.
            api_key: If set, the handshake needs the ``X-API-Key: <api_key>`` header.
        """
        super().__init__()
        self._synthesize = synthesize or default_synthesize
        self.first_chunk_delay = first_chunk_delay
        self._api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.cancelled: list[str] = []

    @property
    def url(self) -> str:
        """The ``url`` for ``CartesiaTTSService``."""
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def _check_auth(self, headers: dict[str, str]) -> bool:
        return self._api_key is None or headers.get("x-api-key") == self._api_key

    async def _serve(self, ws: ServerConnection, info: dict[str, Any]) -> None:
        live: set[_Context] = set()
        cancelled: set[str] = set()
        send_lock = asyncio.Lock()

        async def send(msg: dict[str, Any]) -> None:
            async with send_lock:
                await ws.send(json.dumps(msg))

        async def error(message: str, context_id: Any = None) -> None:
            logger.warning(f"{self}: {message}")
            msg: dict[str, Any] = {"type": "error"}
            if context_id is not None:
                msg["context_id"] = context_id
            msg.update(
                {
                    "done": True,
                    "status_code": 400,
                    "error_code": "invalid_request",
                    "title": "Invalid request",
                    "message": message,
                }
            )
            await send(msg)

        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    if not isinstance(msg, dict):
                        raise ValueError("message is not a JSON object")
                except ValueError as e:
                    await error(f"Invalid JSON message: {e}")
                    continue
                self.requests.append(msg)
                context_id = msg.get("context_id")
                if not isinstance(context_id, str) or not context_id:
                    await error("context_id is required", context_id)
                    continue
                if msg.get("cancel") is True:
                    cancelled.add(context_id)
                    self.cancelled.append(context_id)
                    for ctx in [c for c in live if c.context_id == context_id]:
                        ctx.task.cancel()
                    logger.debug(f"{self}: cancelled context {context_id}")
                    continue
                if context_id in cancelled:
                    logger.debug(f"{self}: dropping message for cancelled context {context_id}")
                    continue
                if (problem := self._validate(msg)) is not None:
                    await error(problem, context_id)
                    continue
                ctx = next((c for c in live if c.context_id == context_id and not c.closed), None)
                if ctx is None:
                    # A new id, or one whose context was closed: both open a fresh context.
                    ctx = _Context(context_id, self._run_context, send, live.discard)
                    live.add(ctx)
                ctx.queue.put_nowait(msg)
                if not msg.get("continue", False):
                    ctx.closed = True
                    ctx.queue.put_nowait(None)
        finally:
            tasks = [c.task for c in live]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _validate(msg: dict[str, Any]) -> str | None:
        transcript = msg.get("transcript", "")
        if not isinstance(transcript, str):
            return "transcript must be a string"
        if not transcript:
            return None
        fmt = msg.get("output_format")
        if not isinstance(fmt, dict):
            return "output_format is required"
        if fmt.get("encoding", "pcm_s16le") != "pcm_s16le" or fmt.get("container", "raw") != "raw":
            return "this stand-in only produces raw pcm_s16le"
        rate = fmt.get("sample_rate")
        if not isinstance(rate, int) or not 8000 <= rate <= 48000:
            return f"invalid output_format.sample_rate {rate!r}"
        return None

    async def _run_context(self, ctx: _Context, send: _Send) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await ctx.queue.get()
                if msg is None:
                    await send({"type": "done", "context_id": ctx.context_id, "done": True})
                    return
                text = msg.get("transcript", "")
                if not text:
                    continue
                if self.first_chunk_delay:
                    await asyncio.sleep(self.first_chunk_delay)
                rate = int(msg["output_format"]["sample_rate"])
                pcm = await asyncio.to_thread(self._synthesize, text, rate)
                if len(pcm) % 2:
                    pcm += b"\x00"
                step = max(2, int(rate * CHUNK_SECS) * 2)
                started = loop.time()
                for n, i in enumerate(range(0, len(pcm), step)):
                    # Pace: chunk n may not leave before n * 40 ms / 4 of wall time.
                    wait = started + n * CHUNK_SECS / MAX_SPEEDUP - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    chunk = pcm[i : i + step]
                    await send(
                        {
                            "type": "chunk",
                            "context_id": ctx.context_id,
                            "data": base64.b64encode(chunk).decode("ascii"),
                            "done": False,
                            "status_code": 206,
                            "step_time": round(len(chunk) / 2 / rate * 1000, 3),
                        }
                    )
                secs = len(pcm) / 2 / rate
                words = text.split()
                if words and msg.get("add_timestamps") is True:
                    starts, ends = _word_times(words, ctx.offset, secs)
                    await send(
                        {
                            "type": "timestamps",
                            "context_id": ctx.context_id,
                            "done": False,
                            "status_code": 206,
                            "word_timestamps": {"words": words, "start": starts, "end": ends},
                        }
                    )
                ctx.offset += secs
                if math.isclose(secs, 0.0):
                    logger.warning(f"{self}: synthesize returned no audio for {text!r}")
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - e.g. a failing synthesize callable
            logger.opt(exception=e).error(f"{self}: context {ctx.context_id} failed: {e}")
            with contextlib.suppress(ConnectionClosed):
                await send(
                    {
                        "type": "error",
                        "context_id": ctx.context_id,
                        "done": True,
                        "status_code": 500,
                        "error_code": "internal_error",
                        "title": "Internal error",
                        "message": str(e),
                    }
                )
