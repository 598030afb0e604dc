"""Offline speech for the call simulator: the caller's voice (Piper), the bot's words (Whisper).

Utterances are synthesized with the packaged Piper voice and cached as WAV files, so a test
suite synthesizes each sentence once; nothing is downloaded. The bot's replies are transcribed
with the packaged Whisper tiny.en model. Both models are loaded once per process.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from pathlib import Path

import numpy as np

from mindbot.audio import read_wav, resample, wav_bytes

_lock = threading.Lock()


@functools.cache
def _piper_voice():
    from piper import PiperVoice

    from mindbot.services import _packaged_piper_dir

    return PiperVoice.load(_packaged_piper_dir() / "en_US-joe-medium.onnx")


@functools.cache
def _whisper():
    from faster_whisper import WhisperModel

    from mindbot.services import _packaged_whisper_path

    return WhisperModel(str(_packaged_whisper_path()), device="cpu", compute_type="int8")


def synthesize(
    text: str, *, cache_dir: Path | None = None, length_scale: float = 1.0
) -> tuple[bytes, int]:
    """Speak ``text`` with the offline Piper voice.

    Args:
        text: What the caller says.
        cache_dir: Where synthesized WAV files are kept between runs (no cache if ``None``).
        length_scale: Above 1 speaks slower, below 1 faster.

    Returns:
        16-bit mono PCM and its sample rate.
    """
    from piper import SynthesisConfig

    key = hashlib.sha1(f"joe|{length_scale}|{text}".encode()).hexdigest()[:16]
    cached = cache_dir / f"{key}.wav" if cache_dir else None
    if cached and cached.exists():
        return read_wav(cached)
    voice = _piper_voice()
    with _lock:
        chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)))
    pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    rate = voice.config.sample_rate
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(wav_bytes(pcm, rate))
        tmp.replace(cached)
    return pcm, rate


def transcribe(pcm: bytes, sample_rate: int) -> str:
    """Transcribe 16-bit mono PCM with the offline Whisper tiny.en model."""
    audio = resample(pcm, sample_rate, 16000)
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    if len(samples) == 0:
        return ""
    segments, _ = _whisper().transcribe(samples, language="en", beam_size=1)
    return " ".join(segment.text.strip() for segment in segments).strip()
