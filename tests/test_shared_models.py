"""Heavy models are loaded once per process and shared; per-stream state is not."""

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.tests.utils import run_test

from mindbot.audio import resample
from mindbot.local_services import (
    SharedPiperTTSService,
    SharedSileroVADAnalyzer,
    SharedWhisperSTTService,
)
from mindbot.services import SharedModels
from mindbot.speech import synthesize

from conftest import make_settings


def test_each_model_is_loaded_once():
    models = SharedModels(make_settings())
    assert models.whisper() is models.whisper()
    assert models.piper() is models.piper()
    assert models.silero_session() is models.silero_session()
    assert models.smart_turn_session() is models.smart_turn_session()


def test_two_vad_analyzers_share_the_session_but_not_their_state(voice_cache):
    models = SharedModels(make_settings())
    speaking = SharedSileroVADAnalyzer(session=models.silero_session())
    silent = SharedSileroVADAnalyzer(session=models.silero_session())
    for analyzer in (speaking, silent):
        analyzer.set_sample_rate(16000)
    assert speaking._model.session is silent._model.session
    assert speaking._model is not silent._model

    pcm, rate = synthesize("Hello there, how are you doing today?", cache_dir=voice_cache)
    speech = resample(pcm, rate, 16000)
    window = 512 * 2
    confidences = [
        speaking.voice_confidence(speech[i : i + window])
        for i in range(0, len(speech) - window, window)
    ]
    quiet = [silent.voice_confidence(b"\x00" * window) for _ in range(len(confidences))]
    assert max(confidences) > 0.8
    assert max(quiet) < 0.1


async def test_shared_piper_speaks_and_shared_whisper_hears(voice_cache):
    models = SharedModels(make_settings())
    down, _ = await run_test(
        SharedPiperTTSService(voice=models.piper(), voice_name="en_US-joe-medium"),
        frames_to_send=[_speak("The quick brown fox jumps over the lazy dog.")],
        expected_down_frames=None,
    )
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    rate = next(f.sample_rate for f in down if isinstance(f, TTSAudioRawFrame))
    assert np.abs(np.frombuffer(audio, dtype=np.int16)).max() > 1000

    stt = SharedWhisperSTTService(model=models.whisper())
    frames = [
        InputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
        for chunk in _chunks(resample(audio, rate, 16000))
    ]
    texts = []
    async for frame in stt.run_stt(b"".join(f.audio for f in frames)):
        if isinstance(frame, TranscriptionFrame):
            texts.append(frame.text.lower())
    assert "brown fox" in " ".join(texts)


def _speak(text):
    from pipecat.frames.frames import TTSSpeakFrame

    return TTSSpeakFrame(text)


def _chunks(pcm: bytes, size: int = 640):
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
