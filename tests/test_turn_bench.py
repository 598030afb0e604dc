"""The turn-taking benchmarks: barge-in stop time and false cut-offs (``mindbot.turn_bench``).

The measurements are checked on made-up recordings where the answer is known, then each
benchmark runs end to end for a call or two per system on the cloud profile (the real
stand-ins, real websockets, MindBot's assistant pipeline and bare Pipecat).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mindbot.audio import wav_bytes
from mindbot.errors import ConfigError
from mindbot.turn_bench import (
    BargeIn,
    BargeInResult,
    CutOff,
    CutOffResult,
    NotMeasured,
    audio_overrides,
    format_bargein_summary,
    format_cutoff_summary,
    judge_cutoff,
    measure_bargein,
    paused_speech,
    run_bargein_bench,
    run_cutoff_bench,
)
from pipelines.assistant import run

from conftest import make_settings

RATE = 8000


def tone(secs: float, freq: float = 220.0) -> np.ndarray:
    """A loud tone: speech, as far as the benchmarks' level detection goes."""
    t = np.arange(int(secs * RATE)) / RATE
    return (4000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def call_recording(length: float, caller=(), bot=()) -> bytes:
    """A two-channel call: ``(start, end)`` spans of sound for the caller (left) and bot."""
    stereo = np.zeros((int(length * RATE), 2), dtype=np.int16)
    for channel, spans in ((0, caller), (1, bot)):
        for start, end in spans:
            sound = tone(end - start, 220.0 + 110 * channel)
            stereo[int(start * RATE) : int(start * RATE) + len(sound), channel] = sound
    return wav_bytes(stereo.tobytes(), RATE, channels=2)


# --- Barge-in: the measurement ------------------------------------------------------------------


def test_a_bot_that_stops_after_the_clear_is_silent_when_its_audio_ends():
    # The bot answers from 1.0 s; the caller talks over it from 3.0 s; the clear arrives at
    # 3.2 s but audio keeps coming until 3.5 s; the bot answers again from 5.5 s.
    recording = call_recording(7.0, caller=[(0.2, 0.8), (3.0, 4.5)], bot=[(1.0, 3.5), (5.5, 7)])
    b = measure_bargein(recording, [0.5, 3.2, 3.4], after=1.0, system="mindbot")
    assert b.system == "mindbot"
    assert b.clear == pytest.approx(0.2, abs=0.011)  # the clear at 0.5 s came before the reply
    assert b.audio == pytest.approx(0.5, abs=0.011)
    assert b.silent == pytest.approx(0.5, abs=0.011)


def test_audio_ending_with_the_clear_makes_the_clear_the_silence():
    # The last chunk arrives just before the clear: the clear dropped it with the buffer.
    recording = call_recording(6.0, caller=[(3.0, 4.5)], bot=[(1.0, 3.23)])
    b = measure_bargein(recording, [3.2], after=1.0)
    assert b.silent == pytest.approx(b.clear) and b.clear == pytest.approx(0.2, abs=0.011)
    assert b.audio == pytest.approx(0.23, abs=0.011)


def test_without_a_clear_the_bot_is_never_silent_and_a_quiet_bot_is_not_measured():
    recording = call_recording(6.0, caller=[(3.0, 4.5)], bot=[(1.0, 3.3)])
    b = measure_bargein(recording, [], after=1.0)
    assert b.clear is None and b.silent is None and b.audio == pytest.approx(0.3, abs=0.011)
    with pytest.raises(NotMeasured, match="not speaking"):
        measure_bargein(call_recording(6.0, caller=[(3.0, 4.5)], bot=[(1.0, 2.0)]), [], after=1.0)
    with pytest.raises(NotMeasured, match="did not interrupt"):
        measure_bargein(call_recording(6.0, bot=[(1.0, 5.0)]), [3.2], after=1.0)


def test_the_barge_in_summary_gives_percentiles_ratios_and_the_target():
    result = BargeInResult(profile="cloud stand-ins")
    for n in range(1, 5):
        result.barge_ins.append(BargeIn("mindbot", clear=0.1 * n, audio=0.1 * n, silent=0.1 * n))
        result.barge_ins.append(BargeIn("bare", clear=0.2 * n, audio=0.2 * n, silent=0.2 * n))
    result.barge_ins.append(BargeIn("bare", clear=None, audio=0.9, silent=None))
    result.failures.append({"system": "mindbot", "why": "the bot was not speaking"})
    summary = result.summary()
    m, b = summary["systems"]["mindbot"], summary["systems"]["bare"]
    assert (m["calls"], m["failures"], b["calls"], b["no_clear"]) == (4, 1, 5, 1)
    assert (m["silent_ms_p50"], m["silent_ms_p95"], b["silent_ms_p50"]) == (200.0, 400.0, 400.0)
    assert summary["ratios"]["silent_ms_p50"] == 0.5
    table = format_bargein_summary(summary)
    assert "bot silent for the caller p50" in table and "0.50" in table
    assert "within 250 ms" in table and "calls without a clear: MindBot 0, bare 1" in table


# --- False cut-offs: the judgement --------------------------------------------------------------


def sentence(pause: float = 0.8):
    """Two 1 s halves (with 0.1 s of silence at their edges) joined by ``pause``."""
    edge = np.zeros(int(0.1 * RATE), dtype=np.int16)
    half = np.concatenate([edge, tone(1.0), edge]).tobytes()
    return paused_speech(3, half, half, pause)


def test_a_paused_sentence_knows_where_its_halves_are():
    speech = sentence(0.8)
    assert speech.first_end == pytest.approx(1.1, abs=0.011)
    assert speech.second_start == pytest.approx(1.2 + 0.8 + 0.1, abs=0.011)
    assert speech.second_end == pytest.approx(3.1, abs=0.011)
    assert speech.gap == pytest.approx(1.0, abs=0.02)
    assert len(speech.pcm) == 2 * int((1.2 + 0.8 + 1.2) * RATE)
    with pytest.raises(ValueError, match="no speech"):
        paused_speech(0, bytes(1600), bytes(1600), 0.5)


def test_a_reply_during_the_pause_is_a_cut_off_and_one_after_the_sentence_is_not():
    speech = sentence(0.8)  # said from 2.0 s: first half ends 3.1 s, second half ends 5.1 s
    # The bot answers at 3.8 s, in the pause, and the LLM was asked at 3.4 s.
    early = call_recording(8.0, caller=[(2.1, 3.1), (4.1, 5.1)], bot=[(0.1, 1.0), (3.8, 4.3)])
    cut = judge_cutoff(early, [0.5, 3.4], speech, began=2.0, system="bare")
    assert (cut.system, cut.utterance, cut.pause, cut.cut_off) == ("bare", 3, 0.8, True)
    assert cut.bot_audio == pytest.approx(3.8 - 5.1, abs=0.011)
    assert cut.llm_request == pytest.approx(3.4 - 5.1, abs=0.001)

    # The bot answers at 6.0 s, after the sentence: no cut-off (the greeting is before it).
    late = call_recording(8.0, caller=[(2.1, 3.1), (4.1, 5.1)], bot=[(0.1, 1.0), (6.0, 7.0)])
    fine = judge_cutoff(late, [0.5, 5.5], speech, began=2.0)
    assert not fine.cut_off
    assert fine.bot_audio == pytest.approx(0.9, abs=0.011)
    assert fine.llm_request == pytest.approx(0.4, abs=0.001)

    # The first half taken as a turn of its own is a cut-off even when the caller's second
    # half interrupted the answer before any of it was heard: the next request's context
    # holds the sentence as two user messages.
    asked = judge_cutoff(late, [3.5, 5.5], speech, began=2.0, user_turns=[1, 2])
    assert asked.cut_off and asked.split and asked.bot_audio > 0

    # A request in the pause whose answer was withdrawn (a speculation) is not: the sentence
    # reached the LLM as one user message.
    held = judge_cutoff(late, [3.5, 5.5], speech, began=2.0, user_turns=[1, 1])
    assert not held.cut_off and not held.split
    assert held.llm_request == pytest.approx(3.5 - 5.1, abs=0.001)


def test_the_cutoff_summary_gives_rates_per_pause_and_the_verdict():
    result = CutOffResult(profile="cloud stand-ins")
    for pause, mindbot_cut, bare_cut in (
        (0.6, True, True),
        (0.6, False, True),
        (1.2, False, False),
    ):
        result.cutoffs.append(CutOff("mindbot", 0, pause, pause, mindbot_cut, 0.5, 0.1))
        result.cutoffs.append(
            CutOff("bare", 0, pause, pause, bare_cut, -0.5 if bare_cut else 0.5, -1.0)
        )
    summary = result.summary()
    m, b = summary["systems"]["mindbot"], summary["systems"]["bare"]
    assert m["by_pause"]["0.6"] == {"sentences": 2, "cut_offs": 1, "rate": 0.5}
    assert b["by_pause"]["0.6"]["rate"] == 1.0 and b["by_pause"]["1.2"]["rate"] == 0.0
    assert (m["rate"], b["rate"], m["split_only"], b["split_only"]) == (0.333, 0.667, 1, 0)
    assert summary["not_worse_than_bare"] is True
    table = format_cutoff_summary(summary)
    assert "50% (1/2)" in table and "100% (2/2)" in table
    assert "MindBot not worse than bare Pipecat: yes" in table


# --- Settings for a rerun -----------------------------------------------------------------------


def test_set_pairs_become_audio_settings_in_any_spelling():
    overrides = audio_overrides(
        [
            "vad_stop_secs=0.1",
            "audio.smart_turn=false",
            "MINDBOT_AUDIO__BARGE_IN=min_words",
            'vocabulary=["Harbor Lane"]',
        ]
    )
    assert overrides == {
        "vad_stop_secs": 0.1,
        "smart_turn": False,
        "barge_in": "min_words",
        "vocabulary": ["Harbor Lane"],
    }
    audio = make_settings(audio=overrides).audio
    assert (audio.vad_stop_secs, audio.smart_turn, audio.barge_in) == (0.1, False, "min_words")
    with pytest.raises(ConfigError, match="vad_stop_secs"):
        audio_overrides(["vad_stop=0.1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        audio_overrides(["vad_stop_secs"])


# --- End to end, on the cloud profile -----------------------------------------------------------


async def test_a_barge_in_run_times_both_systems_after_the_interruption(voice_cache, tmp_path):
    result = await run_bargein_bench(
        run,
        calls=1,
        warmup_calls=0,
        talk_secs=0.6,
        settle_secs=0.5,
        make_settings=make_settings,
        cache_dir=voice_cache,
    )
    print("\n" + format_bargein_summary(result.summary()), result.failures)
    assert result.profile.startswith("cloud stand-ins")
    assert result.audio_settings["barge_in"] == "always"
    assert sorted(b.system for b in result.barge_ins) == ["bare", "mindbot"], result.failures
    for b in result.barge_ins:
        # The clear and the silence come after the caller started talking, and the bot's
        # answer (the long story) stopped well before it would have ended.
        assert b.clear is not None and 0 < b.clear < 2.0
        assert 0 < b.audio < 2.0
    (mindbot,) = [b for b in result.barge_ins if b.system == "mindbot"]
    (bare,) = [b for b in result.barge_ins if b.system == "bare"]
    # MindBot's barge-in pause stopped the bot's audio before Pipecat's VAD declared the
    # caller's speech and the clear went out; bare Pipecat talks on until its clear.
    assert mindbot.audio < mindbot.clear and mindbot.silent == mindbot.audio
    assert bare.silent is not None and bare.silent >= bare.clear
    path = tmp_path / "bargein.json"
    from mindbot.bench import record_json

    record_json(path, **result.as_dict())
    written = json.loads(path.read_text())
    assert written["summary"]["systems"]["mindbot"]["calls"] == 1
    assert {"machine", "commit", "date", "barge_ins", "audio_settings"} <= set(written)


async def test_a_cutoff_run_judges_each_sentence_on_both_systems(voice_cache):
    result = await run_cutoff_bench(
        run,
        pauses=(0.9,),
        utterances=1,
        warmup_calls=0,
        audio={"vad_stop_secs": 0.3},
        make_settings=make_settings,
        cache_dir=voice_cache,
    )
    print("\n" + format_cutoff_summary(result.summary()), result.cutoffs, result.failures)
    assert result.audio_settings["vad_stop_secs"] == 0.3
    assert result.utterances == [
        "I would like to book a table for ... four people tomorrow evening"
    ]
    assert sorted(c.system for c in result.cutoffs) == ["bare", "mindbot"], result.failures
    for c in result.cutoffs:
        assert (c.utterance, c.pause) == (0, 0.9)
        assert c.gap >= 0.9  # the pause, plus Piper's own silence at the halves' edges
        # Each system asked the LLM and answered (during the pause or after the sentence),
        # and the verdict follows from those times.
        assert c.llm_request is not None and c.bot_audio is not None
        assert c.cut_off == (c.split or c.bot_audio < 0)
    summary = result.summary()
    assert set(summary["systems"]["mindbot"]["by_pause"]) == {"0.9"}
