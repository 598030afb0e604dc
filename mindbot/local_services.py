"""Pipecat's offline services, built around models that are loaded once per process.

Pipecat's ``WhisperSTTService``, ``PiperTTSService``, ``SileroVADAnalyzer`` and
``LocalSmartTurnAnalyzerV3`` each load their model in ``__init__``, which would make every new
call pay up to half a second of loading. These
subclasses take an already loaded model instead and keep everything else of Pipecat's classes
(the transcription, synthesis and turn logic). faster-whisper models, Piper voices and ONNX
Runtime sessions are safe to use from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.types import NOT_GIVEN, NotGiven

from mindbot.barge_in import SpeechOnset


class GreedyWhisper:
    """A faster-whisper model that decodes greedily, without timestamps.

    Pipecat calls ``transcribe`` with faster-whisper's defaults (beam search of 5). A voice
    turn is one short utterance, where greedy decoding gives the same words in about half the
    time, and that time sits on the critical path between the caller's last word and the reply.

    Args:
        model: A loaded ``faster_whisper.WhisperModel``.
    """

    def __init__(self, model: Any):
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def transcribe(self, audio, **kwargs):
        """``WhisperModel.transcribe`` with greedy decoding and no timestamps."""
        kwargs.setdefault("beam_size", 1)
        kwargs.setdefault("without_timestamps", True)
        kwargs.setdefault("condition_on_previous_text", False)
        return self._model.transcribe(audio, **kwargs)


class SharedWhisperSTTService(WhisperSTTService):
    """Whisper STT on a shared, already loaded faster-whisper model.

    Args:
        model: A loaded ``faster_whisper.WhisperModel`` (or ``GreedyWhisper``).
        **kwargs: Passed to ``WhisperSTTService`` (e.g. ``settings``).
    """

    def __init__(self, *, model: Any, **kwargs):
        self._shared_model = model
        settings = kwargs.pop("settings", None) or WhisperSTTService.Settings(
            model="shared", language=Language.EN
        )
        # tiny.en transcribes a turn in well under a second on two cores.
        kwargs.setdefault("ttfs_p99_latency", 1.0)
        super().__init__(device="cpu", settings=settings, **kwargs)

    def _load(self):
        self._model = self._shared_model


class SharedPiperTTSService(PiperTTSService):
    """Piper TTS on a shared, already loaded ``PiperVoice``.

    The speaking rate can change during a call:
    ``TTSUpdateSettingsFrame(delta=SharedPiperTTSService.Settings(speed=0.9))`` applies from the
    next sentence synthesized (Piper's length scale, which stretches the pauses too).

    Args:
        voice: A loaded ``piper.PiperVoice``.
        voice_name: The voice's name, for settings and logs.
        speed: Speaking rate as a multiple of the voice's own (``None``: its own).
        **kwargs: Passed to ``TTSService``.
    """

    @dataclass
    class Settings(PiperTTSService.Settings):
        """Piper's settings and the speaking rate.

        Parameters:
            speed: Speaking rate as a multiple of the voice's own (``None``: its own).
        """

        speed: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)

    _settings: Settings

    def __init__(self, *, voice: Any, voice_name: str, speed: float | None = None, **kwargs):
        # PiperTTSService.__init__ only resolves and loads the voice file; skip it.
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=self.Settings(model=None, voice=voice_name, language=None, speed=speed),
            **kwargs,
        )
        self._shared_voice = voice
        self._voice = _VoiceAtSpeed.of(voice, speed)

    async def _update_settings(self, delta: PiperTTSService.Settings) -> dict[str, Any]:
        # PiperTTSService's own only warns that nothing changes at runtime; speed does here.
        changed = await TTSService._update_settings(self, delta)
        if "speed" in changed:
            self._voice = _VoiceAtSpeed.of(self._shared_voice, self._settings.speed)
        self._warn_unhandled_updated_settings(changed.keys() - {"speed"})
        return changed


class _VoiceAtSpeed:
    """A shared ``PiperVoice`` that speaks at another rate (Piper's ``length_scale``).

    Pipecat's Piper service calls ``voice.synthesize(text)`` and reads ``voice.config``; this
    passes both through, adding the session's synthesis settings. Slower speech also pauses
    longer after each sentence (``pause_after``), as a calm speaker does; Piper has no pause
    control of its own.
    """

    @classmethod
    def of(cls, voice: Any, speed: Any) -> Any:
        """``voice`` at ``speed`` (clamped to 0.5..2), or ``voice`` itself at its own rate."""
        if not isinstance(speed, (int, float)) or not 0 < speed < float("inf") or speed == 1:
            return voice
        return cls(voice, min(max(float(speed), 0.5), 2.0))

    def __init__(self, voice: Any, speed: float):
        from piper import SynthesisConfig

        self._voice = voice
        self.config = voice.config
        self.speed = speed
        self._syn_config = SynthesisConfig(length_scale=(voice.config.length_scale or 1.0) / speed)

    def synthesize(self, text: str, syn_config: Any = None) -> Any:
        yield from self._voice.synthesize(text, syn_config=syn_config or self._syn_config)
        if pause := pause_after(self.speed):
            samples = int(pause * self.config.sample_rate)
            yield _Silence(b"\x00\x00" * samples)


@dataclass(frozen=True)
class _Silence:
    """A pause, shaped like the ``AudioChunk`` Piper yields (what Pipecat reads of it)."""

    audio_int16_bytes: bytes


MAX_PAUSE_SECS = 0.35


def pause_after(speed: float) -> float:
    """Seconds of silence after each sentence at ``speed``: none at normal speed or faster,
    0.25 s at 0.85 (the calm style), at most ``MAX_PAUSE_SECS``."""
    if speed >= 1.0:
        return 0.0
    return round(min(MAX_PAUSE_SECS, 0.25 * (1.0 - speed) / 0.15), 3)


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """Silero VAD on a shared ONNX Runtime session, with this analyzer's own model state.

    Silero is recurrent: its state belongs to one audio stream, so each session gets its own
    ``SileroOnnxModel`` state around the one shared session.

    Args:
        session: The ``onnxruntime.InferenceSession`` of Pipecat's bundled Silero model.
        **kwargs: Passed to ``VADAnalyzer`` (``sample_rate``, ``params``).
    """

    def __init__(self, *, session: Any, **kwargs):
        # SileroVADAnalyzer.__init__ only loads the model file; skip it.
        VADAnalyzer.__init__(self, **kwargs)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = session
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._onset: SpeechOnset | None = None
        self._onset_listener: Callable[[bool], None] | None = None

    def listen_for_onset(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener`` after each analyzed frame with whether the caller's last few
        windows sounded like a voice (``mindbot.barge_in.SpeechOnset``), long before the VAD
        declares speech: the barge-in pause's input."""
        self._onset = SpeechOnset()
        self._onset_listener = listener

    def voice_confidence(self, buffer) -> float:
        """Silero's confidence for one window, also fed to the onset detector, if any."""
        confidence = super().voice_confidence(buffer)
        if self._onset is not None:
            self._onset.update(float(np.ravel(confidence)[0]), buffer)
        return confidence

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Pipecat's analysis; then the onset listener hears what the windows sounded like."""
        state = await super().analyze_audio(buffer)
        if self._onset is not None and self._onset_listener is not None:
            self._onset_listener(self._onset.voice)
        return state


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Smart-turn v3 end-of-turn analysis on a shared ONNX Runtime session.

    Args:
        session: The ``onnxruntime.InferenceSession`` of the smart-turn model.
        **kwargs: Passed to ``BaseSmartTurn`` (``sample_rate``, ``params``).
    """

    def __init__(self, *, session: Any, **kwargs):
        # LocalSmartTurnAnalyzerV3.__init__ only builds the session; skip it.
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = False
        self._session = session
