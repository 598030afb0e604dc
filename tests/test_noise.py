"""Background noise: speech at 10 dB SNR is still understood, with and without RNNoise.

The noise is made here, seeded: pink and brown noise (a room, traffic, a fan) with a café's
babble under it (other synthesized sentences, overlapping). The filter is the one a transport
gets from the settings (Pipecat's ``RNNoiseFilter``, guarded), fed 20 ms frames at the
pipeline's 16 kHz input rate, as the input transport feeds it.

Run with ``-s`` to see the word error rates.
"""

import numpy as np
import pytest
from jiwer import wer
from pipecat.audio.filters.base_audio_filter import BaseAudioFilter
from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from mindbot.audio import resample
from mindbot.audio_settings import AudioSettings
from mindbot.speech import synthesize, transcribe
from mindbot.transports import GuardedAudioFilter, audio_in_filter, webrtc_transport

RATE = 16000
FRAME_BYTES = RATE // 50 * 2
SNR_DB = 10.0
SPEECH_RMS = 0.05 * 32768  # about -26 dBFS, so speech plus noise never clips

SENTENCES = [
    "Could you book a table for four people at the Italian restaurant on Friday evening?",
    "Remind me to water the plants and call my sister after lunch tomorrow.",
]
BABBLE = [
    "The train to the airport leaves every twenty minutes from platform nine.",
    "She said the meeting had been moved to the small room upstairs.",
    "Two coffees and a slice of lemon cake, please.",
]


def speech(text: str, voice_cache) -> np.ndarray:
    pcm, rate = synthesize(text, cache_dir=voice_cache)
    samples = np.frombuffer(resample(pcm, rate, RATE), dtype=np.int16).astype(np.float64)
    return samples * (SPEECH_RMS / np.sqrt(np.mean(samples**2)))


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown), unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.fft.rfftfreq(n)
    frequencies[0] = frequencies[1]
    noise = np.fft.irfft(spectrum / frequencies ** (exponent / 2), n)
    return noise / np.std(noise)


