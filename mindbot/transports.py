"""Building the transports MindBot speaks: Twilio Media Streams, SmallWebRTC and Daily.

Each transport gets the ``audio`` settings' input noise filter (a fresh one per session: a
filter holds one stream's state) and output volume. The phone and WebRTC transports also hold
the bot's audio while the caller may be talking over it (``mindbot.barge_in``); Daily's does
not (its output is not tested here).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
from fastapi import WebSocket
from loguru import logger
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.frames.frames import (
    FilterControlFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)

from mindbot.audio_settings import AudioSettings
from mindbot.barge_in import BargeInPause
from mindbot.config import Settings
from mindbot.errors import ProtocolError
from mindbot.session import Call

HEADROOM = 2
"""How much quieter the input filter gets the audio (then the output is made as much louder)."""
TWILIO_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
HANDSHAKE_TIMEOUT_SECS = 10.0


class GuardedTwilioSerializer(TwilioFrameSerializer):
    """Pipecat's Twilio serializer, strict about what it accepts from the wire.

    A message that is not a JSON object, or is larger than ``max_message_bytes``, breaks the
    Media Streams protocol: it raises ``ProtocolError``, which ends the transport's receive
    loop, so the session ends and the connection closes. Events Twilio may add later are
    logged and ignored. After Twilio's ``stop`` (the caller hung up; Twilio closes the socket
    next, which ends the session) the bot never asks Twilio's API to hang up a call that is
    already over.

    Args:
        max_message_bytes: The largest message accepted.
        *args: Passed to ``TwilioFrameSerializer``.
        **kwargs: Passed to ``TwilioFrameSerializer``.
    """

    def __init__(self, *args, max_message_bytes: int = 64 * 1024, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_message_bytes = max_message_bytes

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Check one message, then let Pipecat turn it into a frame."""
        if len(data) > self._max_message_bytes:
            raise ProtocolError(f"message of {len(data)} bytes exceeds {self._max_message_bytes}")
        try:
            message = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(f"message of {len(data)} bytes is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise ProtocolError("message is not a JSON object with an 'event'")
        event = message["event"]
        if event not in TWILIO_EVENTS:
            logger.warning(f"{self}: ignoring unknown Twilio event {event[:40]!r}")
            return None
        if event == "stop":
            self._hangup_attempted = True  # the caller hung up: nothing to hang up
            return None
        return await super().deserialize(data)


class GuardedAudioFilter(BaseAudioFilter):
    """An input audio filter that can never stop the transport's audio.

    The input transport calls its filter on every frame, in the task that carries the caller's
    audio: an exception there ends that task and the bot goes deaf. This wrapper hands the
    wrapped filter whole 16-bit samples only (a stray odd byte waits for the next frame), and
    if the filter raises anyway, logs it once and passes audio through unfiltered from then on.

    It also gives the filter 6 dB of headroom: RNNoise can return samples louder than it was
    given, and pyrnnoise casts them to 16 bits without clipping, so loud speech came back with
    wrapped-around clicks (480 in 4 s of clipped speech). Halving the input and doubling the
    output, clipped, leaves none.

    Args:
        inner: The filter to guard (e.g. Pipecat's ``RNNoiseFilter``).
    """

    def __init__(self, inner: BaseAudioFilter):
        self._inner = inner
        self._carry = b""
        self._failed = False

    @property
    def inner(self) -> BaseAudioFilter:
        """The guarded filter."""
        return self._inner

    async def start(self, sample_rate: int):
        """Start the guarded filter at the transport's input rate."""
        try:
            await self._inner.start(sample_rate)
        except Exception as e:
            self._fail("start", e)

    async def stop(self):
        """Stop the guarded filter."""
        try:
            await self._inner.stop()
        except Exception as e:
            self._fail("stop", e)

    async def process_frame(self, frame: FilterControlFrame):
        """Pass a control frame (e.g. ``FilterEnableFrame``) to the guarded filter."""
        try:
            await self._inner.process_frame(frame)
        except Exception as e:
            self._fail("process_frame", e)

    async def filter(self, audio: bytes) -> bytes:
        """Filter whole samples of ``audio``; on failure, return it as it came."""
        audio = self._carry + audio
        cut = len(audio) - len(audio) % 2
        audio, self._carry = audio[:cut], audio[cut:]
        if self._failed or not audio:
            return audio
        try:
            quieter = (np.frombuffer(audio, dtype=np.int16) // HEADROOM).astype(np.int16)
            filtered = await self._inner.filter(quieter.tobytes())
            louder = np.frombuffer(filtered, dtype=np.int16).astype(np.int32) * HEADROOM
            return np.clip(louder, -32768, 32767).astype(np.int16).tobytes()
        except Exception as e:
            self._fail("filter", e)
            return audio

    def _fail(self, step: str, error: Exception) -> None:
        if not self._failed:
            logger.warning(
                f"{self._inner.__class__.__name__}.{step} failed "
                f"({error.__class__.__name__}: {error}); input audio is no longer filtered"
            )
        self._failed = True


def audio_in_filter(audio: AudioSettings) -> BaseAudioFilter | None:
    """A new input filter for one session's transport, as ``audio.noise_filter`` says.

    Args:
        audio: The audio settings.
    """
    if audio.noise_filter == "rnnoise":
        from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

        return GuardedAudioFilter(RNNoiseFilter())
    return None


async def accept_twilio_call(websocket: WebSocket) -> Call | None:
    """Read the Media Streams handshake (``connected``, ``start``) of an accepted websocket.

    Returns:
        The call, or ``None`` (logged) when the peer is not a well-formed Twilio stream.
    """
    try:
        kind, data = await asyncio.wait_for(
            parse_telephony_websocket(websocket), HANDSHAKE_TIMEOUT_SECS
        )
    except Exception as e:
        logger.warning(f"Twilio handshake failed: {e.__class__.__name__}")
        return None
    if kind != "twilio" or not data.get("stream_id") or not data.get("call_id"):
        logger.warning(f"Not a Twilio media stream (detected {kind!r})")
        return None
    body = data.get("body") or {}
    if not isinstance(body, dict):
        body = {}
    call = Call(
        transport="twilio",
        from_number=_str_or_none(body.get("from_number")),
        to_number=_str_or_none(body.get("to_number")),
        user_id=_str_or_none(body.get("user_id")),
        call_sid=data["call_id"],
        body=body,
    )
    call.body["stream_sid"] = data["stream_id"]
    return call


class PausingOutput:
    """Mixed into a Pipecat output transport: holds the bot's audio while ``_pause`` says so.

    For transports that pace their audio in real time (Pipecat's websocket output sends a
    chunk, then waits its length; SmallWebRTC's track plays 10 ms at a time), so a held chunk
    silences the other side within one chunk. An interruption drops it with the queued audio.
    """

    def __init__(self, pause: BargeInPause, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pause = pause

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Write a chunk once the pause lets it through; a dropped chunk is not written."""
        if not await self._pause.admit(frame):
            return False
        return await super().write_audio_frame(frame)  # type: ignore[misc]

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Pipecat's handling; after an interruption has emptied the queue, the pause drops
        the chunk it holds."""
        await super().process_frame(frame, direction)  # type: ignore[misc]
        if isinstance(frame, InterruptionFrame):
            self._pause.interrupted()


class PausableWebsocketOutputTransport(PausingOutput, FastAPIWebsocketOutputTransport):
    """Pipecat's websocket output with a barge-in pause."""


class PausableWebsocketTransport(FastAPIWebsocketTransport):
    """Pipecat's FastAPI websocket transport whose output holds the bot's audio on a barge-in
    pause (``mindbot.barge_in``).

    Args:
        websocket: The accepted websocket.
        params: The transport's parameters.
        pause: The session's pause, also fed by its VAD (``MindBot.context_aggregators``).
    """

    def __init__(
        self, websocket: WebSocket, params: FastAPIWebsocketParams, *, pause: BargeInPause
    ):
        super().__init__(websocket, params=params)
        self.barge_in_pause = pause
        self._output = PausableWebsocketOutputTransport(
            pause, self, self._client, self._params, name=self._output_name
        )


class PausableSmallWebRTCOutputTransport(PausingOutput, SmallWebRTCOutputTransport):
    """Pipecat's SmallWebRTC output with a barge-in pause."""


class PausableSmallWebRTCTransport(SmallWebRTCTransport):
    """Pipecat's SmallWebRTC transport whose output holds the bot's audio on a barge-in pause.

    Args:
        connection: The negotiated ``SmallWebRTCConnection``.
        params: The transport's parameters.
        pause: The session's pause, also fed by its VAD.
    """

    def __init__(
        self, connection: SmallWebRTCConnection, params: TransportParams, *, pause: BargeInPause
    ):
        super().__init__(webrtc_connection=connection, params=params)
        self.barge_in_pause = pause

    def output(self) -> SmallWebRTCOutputTransport:
        """The output transport, holding the bot's audio on a barge-in pause."""
        if not self._output:
            self._output = PausableSmallWebRTCOutputTransport(
                self.barge_in_pause, self._client, self._params, name=self._output_name
            )
        return self._output


def twilio_transport(websocket: WebSocket, call: Call, settings: Settings) -> BaseTransport:
    """A Twilio Media Streams transport over an accepted websocket.

    The caller hears 8 kHz mu-law; the pipeline input runs at 16 kHz for Whisper. With Twilio
    credentials the bot hangs up through Twilio's REST API when the session ends; without, it
    closes the websocket cleanly. With ``audio.barge_in_pause`` the transport is a
    ``PausableWebsocketTransport``.
    """
    hang_up = settings.twilio_can_hang_up
    serializer = GuardedTwilioSerializer(
        stream_sid=call.body["stream_sid"],
        call_sid=call.call_sid,
        account_sid=settings.twilio_account_sid if hang_up else None,
        auth_token=(
            settings.twilio_auth_token.get_secret_value()
            if hang_up and settings.twilio_auth_token
            else None
        ),
        base_url=settings.twilio_api_base_url,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=hang_up),
        max_message_bytes=settings.max_ws_message_bytes,
    )
    params = FastAPIWebsocketParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        add_wav_header=False,
        serializer=serializer,
        audio_in_filter=audio_in_filter(settings.audio),
        audio_out_volume=settings.audio.output_volume,
    )
    if settings.audio.barge_in_pause:
        return PausableWebsocketTransport(websocket, params, pause=BargeInPause())
    return FastAPIWebsocketTransport(websocket, params=params)


def webrtc_transport(connection, audio: AudioSettings | None = None) -> BaseTransport:
    """A SmallWebRTC transport on a negotiated peer connection.

    With ``audio.barge_in_pause`` it is a ``PausableSmallWebRTCTransport``.

    Args:
        connection: The negotiated ``SmallWebRTCConnection``.
        audio: The audio settings (noise filter, output volume, barge-in pause); default: the
            defaults.
    """
    audio = audio or AudioSettings()
    params = TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_filter=audio_in_filter(audio),
        audio_out_volume=audio.output_volume,
    )
    if audio.barge_in_pause:
        return PausableSmallWebRTCTransport(connection, params, pause=BargeInPause())
    return SmallWebRTCTransport(webrtc_connection=connection, params=params)


def daily_transport(
    room_url: str, token: str | None, audio: AudioSettings | None = None
) -> BaseTransport:
    """A Daily transport that joins ``room_url`` as "MindBot".

    Args:
        room_url: The room to join.
        token: A meeting token, if the room needs one.
        audio: The audio settings (noise filter, output volume); default: the defaults.
    """
    from pipecat.transports.daily.transport import DailyParams, DailyTransport

    audio = audio or AudioSettings()
    return DailyTransport(
        room_url,
        token,
        "MindBot",
        params=DailyParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_filter=audio_in_filter(audio),
            audio_out_volume=audio.output_volume,
        ),
    )


def _str_or_none(value) -> str | None:
    return value if isinstance(value, str) and value else None
