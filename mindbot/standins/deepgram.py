"""A Deepgram live-transcription (``/v1/listen``) websocket stand-in.

It speaks the real wire protocol (PROTOCOLS.md section 2), so ``DeepgramSTTService`` works
against it unchanged::

    async with DeepgramStandIn(transcripts=["what's the weather"]) as dg:
        stt = DeepgramSTTService(api_key="x", base_url=dg.url)

Speech is detected by RMS energy over 20 ms windows of the linear16 audio. After about 0.3 s of
speech it sends one interim ``Results``; the utterance ends on ``Finalize`` or after
``endpointing`` ms of silence, and a final ``Results`` follows ``final_delay`` seconds later.

Scripted transcripts may carry the language they are "spoken" in, as ``(text, language)``::

    dg.add_transcripts("what's the weather", ("hola, ¿qué tal?", "es"))

With ``language=multi`` in the query (Deepgram's multilingual code-switching), each alternative
carries ``languages: [detected]`` and each word its ``language``, as Deepgram reports them; the
detected language is the utterance's scripted one, else the stand-in's ``language``, else
``en``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from websockets.asyncio.server import ServerConnection

from mindbot.standins._server import WebSocketStandIn

WINDOW_SECS = 0.02
INTERIM_AFTER_SECS = 0.3
MIN_SPEECH_SECS = 0.1
DEFAULT_ENDPOINTING_MS = 300
DEFAULT_TRANSCRIPT = "hello"
DEFAULT_LANGUAGE = "en"
MULTILINGUAL = "multi"

Transcript = str | tuple[str, str]
"""A scripted transcript: its text, or ``(text, language)`` with a BCP-47 language tag."""


def _flag(query: dict[str, list[str]], name: str, default: bool) -> bool:
    values = query.get(name)
    if not values:
        return default
    return values[-1].strip().lower() == "true"


def _scripted(transcript: Transcript) -> tuple[str, str | None]:
    if isinstance(transcript, tuple):
        text, language = transcript
        return str(text), str(language) if language else None
    return str(transcript), None


def _int(query: dict[str, list[str]], name: str, default: int | None) -> int | None:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        return default


@dataclass
class _Outgoing:
    """A message due at ``due`` (loop time), built just before sending."""

    due: float
    build: Callable[[], Awaitable[dict[str, Any] | None]]
    close_after: bool = False


@dataclass
class _Utterance:
    start: float = 0.0
    speech_secs: float = 0.0
    silence_secs: float = 0.0
    pcm: bytearray = field(default_factory=bytearray)
    interim_sent: bool = False


class _Session:
    """The state of one client connection."""

    def __init__(self, owner: DeepgramStandIn, ws: ServerConnection, info: dict[str, Any]):
        query = info["query"]
        self.owner = owner
        self.ws = ws
        self.request_id = str(uuid.uuid4())
        self.sample_rate = _int(query, "sample_rate", 16000) or 16000
        self.model = (query.get("model") or ["nova-3-general"])[-1]
        self.multilingual = (query.get("language") or [""])[-1].strip().lower() == MULTILINGUAL
        endpointing = (query.get("endpointing") or [""])[-1].strip().lower()
        self.endpointing_secs: float | None = None
        if endpointing != "false":
            ms = _int(query, "endpointing", DEFAULT_ENDPOINTING_MS)
            self.endpointing_secs = (ms if ms is not None else DEFAULT_ENDPOINTING_MS) / 1000
        self.interim = owner.interim_results and _flag(query, "interim_results", False)
        self.vad_events = _flag(query, "vad_events", False)
        utterance_end_ms = _int(query, "utterance_end_ms", None)
        self.utterance_end_secs = utterance_end_ms / 1000 if utterance_end_ms else None
        self.window_bytes = max(2, int(self.sample_rate * WINDOW_SECS) * 2)
        self.pending = bytearray()
        self.stream_secs = 0.0
        self.utterance: _Utterance | None = None
        self.last_word_end: float | None = None
        self.silence_since_final = 0.0
        self.outbox: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self.closing = False

    def __str__(self) -> str:
        return f"{self.owner}[{self.request_id[:8]}]"

    # -- audio --------------------------------------------------------------------------

    def on_audio(self, data: bytes) -> None:
        self.owner.audio_bytes += len(data)
        self.pending.extend(data)
        while len(self.pending) >= self.window_bytes:
            window = bytes(self.pending[: self.window_bytes])
            del self.pending[: self.window_bytes]
            self._on_window(window)

    def _on_window(self, window: bytes) -> None:
        samples = np.frombuffer(window, dtype="<i2").astype(np.float64)
        rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        secs = len(window) / 2 / self.sample_rate
        start = self.stream_secs
        self.stream_secs += secs
        speech = rms >= self.owner.speech_threshold
        utt = self.utterance
        if utt is None:
            if not speech:
                self._on_idle_silence(secs)
                return
            utt = self.utterance = _Utterance(start=start)
            if self.vad_events:
                msg = {"type": "SpeechStarted", "channel": [0], "timestamp": round(start, 3)}
                self._enqueue(0.0, msg)
        utt.pcm.extend(window)
        if speech:
            utt.speech_secs += secs
            utt.silence_secs = 0.0
        else:
            utt.silence_secs += secs
        if self.interim and not utt.interim_sent and utt.speech_secs >= INTERIM_AFTER_SECS:
            utt.interim_sent = True
            self._queue_interim(utt)
        if self.endpointing_secs is not None and utt.silence_secs >= self.endpointing_secs:
            if utt.speech_secs < MIN_SPEECH_SECS:
                # A click or a cough: real ASR finds no words in it, so no transcript.
                self.utterance = None
                return
            self._end_utterance(from_finalize=False)

    def _on_idle_silence(self, secs: float) -> None:
        if self.last_word_end is None or self.utterance_end_secs is None:
            return
        self.silence_since_final += secs
        if self.silence_since_final >= self.utterance_end_secs:
            msg = {"type": "UtteranceEnd", "channel": [0], "last_word_end": self.last_word_end}
            self._enqueue(0.0, msg)
            self.last_word_end = None

    # -- utterances ---------------------------------------------------------------------

    def _queue_interim(self, utt: _Utterance) -> None:
        owner = self.owner
        start, duration = utt.start, self.stream_secs - utt.start
        peek, language = owner._peek_transcript()
        pcm = bytes(utt.pcm)

        async def build() -> dict[str, Any] | None:
            text = peek if peek is not None else await owner._transcribe(pcm, self.sample_rate)
            words = text.split()
            if not words:
                return None
            partial = " ".join(words[: max(1, len(words) // 2)])
            return self._results(partial, start, duration, is_final=False, language=language)

        self.outbox.put_nowait(_Outgoing(asyncio.get_running_loop().time(), build))

    def _end_utterance(self, *, from_finalize: bool) -> None:
        utt, self.utterance = self.utterance, None
        if utt is not None and utt.speech_secs < MIN_SPEECH_SECS:
            utt = None
        language: str | None = None
        if utt is None:
            start, duration, pcm, text = self.stream_secs, 0.0, b"", ""
        else:
            start, duration, pcm = utt.start, self.stream_secs - utt.start, bytes(utt.pcm)
            text, language = self.owner._take_transcript()
        owner = self.owner
        heard = utt is not None

        async def build() -> dict[str, Any] | None:
            final = text
            if heard and final is None:
                final = await owner._transcribe(pcm, self.sample_rate)
            msg = self._results(
                final or "",
                start,
                duration,
                is_final=True,
                speech_final=not from_finalize,
                from_finalize=from_finalize,
                language=language,
            )
            owner.finals.append(msg)
            return msg

        if utt is not None:
            self.last_word_end = round(start + duration - utt.silence_secs, 3)
            self.silence_since_final = utt.silence_secs
        delay = self.owner.final_delay if heard else 0.0
        self.outbox.put_nowait(_Outgoing(asyncio.get_running_loop().time() + delay, build))

    def _results(
        self,
        text: str,
        start: float,
        duration: float,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        language: str | None = None,
    ) -> dict[str, Any]:
        detected = self._detected(language)
        tokens = text.split()
        step = duration / len(tokens) if tokens else 0.0
        words = [
            {
                "word": token.strip(".,!?;:\"'").lower() or token,
                "start": round(start + i * step, 3),
                "end": round(start + (i + 1) * step, 3),
                "confidence": 0.99,
                "punctuated_word": token,
            }
            for i, token in enumerate(tokens)
        ]
        if detected and self.multilingual:
            for word in words:
                word["language"] = detected
        alternative: dict[str, Any] = {
            "transcript": text,
            "confidence": 0.99 if text else 0.0,
            "words": words,
        }
        if detected:
            alternative["languages"] = [detected]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.model, "version": "standin", "arch": "standin"},
                "model_uuid": "00000000-0000-0000-0000-000000000000",
            },
        }

    def _detected(self, language: str | None) -> str | None:
        """The language the Results reports, if any.

        Deepgram reports languages only with ``language=multi``; a stand-in built with a
        ``language`` reports it on every Results, as it always has.
        """
        if self.multilingual:
            return language or self.owner.language or DEFAULT_LANGUAGE
        if self.owner.language:
            return language or self.owner.language
        return None

    def _enqueue(self, delay: float, msg: dict[str, Any], *, close_after: bool = False) -> None:
        async def build() -> dict[str, Any]:
            return msg

        due = asyncio.get_running_loop().time() + delay
        self.outbox.put_nowait(_Outgoing(due, build, close_after))

    # -- control ------------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            logger.warning(f"{self}: malformed control message {text[:80]!r}: {e}")
            await self.ws.send(
                json.dumps(
                    {
                        "type": "Error",
                        "variant": "DATA-0000",
                        "description": f"Invalid control message: {e}",
                        "message": "",
                    }
                )
            )
            return
        self.owner.control_messages.append(msg)
        kind = msg.get("type")
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            self._end_utterance(from_finalize=True)
        elif kind == "CloseStream":
            if self.utterance is not None:
                self._end_utterance(from_finalize=False)
            self._enqueue(0.0, self._metadata(), close_after=True)
            self.closing = True
        else:
            logger.warning(f"{self}: ignoring unknown control message type {kind!r}")

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0" * 64,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": round(self.stream_secs, 3),
            "channels": 1,
            "models": ["00000000-0000-0000-0000-000000000000"],
            "model_info": {},
        }

    async def send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self.outbox.get()
            wait = item.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            msg = await item.build()
            if msg is not None:
                await self.ws.send(json.dumps(msg))
            if item.close_after:
                await self.ws.close(1000, "")
                return


class DeepgramStandIn(WebSocketStandIn):
    """Deepgram's live ``/v1/listen`` websocket on loopback.

    Records ``connections`` (path, parsed query, headers), ``control_messages`` (the JSON
    text messages), ``audio_bytes`` (binary bytes received) and ``finals`` (final Results
    sent). Only ``encoding=linear16`` (the default) is accepted.
    """

    path = "/v1/listen"

    def __init__(
        self,
        *,
        transcripts: list[Transcript] | None = None,
        transcriber: Callable[[bytes, int], str] | None = None,
        final_delay: float = 0.0,
        interim_results: bool = True,
        api_key: str | None = None,
        language: str | None = None,
        speech_threshold: float = 500.0,
    ) -> None:
        """Initialize the stand-in (call ``start()`` or use ``async with``).

        Args:
            transcripts: Final transcripts to hand out, one per utterance, in order; each a
                text or ``(text, language)``.
            transcriber: Used when ``transcripts`` is exhausted or not given: called (in a
                thread) with the utterance's PCM s16le bytes and its sample rate.
            final_delay: Seconds between the end of an utterance and its final Results.
            interim_results: Send one interim Results per utterance, if the client also asked
                for ``interim_results=true``.
            api_key: If set, the handshake needs ``Authorization: Token <api_key>``.
            language: If set, each alternative carries ``languages: [language]`` (an
                utterance's scripted language wins); with ``language=multi`` in the query it is
                the language detected when an utterance has none (default ``en``).
            speech_threshold: RMS level (of 16-bit samples) above which a 20 ms window is
                speech.
        """
        super().__init__()
        self._transcripts = [_scripted(t) for t in transcripts or []]
        self._transcriber = transcriber
        self.final_delay = final_delay
        self.interim_results = interim_results
        self._api_key = api_key
        self.language = language
        self.speech_threshold = speech_threshold
        self.control_messages: list[dict[str, Any]] = []
        self.finals: list[dict[str, Any]] = []
        self.audio_bytes = 0

    @property
    def url(self) -> str:
        """The ``base_url`` for ``DeepgramSTTService`` (no path: the SDK adds /v1/listen)."""
        return f"ws://127.0.0.1:{self.port}"

    def add_transcripts(self, *transcripts: Transcript) -> None:
        """Queue more final transcripts.

        Args:
            *transcripts: Transcripts for the next utterances, in order: a text, or
                ``(text, language)`` for an utterance in that language.
        """
        self._transcripts.extend(_scripted(t) for t in transcripts)

    def _check_auth(self, headers: dict[str, str]) -> bool:
        if self._api_key is None:
            return True
        return headers.get("authorization") == f"Token {self._api_key}"

    def _check_query(self, query: dict[str, list[str]]) -> str | None:
        encoding = (query.get("encoding") or ["linear16"])[-1]
        if encoding != "linear16":
            return f"Unsupported encoding {encoding!r}: this stand-in only takes linear16"
        rate = _int(query, "sample_rate", 16000)
        if rate is None or not 4000 <= rate <= 192000:
            return f"Invalid sample_rate {query.get('sample_rate')!r}"
        return None

    def _peek_transcript(self) -> tuple[str | None, str | None]:
        if self._transcripts:
            return self._transcripts[0]
        if self._transcriber is None:
            return DEFAULT_TRANSCRIPT, None
        return None, None

    def _take_transcript(self) -> tuple[str | None, str | None]:
        if self._transcripts:
            return self._transcripts.pop(0)
        if self._transcriber is None:
            return DEFAULT_TRANSCRIPT, None
        return None, None

    async def _transcribe(self, pcm: bytes, sample_rate: int) -> str:
        if self._transcriber is None:
            return DEFAULT_TRANSCRIPT
        try:
            return await asyncio.to_thread(self._transcriber, pcm, sample_rate)
        except Exception as e:  # noqa: BLE001 - a failing transcriber yields no words
            logger.opt(exception=e).error(f"{self}: transcriber failed: {e}")
            return ""

    async def _serve(self, ws: ServerConnection, info: dict[str, Any]) -> None:
        session = _Session(self, ws, info)
        logger.debug(f"{session}: connected, query={info['query']}")
        sender = asyncio.create_task(session.send_loop(), name=f"{session}::send")
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    if not session.closing:
                        session.on_audio(message)
                else:
                    await session.on_text(message)
        finally:
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            logger.debug(f"{session}: closed")