def babble(n: int, rng: np.random.Generator, voices: list[np.ndarray]) -> np.ndarray:
    mix = np.zeros(n)
    for voice in voices:
        looped = np.tile(voice, n // len(voice) + 2)
        start = rng.integers(0, len(voice))
        mix += looped[start : start + n]
    return mix / np.std(mix)


def at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``noise`` scaled so that signal power over noise power is exactly ``snr_db``."""
    return noise * np.sqrt(np.mean(signal**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))


def pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16).tobytes()


async def run_filter(audio_filter: BaseAudioFilter, audio: bytes, frame_bytes=FRAME_BYTES) -> bytes:
    await audio_filter.start(RATE)
    out = [
        await audio_filter.filter(audio[i : i + frame_bytes])
        for i in range(0, len(audio), frame_bytes)
    ]
    await audio_filter.stop()
    return b"".join(out)


def rnnoise() -> BaseAudioFilter:
    audio_filter = audio_in_filter(AudioSettings(noise_filter="rnnoise"))
    assert isinstance(audio_filter, GuardedAudioFilter)
    assert isinstance(audio_filter.inner, RNNoiseFilter)
    return audio_filter


def word_error_rate(reference: str, heard: str) -> float:
    def words(text: str) -> str:
        return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())

    return wer(words(reference), words(heard) or "<nothing>")


@pytest.fixture(scope="module")
def speech_and_noise(voice_cache):
    """(reference text, clean samples, unscaled noise) per sentence."""
    rng = np.random.default_rng(7)
    voices = [speech(text, voice_cache) for text in BABBLE]
    pause = np.zeros(RATE // 2)
    pairs = []
    for text in SENTENCES:
        clean = np.concatenate([pause, speech(text, voice_cache), pause])
        n = len(clean)
        hum = colored_noise(n, rng, 1.0) + colored_noise(n, rng, 2.0)
        pairs.append((text, clean, hum + 0.3 * babble(n, rng, voices)))
    return pairs


async def error_rates(speech_and_noise, snr_db: float) -> dict[str, float]:
    """Mean word error rates of the clean, noisy and noisy-then-filtered sentences."""
    rates: dict[str, list[float]] = {"clean": [], "noisy": [], "noisy, RNNoise": []}
    for text, clean, noise in speech_and_noise:
        noise = at_snr(clean, noise, snr_db)
        assert 10 * np.log10(np.mean(clean**2) / np.mean(noise**2)) == pytest.approx(snr_db)
        noisy = clean + noise
        assert np.abs(noisy).max() < 32767  # no clipping: the SNR is what it says
        filtered = await run_filter(rnnoise(), pcm(noisy))
        rates["clean"].append(word_error_rate(text, transcribe(pcm(clean), RATE)))
        rates["noisy"].append(word_error_rate(text, transcribe(pcm(noisy), RATE)))
        rates["noisy, RNNoise"].append(word_error_rate(text, transcribe(filtered, RATE)))
    return {name: round(float(np.mean(values)), 3) for name, values in rates.items()}


async def test_speech_at_10_db_snr_is_still_transcribed_with_and_without_rnnoise(
    speech_and_noise,
):
    means = await error_rates(speech_and_noise, SNR_DB)
    print(f"\nWER at {SNR_DB:g} dB SNR (Whisper tiny.en, {len(SENTENCES)} sentences): {means}")
    assert means["noisy"] <= 0.25
    assert means["noisy, RNNoise"] <= 0.25
    # For comparison only: where the noise is as loud as the speech.
    print(f"WER at 0 dB SNR, for comparison: {await error_rates(speech_and_noise, 0.0)}")


async def test_rnnoise_removes_steady_noise_without_speech():
    rng = np.random.default_rng(3)
    noise = (colored_noise(RATE * 3, rng, 1.0) + rng.standard_normal(RATE * 3)) * 500
    filtered = np.frombuffer(await run_filter(rnnoise(), pcm(noise)), dtype=np.int16)
    after = filtered[RATE:].astype(np.float64)  # past the filter's first second of adapting
    reduction = 20 * np.log10(np.std(noise) / max(np.std(after), 1.0))
    print(f"\nRNNoise on steady noise alone: {reduction:.1f} dB quieter")
    assert reduction > 20


def test_each_session_gets_its_own_filter_and_none_unless_asked():
    assert audio_in_filter(AudioSettings()) is None
    first, second = rnnoise(), rnnoise()
    assert first is not second and first.inner is not second.inner


def test_a_transport_carries_the_filter_and_the_volume():
    audio = AudioSettings(noise_filter="rnnoise", output_volume=0.5)
    params = webrtc_transport(SmallWebRTCConnection(), audio)._params
    assert isinstance(params.audio_in_filter, GuardedAudioFilter)
    assert params.audio_out_volume == 0.5
    assert webrtc_transport(SmallWebRTCConnection())._params.audio_in_filter is None


@pytest.mark.parametrize(
    "audio",
    [
        b"",
        b"\x01",
        b"\x00" * 641,
        b"\x00" * FRAME_BYTES * 20,
        np.tile(np.array([32767, -32768], dtype=np.int16), RATE // 2).tobytes(),
        np.full(RATE, 32767, dtype=np.int16).tobytes(),
    ],
    ids=["empty", "one byte", "odd length", "silence", "full-scale square", "clipped DC"],
)
async def test_odd_audio_comes_out_as_whole_samples(audio):
    filtered = await run_filter(rnnoise(), audio, frame_bytes=333)
    assert len(filtered) % 2 == 0
    assert len(filtered) <= len(audio) + FRAME_BYTES


async def test_odd_sample_rates_do_not_break_it():
    for rate in (8000, 11025, 44100, 48000):
        audio_filter = rnnoise()
        await audio_filter.start(rate)
        out = await audio_filter.filter(np.zeros(rate // 10, dtype=np.int16).tobytes())
        await audio_filter.stop()
        assert len(out) % 2 == 0


async def test_loud_clipped_speech_comes_out_without_wrapped_around_clicks(voice_cache):
    samples = speech(SENTENCES[0], voice_cache)
    loud = np.clip(samples * (3 * 32767 / np.abs(samples).max()), -32768, 32767)
    filtered = np.frombuffer(await run_filter(rnnoise(), pcm(loud)), dtype=np.int16)
    jumps = np.abs(np.diff(filtered.astype(np.int32)))
    assert np.abs(np.diff(loud)).max() < 40000
    assert jumps.max() < 40000  # a sample flipping from near +32767 to near -32768
    assert "italian restaurant" in transcribe(filtered.tobytes(), RATE).lower()


class Broken(BaseAudioFilter):
    """A filter that silences its first frame and fails on its second."""

    def __init__(self):
        self.calls = 0

    async def start(self, sample_rate: int):
        pass

    async def stop(self):
        pass

    async def process_frame(self, frame):
        pass

    async def filter(self, audio: bytes) -> bytes:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return bytes(len(audio))


async def test_a_failing_filter_lets_the_audio_through_from_then_on(warnings_logged):
    guarded = GuardedAudioFilter(Broken())
    chunks = [bytes([2 * i + 2, 1]) * 4 for i in range(4)]
    out = [await guarded.filter(chunk) for chunk in chunks]
    assert out == [bytes(8), chunks[1], chunks[2], chunks[3]]
    assert len([line for line in warnings_logged if "Broken.filter failed" in line[1]]) == 1
