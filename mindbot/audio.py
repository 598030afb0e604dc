"""Small audio helpers for the call simulator: G.711 mu-law, resampling, loudness, WAV files."""

from __future__ import annotations

import io
import warnings
import wave
from pathlib import Path

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # G.711 exactly as Twilio encodes it; still in Python 3.11's stdlib.

SILENCE_RMS = 300.0
"""RMS (16-bit scale) under which a 10 ms window counts as silence."""


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """16-bit PCM → G.711 mu-law, one byte per sample."""
    return audioop.lin2ulaw(pcm, 2)


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    """G.711 mu-law → 16-bit PCM."""
    return audioop.ulaw2lin(ulaw, 2)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample 16-bit mono PCM."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(samples, from_rate, to_rate).astype(np.int16).tobytes()


def window_rms(pcm: bytes, sample_rate: int, window_ms: int = 10) -> np.ndarray:
    """The RMS of each ``window_ms`` window of 16-bit mono PCM."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    size = max(1, sample_rate * window_ms // 1000)
    count = len(samples) // size
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    windows = samples[: count * size].reshape(count, size)
    return np.sqrt(np.mean(windows**2, axis=1))


def first_voiced_offset(
    pcm: bytes, sample_rate: int, threshold: float = SILENCE_RMS
) -> float | None:
    """Seconds from the start of ``pcm`` to its first non-silent 10 ms window, or ``None``."""
    loud = np.nonzero(window_rms(pcm, sample_rate) > threshold)[0]
    return None if len(loud) == 0 else float(loud[0]) * 0.01


def last_voiced_end(pcm: bytes, sample_rate: int, threshold: float = SILENCE_RMS) -> float | None:
    """Seconds from the start of ``pcm`` to the end of its last non-silent 10 ms window."""
    loud = np.nonzero(window_rms(pcm, sample_rate) > threshold)[0]
    return None if len(loud) == 0 else float(loud[-1] + 1) * 0.01


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read a 16-bit mono WAV file.

    Raises:
        ValueError: The file is not 16-bit mono PCM.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """16-bit PCM (interleaved when ``channels`` > 1) as a WAV file's bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()
