"""The false barge-in benchmark (``mindbot.falsebargein_bench``).

The judgement is checked on made-up recordings where the answer is known, the sounds against
their documented length and level, the summary on made-up outcomes; then one short run goes
end to end on the cloud profile (the real stand-ins, real websockets, MindBot's assistant
pipeline and bare Pipecat), one sound and one call per system.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mindbot.audio import SILENCE_RMS, wav_bytes, window_rms
from mindbot.bench_table import headlines
from mindbot.errors import ConfigError
from mindbot.falsebargein_bench import (
    ONSET_RMS,
    SOUNDS,
    SYNTHESIZED,
    TV_ATTENUATION_DB,
    FalseBargeInResult,
    SoundOutcome,
    format_falsebargein_summary,
    judge_sound,
    load_sounds,
    parse_sounds,
    run_falsebargein_bench,
    synthesize_sound,
)
from mindbot.turn_bench import NotMeasured
from pipelines.assistant import run

from conftest import make_settings

RATE = 8000


def tone(secs: float, freq: float, amplitude: float = 4000.0) -> np.ndarray:
    t = np.arange(int(secs * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def call_recording(length: float, caller=(), bot=(), caller_amplitude: float = 4000.0) -> bytes:
    """A two-channel call: ``(start, end)`` spans of sound for the caller (left) and the bot."""
    stereo = np.zeros((int(length * RATE), 2), dtype=np.int16)
    for channel, spans, amplitude in ((0, caller, caller_amplitude), (1, bot, 4000.0)):
        for start, end in spans:
            sound = tone(end - start, 220.0 + 110 * channel, amplitude)
            stereo[int(start * RATE) : int(start * RATE) + len(sound), channel] = sound
    return wav_bytes(stereo.tobytes(), RATE, channels=2)


# --- The judgement ------------------------------------------------------------------------------

# Every call below: the question from 0.2 s to 0.8 s, the bot's answer from 1.0 s, the sound
# from 3.0 s to 3.25 s.
QUESTION = (0.2, 0.8)
SOUND = (3.0, 3.25)


def test_a_clear_after_the_sound_is_a_false_barge_in():
    recording = call_recording(6.0, caller=[QUESTION, SOUND], bot=[(1.0, 3.3)])
    o = judge_sound(recording, [0.5, 3.2], [0.9], after=1.0, sound="cough", system="mindbot")
    assert (o.system, o.sound, o.interrupted) == ("mindbot", "cough", True)
    assert o.clear == pytest.approx(0.2, abs=0.011)  # the clear at 0.5 s was before the answer
    assert o.audio_end == pytest.approx(0.3, abs=0.011)
    assert o.llm_request is None and not o.turn  # the request at 0.9 s was the question's


def test_bot_audio_stopping_soon_after_the_sound_is_a_false_barge_in_even_without_a_clear():
    recording = call_recording(6.0, caller=[QUESTION, SOUND], bot=[(1.0, 3.6)])
    o = judge_sound(recording, [], [0.9, 3.9], after=1.0)
    assert o.interrupted and o.clear is None
    assert o.audio_end == pytest.approx(0.6, abs=0.011)
    assert o.turn and o.llm_request == pytest.approx(0.9, abs=0.011)


def test_a_bot_talking_on_through_the_sound_was_not_interrupted():
    # It talks until the caller hangs up, or stops 1.5 s after the onset (the answer's end,
    # long after the sound), or goes quiet for less than the gap that ends a stretch.
    for bot in ([(1.0, 6.0)], [(1.0, 4.5)], [(1.0, 3.1), (3.3, 6.0)]):
        o = judge_sound(call_recording(6.0, caller=[QUESTION, SOUND], bot=bot), [], [], after=1.0)
        assert not o.interrupted, bot
        assert o.audio_end >= 1.5
    # Audio running up to the end of the recording is no stop, however soon it comes.
    ends_with_call = call_recording(3.5, caller=[QUESTION, SOUND], bot=[(1.0, 3.5)])
    assert not judge_sound(ends_with_call, [], [], after=1.0).interrupted


def test_a_bot_that_stops_and_goes_on_without_a_clear_paused_and_was_not_interrupted():
    paused = call_recording(6.0, caller=[QUESTION, SOUND], bot=[(1.0, 3.2), (3.8, 6.0)])
    o = judge_sound(paused, [], [0.9], after=1.0)
    assert not o.interrupted and o.pause == pytest.approx(0.6, abs=0.011)
    # The same gap with a clear in it, or with a new answer asked for before the bot speaks
    # again, or with the bot back only after RESUME_WINDOW_SECS, is an interruption.
    assert judge_sound(paused, [3.3], [0.9], after=1.0).interrupted
    o = judge_sound(paused, [], [0.9, 3.5], after=1.0)
    assert o.interrupted and o.pause is None
    late = call_recording(7.0, caller=[QUESTION, SOUND], bot=[(1.0, 3.2), (5.5, 7.0)])
    assert judge_sound(late, [], [0.9], after=1.0).interrupted


def test_a_quiet_sound_has_its_onset_where_it_becomes_audible():
    # A breath-level sound (RMS ~70, under the speech threshold but over ONSET_RMS).
    assert ONSET_RMS < 70 < SILENCE_RMS
    recording = call_recording(6.0, caller=[SOUND], bot=[(1.0, 3.45)], caller_amplitude=100.0)
    o = judge_sound(recording, [3.3], [], after=1.0)
    assert o.clear == pytest.approx(0.3, abs=0.011)
    assert o.audio_end == pytest.approx(0.45, abs=0.011)


def test_a_call_where_the_bot_was_silent_or_the_caller_made_no_sound_is_not_judged():
    silent_bot = call_recording(6.0, caller=[QUESTION, SOUND], bot=[(1.0, 2.0)])
    with pytest.raises(NotMeasured, match="not speaking"):
        judge_sound(silent_bot, [3.1], [], after=1.0)
    no_sound = call_recording(6.0, caller=[QUESTION], bot=[(1.0, 6.0)])
    with pytest.raises(NotMeasured, match="no sound"):
        judge_sound(no_sound, [], [], after=1.0)


# --- The sounds ---------------------------------------------------------------------------------

DOCUMENTED = {  # name: (seconds, dBFS RMS), as each docstring says
    "cough": (0.25, -18),
    "double_cough": (0.62, -21),
    "knock": (0.5, -25),
    "breath": (0.6, -38),
    "throat_clear": (0.4, -20),
    "typing": (1.0, -33),
}


def test_each_sound_is_audible_deterministic_and_as_long_and_loud_as_documented():
    assert set(DOCUMENTED) == set(SYNTHESIZED) and SOUNDS == (*SYNTHESIZED, "tv")
    for name, (secs, dbfs) in DOCUMENTED.items():
        sound = synthesize_sound(name)
        assert sound.pcm == synthesize_sound(name).pcm, name
        assert sound.secs == pytest.approx(secs, abs=0.001), name
        assert sound.level_dbfs == pytest.approx(dbfs, abs=0.2), name
        doc = SYNTHESIZED[name].__doc__ or ""
        assert f"{secs:g} s" in doc and f"{dbfs:g} dBFS RMS" in doc, name
        samples = np.frombuffer(sound.pcm, dtype=np.int16)
        assert np.abs(samples).max() < 32767, f"{name} clips"
        # Loud enough in places to pass the speech threshold (what the caller's line carries).
        assert (window_rms(sound.pcm, RATE) > SILENCE_RMS).sum() >= 10, name
        assert sound.onset < 0.05, name
    pcms = {synthesize_sound(name).pcm[:800] for name in SYNTHESIZED}
    assert len(pcms) == len(SYNTHESIZED)  # each its own seed


async def test_the_television_is_the_piper_line_twenty_db_down(voice_cache):
    from mindbot.falsebargein_bench import TV_LINE
    from mindbot.turn_bench import _speech

    (tv,) = await load_sounds(["tv"], voice_cache)
    speech = np.frombuffer(await _speech(TV_LINE, voice_cache), dtype=np.int16)
    quiet = np.frombuffer(tv.pcm, dtype=np.int16)
    assert len(quiet) == len(speech) and 2.2 < tv.secs < 2.8  # Piper's timing varies a little
    ratio = np.sqrt(np.mean(quiet.astype(float) ** 2) / np.mean(speech.astype(float) ** 2))
    assert 20 * np.log10(ratio) == pytest.approx(-TV_ATTENUATION_DB, abs=0.1)
    assert tv.level_dbfs == pytest.approx(-40, abs=1.5)


def test_unknown_sounds_are_refused_with_the_known_names():
    assert parse_sounds(" cough,tv ") == ["cough", "tv"]
    with pytest.raises(ConfigError, match="double_cough"):
        parse_sounds("cough,sneeze")
    with pytest.raises(ConfigError, match="expected names"):
        parse_sounds(",")
    with pytest.raises(ConfigError, match="unknown sound 'tv'"):
        synthesize_sound("tv")  # Piper's, not numpy's: load_sounds makes it


# --- The summary --------------------------------------------------------------------------------


def outcome(system: str, sound: str, interrupted: bool, turn: bool = False) -> SoundOutcome:
    return SoundOutcome(
        system,
        sound,
        interrupted,
        clear=0.3 if interrupted else None,
        audio_end=0.35 if interrupted else 2.0,
        llm_request=0.9 if turn else None,
    )


def test_the_summary_counts_false_barge_ins_per_sound_and_compares_the_systems():
    result = FalseBargeInResult(
        profile="cloud stand-ins",
        overrides={"vad_start_secs": 0.1, "vad_min_volume": 0.3},
        sounds={"cough": {"secs": 0.25, "dbfs": -18.0}, "tv": {"secs": 2.46, "dbfs": -40.0}},
    )
    result.outcomes += [
        outcome("mindbot", "cough", False),
        outcome("mindbot", "cough", True, turn=True),
        outcome("mindbot", "tv", True),
        outcome("mindbot", "tv", True),
        outcome("bare", "cough", False),
        outcome("bare", "cough", False),
        outcome("bare", "tv", True),
    ]
    result.failures.append({"system": "bare", "why": "the bot was not speaking"})
    summary = result.summary()
    m, b = summary["systems"]["mindbot"], summary["systems"]["bare"]
    assert (m["calls"], m["interrupted"], m["rate"], m["turns"]) == (4, 3, 0.75, 1)
    assert (b["calls"], b["interrupted"], b["rate"], b["failures"]) == (3, 1, 0.333, 1)
    assert m["by_sound"] == {
        "cough": {"calls": 2, "interrupted": 1, "rate": 0.5, "paused": 0},
        "tv": {"calls": 2, "interrupted": 2, "rate": 1.0, "paused": 0},
    }
    assert b["by_sound"]["cough"]["rate"] == 0.0
    assert summary["difference"] == pytest.approx(0.417, abs=0.001)
    assert summary["not_worse_than_bare"] is False

    table = format_falsebargein_summary(summary)
    assert "vad_start_secs=0.1, vad_min_volume=0.3" in table
    assert "50% (1/2)" in table and "75% (3/4)" in table and "33% (1/3)" in table
    assert "calls not judged: MindBot 0, bare 1" in table
    assert "no more often than bare Pipecat: NO (difference +42 points)" in table

    # `mindbot bench table` reads the headline row from the JSON as written.
    data = json.loads(json.dumps(result.as_dict()))
    assert data["outcomes"][1]["turn"] is True
    (row,) = headlines({**data, "bench": "falsebargein"})
    assert row == {
        "measure": "false barge-ins on 2 non-speech sounds "
        "(vad_start_secs=0.1, vad_min_volume=0.3)",
        "mindbot": "75% (3/4)",
        "bare": "33% (1/3)",
        "target": "≤ bare",
    }


def test_an_empty_run_has_no_rates_and_no_verdict():
    summary = FalseBargeInResult(profile="offline").summary()
    assert summary["systems"]["mindbot"]["rate"] is None
    assert summary["not_worse_than_bare"] is None and summary["difference"] is None
    table = format_falsebargein_summary(summary)
    assert "MindBot audio settings: defaults" in table and "bare Pipecat: -" in table


# --- The command line ---------------------------------------------------------------------------


def test_the_command_is_registered_without_loading_pipecat():
    from mindbot.cli import build_parser
    from mindbot.falsebargein_bench import _bench_falsebargein

    args = build_parser().parse_args(
        [
            "bench",
            "falsebargein",
            "--calls",
            "1",
            "--sounds",
            "cough",
            "--set",
            "vad_min_volume=0.3",
        ]
    )
    assert args.handler is _bench_falsebargein
    assert (args.calls, args.sounds, args.audio, args.warmup) == (
        1,
        "cough",
        ["vad_min_volume=0.3"],
        1,
    )
    assert build_parser().parse_args(["bench", "falsebargein"]).sounds == ",".join(SOUNDS)
    probe = "import sys; from mindbot.cli import build_parser; build_parser(); "
    probe += "print('pipecat' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


# --- End to end, on the cloud profile -----------------------------------------------------------


async def test_a_short_run_judges_one_sound_on_both_systems(voice_cache, tmp_path):
    result = await run_falsebargein_bench(
        run,
        sounds=["throat_clear"],
        calls=1,
        warmup_calls=0,
        audio={"vad_min_volume": 0.5},
        make_settings=make_settings,
        cache_dir=voice_cache,
    )
    summary = result.summary()
    print("\n" + format_falsebargein_summary(summary), result.outcomes, result.failures)
    assert result.profile.startswith("cloud stand-ins")
    assert result.audio_settings["vad_min_volume"] == 0.5 and result.overrides == {
        "vad_min_volume": 0.5
    }
    assert result.sounds == {"throat_clear": {"secs": 0.4, "dbfs": -20.0}}
    assert sorted(o.system for o in result.outcomes) == ["bare", "mindbot"], result.failures
    for o in result.outcomes:
        assert o.sound == "throat_clear"
        # The bot was talking at the onset and its verdict follows from what was seen.
        assert o.audio_end > 0
        assert o.interrupted == (o.clear is not None or (o.audio_end < 1.0 and o.pause is None))
        assert o.pause is None or (o.clear is None and 0 < o.pause < 2.0)
        assert o.clear is None or 0 <= o.clear < 2.0
    for system in ("mindbot", "bare"):
        assert summary["systems"][system]["calls"] == 1
        assert set(summary["systems"][system]["by_sound"]) == {"throat_clear"}

    from mindbot.bench import record_json

    path = tmp_path / "falsebargein.json"
    record_json(path, bench="falsebargein", **result.as_dict())
    written = json.loads(path.read_text())
    assert {"machine", "commit", "date", "outcomes", "sounds", "headline"} <= set(written)
    (row,) = headlines(written)
    assert row["measure"] == "false barge-ins on 1 non-speech sounds (vad_min_volume=0.5)"
