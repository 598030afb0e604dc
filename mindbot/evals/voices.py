"""The eval harness's own speech services, on MindBot's packaged offline models.

The harness speaks the caller's turns with the Piper voice and, where a scenario asserts on the
bot's actual audio (``event: response``), transcribes the bot with Whisper. Scenario files name
them as Pipecat eval factories, so the same files also run under Pipecat's own runner::

    user:
      modality: audio
      speech: {factory: mindbot.evals.voices.caller_voice, voice: en_US-joe-medium}
    judge:
      modality: audio
      transcription: {factory: mindbot.evals.voices.bot_transcriber}

``mindbot eval suite`` builds the same services around the running MindBot's already loaded
models instead (``voice=`` and ``model=``), so nothing is loaded twice.
"""

from __future__ import annotations

import functools
from typing import Any

from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

CALLER_VOICE = f"{__name__}.caller_voice"
"""The dotted path scenario files give as ``user.speech.factory``."""

BOT_TRANSCRIBER = f"{__name__}.bot_transcriber"
"""The dotted path scenario files give as ``judge.transcription.factory``."""

DEFAULT_VOICE = "en_US-joe-medium"


def caller_voice(config: dict[str, Any], *, voice: Any = None) -> TTSService:
    """The caller's voice: Piper, speaking the scenario's user turns.

    Args:
        config: The scenario's ``user.speech`` mapping (``voice`` names the Piper voice;
            ``speed`` is a multiple of its own rate).
        voice: An already loaded ``piper.PiperVoice`` (default: the packaged voice).
    """
    from mindbot.local_services import SharedPiperTTSService

    speed = config.get("speed")
    return SharedPiperTTSService(
        voice=voice if voice is not None else _packaged_voice(),
        voice_name=str(config.get("voice") or DEFAULT_VOICE),
        speed=float(speed) if speed is not None else None,
    )


def bot_transcriber(config: dict[str, Any], *, model: Any = None) -> STTService:
    """The ear on the bot's audio: Whisper, for the ``response`` events.

    Args:
        config: The scenario's ``judge.transcription`` mapping (nothing in it is needed).
        model: An already loaded faster-whisper model (default: the packaged tiny.en).
    """
    from mindbot.local_services import SharedWhisperSTTService

    return SharedWhisperSTTService(model=model if model is not None else _packaged_whisper())


@functools.cache
def _packaged_voice():
    from piper import PiperVoice

    from mindbot.services import _packaged_piper_dir

    return PiperVoice.load(_packaged_piper_dir() / f"{DEFAULT_VOICE}.onnx")


@functools.cache
def _packaged_whisper():
    from faster_whisper import WhisperModel

    from mindbot.local_services import GreedyWhisper
    from mindbot.services import _packaged_whisper_path

    model = WhisperModel(str(_packaged_whisper_path()), device="cpu", compute_type="int8")
    return GreedyWhisper(model)
