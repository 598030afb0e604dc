"""Voice style: how the bot sounds (speed, volume, emotion, voice, language), changed between
utterances, never in the middle of one.

    style = VoiceStyleController(settings_type=type(tts).Settings, speed=1.0)
    Pipeline([..., llm, style, tts, style.output_volume(), transport.output(), assistant])

``VoiceStyleFrame``s come from emotion detection (``source="emotion"``), voice commands
(``"command"``), language switching (``"language"``) and stored preferences
(``"preference"``). Commands and preferences set the base speed and volume (``speed``/``volume``
absolute, ``speed_step``/``volume_step`` relative to the base); emotion only nudges around the
base: from ``source="emotion"``, ``speed`` and ``volume`` are multiples of the base. The result
is kept within Cartesia's ranges (speed 0.6–1.5, volume 0.5–2.0).

Where the TTS has Cartesia's ``generation_config``, every change sends the whole
``GenerationConfig`` (a settings delta replaces the nested object whole, so sending only the
emotion would drop the volume). Where it has a ``speed`` setting (MindBot's Piper service), the
speed goes there. Volume without a TTS control is applied by ``output_volume()``, a small
processor after the TTS that scales the audio.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings

from processors.frames import VoiceStyleFrame

SPEED_RANGE = (0.6, 1.5)
VOLUME_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class VoiceStyle:
    """How the bot sounds.

    Parameters:
        speed: Speaking rate, a multiple of normal.
        volume: Volume, a multiple of normal.
        emotion: A Cartesia emotion name, or ``None`` for the voice's own.
        voice: The TTS voice id, or ``None`` for the service's.
        language: ISO 639-1 code, or ``None`` for the service's.
    """

    speed: float = 1.0
    volume: float = 1.0
    emotion: str | None = None
    voice: str | None = None
    language: str | None = None


class VoiceStyleController(FrameProcessor):
    """Applies voice style requests at the start of the bot's next utterance.

    Consumes: ``VoiceStyleFrame`` (downstream). Emits: ``TTSUpdateSettingsFrame`` downstream,
    right before the next utterance starts (``LLMFullResponseStartFrame``, ``TTSSpeakFrame``
    or ``TTSStartedFrame``) while the bot is silent, when the style changed. Passes on: every
    other frame, unchanged and in order. Place it right before the TTS.

    Args:
        settings_type: The TTS service's ``Settings`` class: which fields it can change.
        speed: The base speaking rate (the persona's or the caller's preference).
        volume: The base volume.
        emotion: The persona's own emotion (``None``: the voice's).
        emotional: Whether emotion may change the voice (``source="emotion"`` requests).
    """

    def __init__(
        self,
        *,
        settings_type: type[TTSSettings],
        speed: float | None = None,
        volume: float | None = None,
        emotion: str | None = None,
        emotional: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        names = {f.name for f in dataclasses.fields(settings_type)}
        self._settings_type = settings_type
        self._cartesia = "generation_config" in names
        self._tts_speed = "speed" in names
        self._emotional = emotional
        self._base = VoiceStyle(
            speed=_clamp(_number(speed, 1.0), SPEED_RANGE),
            volume=_clamp(_number(volume, 1.0), VOLUME_RANGE),
            emotion=emotion,
        )
        self._nudge = VoiceStyle()  # emotion's: speed and volume as multiples of the base
        # What the TTS was built with; a persona's emotion goes out with the first utterance.
        self._applied = replace(self._wanted(), emotion=None)
        self._busy: set[str] = set()

    @property
    def style(self) -> VoiceStyle:
        """The style of the current (or last) utterance."""
        return self._applied

    @property
    def emotional(self) -> bool:
        """Whether emotion may change the voice; turning it off drops emotion's nudges."""
        return self._emotional

    @emotional.setter
    def emotional(self, on: bool) -> None:
        self._emotional = on
        if not on:
            self._nudge = VoiceStyle()

    @property
    def volume_in_tts(self) -> bool:
        """Whether the TTS applies the volume itself (Cartesia)."""
        return self._cartesia

    def output_volume(self) -> FrameProcessor:
        """The processor to place right after the TTS: scales the audio where it has no volume."""
        return _OutputVolume(self)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Keep requests until the bot is silent and about to speak again."""
        await super().process_frame(frame, direction)
        if isinstance(frame, VoiceStyleFrame) and direction == FrameDirection.DOWNSTREAM:
            self._request(frame)
            return
        if direction == FrameDirection.DOWNSTREAM and isinstance(
            frame, (LLMFullResponseStartFrame, TTSSpeakFrame, TTSStartedFrame)
        ):
            if not self._busy:
                await self._apply()
        self._track(frame)
        await self.push_frame(frame, direction)

    def _track(self, frame: Frame) -> None:
        if isinstance(frame, LLMFullResponseStartFrame):
            self._busy.add("response")
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._busy.discard("response")
        elif isinstance(frame, TTSStartedFrame):
            self._busy.add("tts")
        elif isinstance(frame, TTSStoppedFrame):
            self._busy.discard("tts")
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._busy.add("speaking")
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._busy.discard("speaking")
        elif isinstance(frame, InterruptionFrame):
            self._busy -= {"response", "tts"}

    def _request(self, frame: VoiceStyleFrame) -> None:
        if frame.source == "emotion":
            if not self._emotional:
                return
            self._nudge = VoiceStyle(
                speed=_number(frame.speed, 1.0),
                volume=_number(frame.volume, 1.0),
                emotion=None if frame.emotion in (None, "", "neutral") else frame.emotion,
            )
        else:
            base = self._base
            speed = _number(frame.speed, base.speed) * _number(frame.speed_step, 1.0)
            volume = _number(frame.volume, base.volume) * _number(frame.volume_step, 1.0)
            emotion = base.emotion
            if frame.emotion is not None:
                emotion = None if frame.emotion in ("", "neutral") else frame.emotion
            self._base = VoiceStyle(
                speed=_clamp(speed, SPEED_RANGE),
                volume=_clamp(volume, VOLUME_RANGE),
                emotion=emotion,
                voice=frame.voice or base.voice,
                language=frame.language or base.language,
            )
        logger.debug(f"{self}: {frame.source} asks for {self._wanted()}")

    def _wanted(self) -> VoiceStyle:
        base, nudge = self._base, self._nudge
        return VoiceStyle(
            speed=round(_clamp(base.speed * nudge.speed, SPEED_RANGE), 3),
            volume=round(_clamp(base.volume * nudge.volume, VOLUME_RANGE), 3),
            emotion=nudge.emotion or base.emotion,
            voice=base.voice,
            language=base.language,
        )

    async def _apply(self) -> None:
        wanted, applied = self._wanted(), self._applied
        if wanted == applied:
            return
        delta: dict[str, Any] = {}
        if self._cartesia and (wanted.speed, wanted.volume, wanted.emotion) != (
            applied.speed,
            applied.volume,
            applied.emotion,
        ):
            from pipecat.services.cartesia.tts import GenerationConfig

            delta["generation_config"] = GenerationConfig(
                speed=wanted.speed, volume=wanted.volume, emotion=wanted.emotion
            )
        elif self._tts_speed and wanted.speed != applied.speed:
            delta["speed"] = wanted.speed
        if wanted.voice != applied.voice and wanted.voice:
            delta["voice"] = wanted.voice
        if wanted.language != applied.language and wanted.language:
            delta["language"] = wanted.language
        self._applied = wanted
        if delta:
            logger.debug(f"{self}: the next utterance sounds {wanted}")
            await self.push_frame(TTSUpdateSettingsFrame(delta=self._settings_type(**delta)))


class _OutputVolume(FrameProcessor):
    """Scales the TTS audio by the controller's volume, where the TTS has no volume of its own.

    Consumes: nothing. Passes on: every frame in order, ``TTSAudioRawFrame`` audio scaled by the
    volume in force when its utterance started (``TTSStartedFrame``). Place it after the TTS.
    """

    def __init__(self, controller: VoiceStyleController):
        super().__init__()
        self._controller = controller
        self._gain = 1.0 if controller.volume_in_tts else controller.style.volume

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Latch the volume at each utterance's start and scale its audio."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSStartedFrame) and not self._controller.volume_in_tts:
            self._gain = self._controller.style.volume
        elif isinstance(frame, TTSAudioRawFrame) and self._gain != 1.0 and frame.audio:
            frame.audio = scale(frame.audio, self._gain)
        await self.push_frame(frame, direction)


def scale(pcm: bytes, gain: float) -> bytes:
    """16-bit PCM times ``gain``, clipped to full scale (an odd trailing byte is dropped)."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype=np.int16).astype(np.float32)
    return np.clip(samples * gain, -32768, 32767).astype(np.int16).tobytes()


def _number(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value) if value > 0 else default
    return default


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])
