"""The TTS's silence before the bot's first word is dropped; its pauses between sentences are
not, and nothing is reordered or lost."""

import numpy as np
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSTextFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from processors.silence_trimmer import LeadingSilenceTrimmer

RATE = 16000


def silence(secs: float) -> bytes:
    return np.zeros(int(secs * RATE), dtype=np.int16).tobytes()


def tone(secs: float) -> bytes:
    t = np.arange(int(secs * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16).tobytes()


def audio(pcm: bytes) -> TTSAudioRawFrame:
    return TTSAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1)


def played(frames) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame))


def leading_secs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16)
    return int(np.argmax(np.abs(samples) > 100)) / RATE


async def test_the_silence_before_the_first_word_is_dropped_and_nothing_else():
    trimmer = LeadingSilenceTrimmer()
    first = silence(0.06) + silence(0.02) + tone(0.1)
    frames = [
        TTSStartedFrame(),
        audio(silence(0.06)),
        audio(silence(0.02) + tone(0.1)),
        TTSTextFrame("Hello.", aggregated_by="sentence"),
        audio(silence(0.15) + tone(0.1)),  # the pause before the next sentence stays
    ]
    down, _ = await run_test(trimmer, frames_to_send=frames)

    out = played(down)
    assert 0.005 <= leading_secs(out) <= 0.015  # the pre-roll before the first sound
    assert abs(trimmer.trimmed_secs - 0.07) < 0.005
    dropped = round(trimmer.trimmed_secs * RATE) * 2
    assert len(out) == len(first) + len(silence(0.15) + tone(0.1)) - dropped
    kinds = [type(f).__name__ for f in down]
    assert kinds.index("TTSTextFrame") > kinds.index("TTSAudioRawFrame")  # order kept
    assert out.endswith(silence(0.15) + tone(0.1))


async def test_each_turn_is_trimmed_once_the_bot_has_stopped_or_been_interrupted():
    trimmer = LeadingSilenceTrimmer()
    # System frames overtake queued audio, so each turn's audio is let through first.
    frames = [
        audio(silence(0.05) + tone(0.1)),
        SleepFrame(0.05),
        BotStoppedSpeakingFrame(),
        audio(silence(0.04) + tone(0.1)),
        SleepFrame(0.05),
        InterruptionFrame(),
        audio(silence(0.03) + tone(0.1)),
        audio(silence(0.03) + tone(0.1)),  # the same turn: kept whole
    ]
    await run_test(trimmer, frames_to_send=frames)
    # Each turn loses its silence less the 10 ms pre-roll (and the onset window's few ms).
    assert 0.07 <= trimmer.trimmed_secs <= 0.09


async def test_audio_without_a_clear_onset_is_played_as_it_came():
    trimmer = LeadingSilenceTrimmer(max_trim_secs=0.2)
    quiet = (50 * np.ones(int(0.3 * RATE), dtype=np.int16)).tobytes()  # below the -40 dB gate
    down, _ = await run_test(
        trimmer, frames_to_send=[audio(quiet[: len(quiet) // 2]), audio(quiet[len(quiet) // 2 :])]
    )
    assert played(down) == quiet and trimmer.trimmed_secs == 0
