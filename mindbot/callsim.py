"""A phone-call simulator that speaks Twilio Media Streams over a real websocket.

It plays the part of Twilio exactly as a bot sees it: ``connected``, ``start`` (with
``customParameters``), 20 ms mu-law ``media`` frames paced in real time (silence between
utterances), ``mark`` echoes and ``stop``. It records the bot's audio with arrival times and
measures, per reply, the voice-to-voice latency from the caller's side: from the end of the
caller's speech (the last voiced sample sent) to the first non-silent audio of the bot.

    async with PhoneCall("ws://127.0.0.1:7860/ws", from_number="+15550100001") as call:
        greeting = await call.wait_for_bot_speech()
        spoken_at = await call.say(pcm, 22050)
        reply = await call.wait_for_bot_speech(after=spoken_at)
        print(reply.latency)
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mindbot.audio import (
    first_voiced_offset,
    last_voiced_end,
    pcm_to_ulaw,
    resample,
    ulaw_to_pcm,
    wav_bytes,
)

RATE = 8000
FRAME_SECS = 0.02
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
SILENT_FRAME = b"\xff" * FRAME_BYTES


@dataclass
class BotSpeech:
    """One stretch of bot speech as the caller heard it.

    Args:
        start: Seconds from the call's start to the first non-silent bot audio.
        end: Seconds from the call's start to the end of the last non-silent bot audio.
        audio: The bot's 8 kHz 16-bit PCM over that stretch.
        latency: ``start`` minus the end of the caller speech it answers, if any.
        cleared: Whether a ``clear`` (barge-in) arrived while it played.
    """

    start: float
    end: float
    audio: bytes
    latency: float | None = None
    cleared: bool = False


@dataclass
class _Chunk:
    """Bot audio as it arrived, with its voiced span worked out once, on arrival."""

    at: float
    pcm: bytes
    voiced: tuple[float, float] | None = None  # (start, end), seconds from the call's start

    @classmethod
    def arrived(cls, at: float, pcm: bytes) -> _Chunk:
        offset = first_voiced_offset(pcm, RATE)
        if offset is None:
            return cls(at, pcm)
        return cls(at, pcm, (at + offset, at + (last_voiced_end(pcm, RATE) or 0.0)))


@dataclass
class PhoneCall:
    """A simulated Twilio caller connected to a bot's Media Streams websocket.

    Args:
        url: The bot's websocket URL (e.g. ``ws://127.0.0.1:7860/ws``).
        from_number: The caller's number, sent as the ``from_number`` custom parameter.
        to_number: The dialled number, sent as ``to_number``.
        custom_parameters: More ``customParameters`` for the ``start`` message.
    """

    url: str
    from_number: str = "+15550100001"
    to_number: str = "+15550100002"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    account_sid: str = "AC" + "0" * 32
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)

    def __post_init__(self):
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._t0 = 0.0
        self._outgoing: deque[bytes] = deque()
        self._sent_frames = 0
        self._send_times: list[float] = []
        self._frame_sent = asyncio.Condition()
        self._caller: list[tuple[float, bytes]] = []  # (sent at, PCM) per frame
        self._bot: list[_Chunk] = []
        self._bot_arrived = asyncio.Condition()
        self._tasks: list[asyncio.Task] = []
        self._sequence = 0

    # --- Connection -----------------------------------------------------------------------------

    async def __aenter__(self) -> PhoneCall:
        await self.connect()
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.hangup()

    async def connect(self, *, timeout: float = 10.0) -> None:
        """Open the websocket and send ``connected`` and ``start``, as Twilio does."""
        self._ws = await asyncio.wait_for(connect(self.url, max_size=None), timeout)
        self._t0 = time.monotonic()
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        parameters = {"from_number": self.from_number, "to_number": self.to_number}
        parameters.update(self.custom_parameters)
        await self._send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                    "customParameters": parameters,
                },
            }
        )
        self._tasks = [
            asyncio.create_task(self._pace_media()),
            asyncio.create_task(self._receive()),
        ]

    async def hangup(self) -> None:
        """Send ``stop`` and close, as Twilio does when the caller hangs up."""
        if self._ws is not None and not self.closed.is_set():
            try:
                await self._send(
                    {
                        "event": "stop",
                        "streamSid": self.stream_sid,
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                    }
                )
                await self._ws.close()
            except ConnectionClosed:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.closed.set()

    async def send_raw(self, data: str | bytes) -> None:
        """Send anything on the websocket (for bad-input tests)."""
        assert self._ws is not None
        await self._ws.send(data)

    def now(self) -> float:
        """Seconds since the call connected."""
        return time.monotonic() - self._t0

    # --- The caller speaks -----------------------------------------------------------------------

    async def say(self, pcm: bytes, sample_rate: int) -> float:
        """Play an utterance in real time and return when its last voiced sample was sent.

        Args:
            pcm: 16-bit mono PCM.
            sample_rate: Its sample rate.

        Returns:
            Seconds from the call's start to the end of the caller's speech.
        """
        audio = resample(pcm, sample_rate, RATE)
        audio += b"\x00" * ((-len(audio)) % (FRAME_BYTES * 2))
        voiced_end = last_voiced_end(audio, RATE) or len(audio) / 2 / RATE
        frames = [
            pcm_to_ulaw(audio[i : i + FRAME_BYTES * 2])
            for i in range(0, len(audio), FRAME_BYTES * 2)
        ]
        async with self._frame_sent:
            first_index = self._sent_frames + len(self._outgoing)
            self._outgoing.extend(frames)
            last_index = first_index + len(frames)
            await self._frame_sent.wait_for(
                lambda: self._sent_frames >= last_index or self.closed.is_set()
            )
        # A frame is sent once its 20 ms have been "spoken", so the last voiced sample was
        # spoken at its frame's send time minus what of that frame follows the sample.
        last_voiced = first_index + min(len(frames) - 1, int(voiced_end / FRAME_SECS - 1e-9))
        frame_end = (last_voiced - first_index + 1) * FRAME_SECS
        return self._send_times[last_voiced] - (frame_end - voiced_end)

    async def _pace_media(self) -> None:
        assert self._ws is not None
        next_at = time.monotonic()
        try:
            while True:
                next_at += FRAME_SECS
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                frame = self._outgoing.popleft() if self._outgoing else SILENT_FRAME
                self._sequence += 1
                await self._send(
                    {
                        "event": "media",
                        "sequenceNumber": str(self._sequence),
                        "streamSid": self.stream_sid,
                        "media": {
                            "track": "inbound",
                            "chunk": str(self._sent_frames + 1),
                            "timestamp": str(self._sent_frames * 20),
                            "payload": base64.b64encode(frame).decode(),
                        },
                    }
                )
                self._send_times.append(self.now())
                self._caller.append((self._send_times[-1], ulaw_to_pcm(frame)))
                async with self._frame_sent:
                    self._sent_frames += 1
                    self._frame_sent.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self._frame_sent:
                self._frame_sent.notify_all()

    # --- The bot speaks --------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                at = self.now()
                try:
                    message = json.loads(raw)
                except (json.JSONDecodeError, TypeError):
                    logger.warning(f"PhoneCall: bot sent non-JSON ({len(raw)} bytes)")
                    continue
                event = message.get("event")
                if event == "media":
                    pcm = ulaw_to_pcm(base64.b64decode(message["media"]["payload"]))
                    async with self._bot_arrived:
                        self._bot.append(_Chunk.arrived(at, pcm))
                        self._bot_arrived.notify_all()
                    continue
                self.events.append((at, message))
                if event == "mark":
                    # Twilio echoes a mark once the audio before it has played.
                    await self._send(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": message.get("mark")}
                    )
                async with self._bot_arrived:
                    self._bot_arrived.notify_all()
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd else None
        else:
            self.close_code = self._ws.close_code
        finally:
            self.closed.set()
            async with self._bot_arrived:
                self._bot_arrived.notify_all()

    def _voiced_starts(self, after: float) -> list[tuple[float, float]]:
        """(start, end) of every bot chunk after ``after`` that holds non-silent audio."""
        return [c.voiced for c in self._bot if c.at >= after and c.voiced is not None]

    def clears_between(self, start: float, end: float) -> list[float]:
        """Times of the ``clear`` messages the bot sent between ``start`` and ``end``."""
        return [at for at, m in self.events if m.get("event") == "clear" and start <= at <= end]

    async def wait_for_bot_speech(
        self, *, after: float | None = None, timeout: float = 20.0, quiet: float = 1.0
    ) -> BotSpeech:
        """Wait for the bot to start speaking after ``after``, then for it to fall quiet.

        Args:
            after: Seconds from the call's start; usually the end of the caller's speech.
            timeout: How long to wait for the first non-silent bot audio.
            quiet: Silence that ends the stretch of speech.

        Raises:
            TimeoutError: The bot said nothing in time.
        """
        since = after or 0.0
        deadline = time.monotonic() + timeout
        async with self._bot_arrived:
            while not self._voiced_starts(since):
                if self.closed.is_set():
                    raise TimeoutError("the call closed before the bot spoke")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the bot did not speak within {timeout:.1f}s")
                try:
                    await asyncio.wait_for(self._bot_arrived.wait(), remaining)
                except TimeoutError:
                    pass
        start = self._voiced_starts(since)[0][0]
        while not self.closed.is_set():
            spans = self._voiced_starts(since)
            last_end = spans[-1][1]
            if self.clears_between(start, self.now()) or self.now() - last_end >= quiet:
                break
            await asyncio.sleep(0.05)
        spans = self._voiced_starts(since)
        end = spans[-1][1]
        audio = b"".join(c.pcm for c in self._bot if start - FRAME_SECS * 4 <= c.at <= end)
        return BotSpeech(
            start=start,
            end=end,
            audio=audio,
            latency=None if after is None else start - after,
            cleared=bool(self.clears_between(start, end + quiet)),
        )

    def bot_audio_after(self, at: float) -> bytes:
        """The bot's non-silent audio that arrived after ``at`` (16-bit PCM, 8 kHz)."""
        return b"".join(c.pcm for c in self._bot if c.at > at and c.voiced is not None)

    # --- Recording -----------------------------------------------------------------------------

    def recording(self) -> bytes:
        """The call as a two-channel 8 kHz WAV: the caller left, the bot right.

        Each 20 ms frame sits where it happened: a caller frame when it was sent (as it is
        sent once its 20 ms have been spoken, it ends there), a bot frame when it arrived. So
        latencies can be measured again from the recording alone, as a check of ``say`` and
        ``wait_for_bot_speech`` (``mindbot.bench.latencies_from_recording``).
        """
        caller_at = [(max(0, int((at - FRAME_SECS) * RATE)), pcm) for at, pcm in self._caller]
        bot_at = [(int(chunk.at * RATE), chunk.pcm) for chunk in self._bot]
        length = max((start + len(pcm) // 2 for start, pcm in caller_at + bot_at), default=0)
        stereo = np.zeros((length, 2), dtype=np.int16)
        for channel, placed in ((0, caller_at), (1, bot_at)):
            for start, pcm in placed:
                samples = np.frombuffer(pcm, dtype=np.int16)
                stereo[start : start + len(samples), channel] = samples
        return wav_bytes(stereo.tobytes(), RATE, channels=2)

    def save_recording(self, path: str | Path) -> None:
        """Write ``recording()`` to ``path``."""
        Path(path).write_bytes(self.recording())

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps(message))
