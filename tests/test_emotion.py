"""Emotion: prosody and words of real synthesized speech, fusion, hysteresis, the processors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test

from mindbot.emotion import (
    LABELS,
    EmotionAnalyzer,
    EmotionTracker,
    bot_style,
    check_styles,
    hint_for,
    measure,
    read_text,
)
from mindbot.emotion_eval import ENERGIES, PITCHES, RATES, deliver, print_report, run_eval
from processors.emotion_detector import MESSAGE_NAME, EmotionDetector, EmotionHint
from processors.frames import EmotionFrame, VoiceStyleFrame

pytestmark = pytest.mark.timeout(120)

RATE = 16000
CALM = ["Hello, I'm calling about my account.", "Sure, my postcode is two four six eight."]
ANGRY = "This is ridiculous! I've called three times and it still doesn't work!"
PLEASED = "Thank you, that sounds lovely."
PLAIN = "I would like to move my appointment to Friday morning."

UNICODE = [
    "",
    "   ",
    "😡😡😡 !!!",
    "مرحبا، أنا غاضب جدا",  # RTL
    "e\u0301e\u0301 cafe\u0301 n\u0303",  # combining marks
    "worried\x00about\x00it",
    "so angry " * 1200,  # 10k characters
    "\ud7ff\ufffd\u200b\u202e",
]


def spoken(voice_cache, text: str, rate: str = "normal", energy: str = "normal", **kw) -> bytes:
    """16 kHz speech delivered as in the eval set (Piper, length scale, gain)."""
    return deliver(
        text,
        length_scale=RATES[rate],
        gain_db=ENERGIES[energy],
        pitch=PITCHES[kw.get("pitch", "normal")],
        line_db=kw.get("line_db", -6.0),
        cache_dir=voice_cache,
    )


def calibrated(voice_cache, line_db: float = -6.0) -> EmotionAnalyzer:
    analyzer = EmotionAnalyzer()
    for text in CALM:
        analyzer.analyze(spoken(voice_cache, text, line_db=line_db), RATE, text)
    return analyzer


# --- Prosody ----------------------------------------------------------------------------------


def test_the_pitch_tracker_finds_a_voice_like_tone():
    t = np.arange(int(1.5 * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    pcm = (tone / np.abs(tone).max() * 8000).astype(np.int16).tobytes()
    prosody = measure(pcm, RATE)
    assert prosody is not None and abs(prosody.pitch_hz - 150) < 3
    assert prosody.pitch_spread is not None and prosody.pitch_spread < 0.3
    assert abs(prosody.speech_secs - 1.5) < 0.1


def test_piper_speech_has_a_male_pitch_and_its_level_follows_the_gain(voice_cache):
    normal = measure(spoken(voice_cache, PLAIN), RATE)
    soft = measure(spoken(voice_cache, PLAIN, energy="soft"), RATE)
    assert normal is not None and soft is not None
    assert 70 < normal.pitch_hz < 150  # en_US-joe is a low male voice
    assert abs((normal.level_db - soft.level_db) - 8.0) < 1.0
    assert normal.pitch_hz == pytest.approx(soft.pitch_hz, rel=0.03)


def test_a_pitch_shift_in_the_delivery_is_measured(voice_cache):
    normal = measure(spoken(voice_cache, PLAIN), RATE)
    high = measure(spoken(voice_cache, PLAIN, pitch="high"), RATE)
    assert 12 * math.log2(high.pitch_hz / normal.pitch_hz) == pytest.approx(2.0, abs=0.7)


def test_bad_audio_never_crashes_and_silence_reads_as_nothing():
    rng = np.random.default_rng(1)
    silent = bytes(RATE * 2)
    assert measure(b"", RATE) is None
    assert measure(silent, RATE) is None
    assert measure(b"\x01", RATE) is None
    assert measure(b"\x00\x10" * 100, RATE) is None  # 6 ms
    assert measure(silent, 0) is None and measure(silent, -5) is None
    assert measure(silent, 10**9) is None
    square = np.where(np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE) > 0, 32767, -32768)
    clipped = measure(square.astype(np.int16).tobytes() + b"\x07", RATE)
    assert clipped is not None and clipped.clipped > 0.9 and clipped.level_db > -1
    noise = (rng.standard_normal(RATE) * 3000).astype(np.int16).tobytes()
    for rate in (8000, 11025, 44100, 48000):
        assert measure(noise, rate) is not None  # noise has a level, maybe no pitch


def test_a_loud_turn_is_loud_relative_to_the_callers_own_line(voice_cache):
    # Two lines 12 dB apart: after each caller's calm turns, the same delivery reads the same.
    loud, quiet_line = [], []
    for line_db, out in ((-6.0, loud), (-18.0, quiet_line)):
        analyzer = calibrated(voice_cache, line_db)
        audio = spoken(voice_cache, PLAIN, energy="loud", line_db=line_db)
        out.append(analyzer.analyze(audio, RATE, PLAIN).cues["level_z"])
    assert loud[0] > 0.5
    assert loud[0] == pytest.approx(quiet_line[0], abs=0.3)


# --- Words ------------------------------------------------------------------------------------


def test_words_give_valence_and_cue_evidence_and_negation_cancels_a_cue():
    assert read_text(ANGRY).valence < -0.3 and read_text(ANGRY).arousal > 0.5
    assert read_text(PLEASED).valence > 0.4
    assert read_text("I'm really worried about the results").evidence["anxious"] > 0.5
    assert read_text("I'm not worried about it").evidence["anxious"] == 0.0
    assert read_text("It still doesn't work, again").evidence["frustrated"] > 0.5


@pytest.mark.parametrize("text", UNICODE)
def test_any_text_reads_without_crashing(text):
    cues = read_text(text)
    assert -1 <= cues.valence <= 1 and -1 <= cues.arousal <= 1
    assert all(0 <= v <= 1 for v in cues.evidence.values())


# --- Fusion -----------------------------------------------------------------------------------


def test_a_loud_fast_negative_turn_differs_from_a_calm_positive_one(voice_cache):
    analyzer = calibrated(voice_cache)
    angry = analyzer.analyze(spoken(voice_cache, ANGRY, "fast", "loud"), RATE, ANGRY)
    pleased = analyzer.analyze(spoken(voice_cache, PLEASED, "slow", "soft"), RATE, PLEASED)
    assert angry.label in {"angry", "frustrated"} and pleased.label == "happy"
    assert angry.valence < 0 < pleased.valence
    assert angry.arousal > pleased.arousal + 0.5
    # Louder than the caller's baseline versus softer: Piper's output varies between
    # syntheses, so the margin is on the difference, not on each side.
    assert angry.cues["level_z"] > 0 > pleased.cues["level_z"]
    assert angry.cues["level_z"] - pleased.cues["level_z"] > 0.8
    assert angry.confidence > 0.5 and pleased.confidence > 0.5


def test_the_voice_moves_arousal_when_the_words_are_the_same(voice_cache):
    analyzer = calibrated(voice_cache)
    hot = analyzer.estimate(measure(spoken(voice_cache, PLAIN, "fast", "loud"), RATE), PLAIN)
    cold = analyzer.estimate(
        measure(spoken(voice_cache, PLAIN, "slow", "soft", pitch="low"), RATE), PLAIN
    )
    assert hot.cues["voice_arousal"] > 0.3 > -0.3 > cold.cues["voice_arousal"]
    assert hot.arousal > cold.arousal + 0.4
    assert cold.label in {"neutral", "sad"} and hot.label != "sad"


def test_no_audio_or_no_words_still_gives_an_estimate(voice_cache):
    analyzer = EmotionAnalyzer()
    words_only = analyzer.estimate(None, ANGRY)
    assert words_only.label in {"angry", "frustrated"} and words_only.confidence < 0.9
    voice_only = analyzer.analyze(spoken(voice_cache, PLAIN), RATE, "")
    assert voice_only.label in LABELS and voice_only.confidence < 0.5


# --- Over turns -------------------------------------------------------------------------------


def test_one_odd_turn_does_not_swing_the_settled_emotion():
    tracker = EmotionTracker()
    assert tracker.update("angry", 0.9) == "neutral"
    assert tracker.update("frustrated", 0.7) == "angry"  # two upset turns of three
    assert tracker.update("happy", 0.95) == "angry"  # one odd turn
    assert tracker.update("neutral", 0.2) == "angry"
    assert tracker.update("neutral", 0.2) == "neutral"  # calm comes back on agreement alone
    assert tracker.update("sad", 0.2) == "neutral"
    assert tracker.update("sad", 0.2) == "neutral"  # agreeing, but too unsure
    assert tracker.update("nonsense", 1.0) == "neutral"


def test_hints_are_hedged_and_styles_follow_the_caller():
    assert hint_for("neutral") is None
    frustrated = hint_for("frustrated")
    assert "frustrated" in frustrated and "may be wrong" in frustrated
    assert bot_style("angry").emotion == "calm" and bot_style("angry").speed < 1
    assert bot_style("sad").volume < 1 and bot_style("excited").speed > 1
    assert bot_style("neutral").emotion is None
    overrides = {"sad": {"speed": 0.85}, "neutral": {"emotion": "content"}}
    check_styles(overrides)
    assert bot_style("sad", overrides).speed == 0.85
    assert bot_style("sad", overrides).emotion == "sympathetic"
    assert bot_style("unknown", overrides).emotion == "content"
    for bad in ({"furious": {}}, {"sad": {"pitch": 2}}, {"sad": {"speed": 3}}, {"sad": 1}):
        with pytest.raises(ValueError):
            check_styles(bad)


def test_the_evaluation_set_runs_and_reports(voice_cache, capsys):
    result = run_eval(cache_dir=voice_cache)
    assert len(result.items) >= 40 and set(result.per_label) == set(LABELS)
    assert result.accuracy > max(0.5, result.text_only_accuracy - 0.05)
    print_report(result)
    out = capsys.readouterr().out
    assert "accuracy (words + voice)" in out and "confusion" in out
    with capsys.disabled():
        print(f"\nemotion eval: {result.accuracy:.1%} ({result.text_only_accuracy:.1%} words only)")


# --- The processors ---------------------------------------------------------------------------


def turn(audio: bytes, text: str, *, chunk_ms: int = 20) -> list:
    """One caller turn as the detector sees it: turn and VAD frames, audio, the final words."""
    size = RATE * chunk_ms // 1000 * 2
    chunks = [audio[i : i + size] for i in range(0, len(audio), size)]
    return [
        VADUserStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
        *[InputAudioRawFrame(audio=c, sample_rate=RATE, num_channels=1) for c in chunks],
        SleepFrame(0.05),
        VADUserStoppedSpeakingFrame(),
        SleepFrame(0.1),
        TranscriptionFrame(text, "caller", "t", finalized=True),
        SleepFrame(0.05),
        UserStoppedSpeakingFrame(),
    ]


async def test_the_detector_emits_one_emotion_per_turn_before_its_final_words(voice_cache):
    heard = []
    detector = EmotionDetector(analyzer=calibrated(voice_cache), on_emotion=heard.append)
    angry = turn(spoken(voice_cache, ANGRY, "fast", "loud"), ANGRY)
    pleased = turn(spoken(voice_cache, PLEASED, "slow", "soft"), PLEASED)
    down, up = await run_test(detector, frames_to_send=[*angry, *pleased])
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    kinds = [type(f) for f in down if not isinstance(f, InputAudioRawFrame)]
    turn_kinds = [
        VADUserStartedSpeakingFrame,
        UserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
        EmotionFrame,
        TranscriptionFrame,
        UserStoppedSpeakingFrame,
    ]
    assert kinds == turn_kinds * 2
    sent_audio = [f for f in [*angry, *pleased] if isinstance(f, InputAudioRawFrame)]
    assert [f for f in down if isinstance(f, InputAudioRawFrame)] == sent_audio
    emotions = [f for f in down if isinstance(f, EmotionFrame)]
    assert emotions == heard
    assert emotions[0].label in {"angry", "frustrated"} and emotions[1].label == "happy"
    # The audio was heard, not just the words: the loud turn reads louder than the soft one.
    assert emotions[0].cues["level_z"] - emotions[1].cues["level_z"] > 0.8
    assert all(isinstance(v, float) for v in emotions[0].cues.values())  # numbers, no words


async def test_the_detector_survives_bad_audio_and_odd_words(voice_cache):
    rng = np.random.default_rng(7)
    square = np.where(np.arange(RATE) % 80 < 40, 32767, -32768).astype(np.int16).tobytes()
    odd = [
        InputAudioRawFrame(audio=b"", sample_rate=RATE, num_channels=1),
        InputAudioRawFrame(audio=b"\x01\x02\x03", sample_rate=RATE, num_channels=1),
        InputAudioRawFrame(audio=square, sample_rate=RATE, num_channels=1),
        InputAudioRawFrame(audio=bytes(640), sample_rate=8000, num_channels=1),
        InputAudioRawFrame(audio=rng.bytes(3200), sample_rate=48000, num_channels=2),
        InputAudioRawFrame(audio=bytes(640), sample_rate=0, num_channels=1),
    ]
    frames = []
    for text in UNICODE:
        frames += [
            VADUserStartedSpeakingFrame(),
            *odd,
            VADUserStoppedSpeakingFrame(),
            SleepFrame(0.02),
            TranscriptionFrame(text, "caller", "t", finalized=True),
            SleepFrame(0.05),
        ]
    frames += turn(bytes(RATE), "Hello?") + turn(square * 2, "WHY IS THIS SO LOUD")
    down, up = await run_test(EmotionDetector(analyzer=EmotionAnalyzer()), frames_to_send=frames)
    assert not [f for f in up if isinstance(f, ErrorFrame)]
    transcripts = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert [f.text for f in transcripts] == [*UNICODE, "Hello?", "WHY IS THIS SO LOUD"]
    emotions = [f for f in down if isinstance(f, EmotionFrame)]
    # Blank transcripts carry no turn to judge; every other one gets an estimate.
    assert len(emotions) == len(transcripts) - 2
    assert all(e.label in LABELS and 0 <= e.confidence <= 1 for e in emotions)
    assert emotions[-1].cues["clipped"] > 0.5


def context(*turns: str) -> LLMContext:
    messages = [{"role": "system", "content": "Be brief."}]
    for text in turns:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "Ok."}]
    return LLMContext(messages=messages[:-1])


def hints(ctx: LLMContext) -> list[str]:
    return [m["content"] for m in ctx.get_messages() if m.get("name") == MESSAGE_NAME]


async def test_the_hint_comes_after_a_persistent_emotion_and_not_after_one_odd_turn():
    contexts = [context(*["It still doesn't work."] * n) for n in range(1, 7)]
    estimates = ["frustrated", "frustrated", "happy", "neutral", "neutral", "neutral"]
    frames = []
    for label, ctx in zip(estimates, contexts, strict=True):
        frames += [EmotionFrame(label, -0.5, 0.4, 0.7), SleepFrame(0.02), LLMContextFrame(ctx)]
    hint = EmotionHint(tracker=EmotionTracker(), hint_for=hint_for, style_for=bot_style)
    down, _ = await run_test(hint, frames_to_send=frames)
    assert [hints(c) != [] for c in contexts] == [False, True, True, True, False, False]
    second = contexts[1].get_messages()
    assert len(hints(contexts[1])) == 1 and "frustrated" in hints(contexts[1])[0]
    assert second.index(next(m for m in second if m.get("name") == MESSAGE_NAME)) == len(second) - 2
    styles = [f for f in down if isinstance(f, VoiceStyleFrame)]
    assert [(s.emotion, s.speed) for s in styles] == [("calm", 0.95), ("neutral", 1.0)]
    order = [type(f) for f in down]
    assert order.index(VoiceStyleFrame) == order.index(LLMContextFrame) + 2  # before turn 2's


async def test_the_hint_is_replaced_not_repeated_in_a_shared_context():
    ctx = context("Ugh, it's broken again.")
    hint = EmotionHint(tracker=EmotionTracker(window=2, min_turns=1), hint_for=hint_for)
    await run_test(
        hint,
        frames_to_send=[
            EmotionFrame("frustrated", -0.5, 0.4, 0.8),
            LLMContextFrame(ctx),
            SleepFrame(0.02),
            EmotionFrame("sad", -0.5, -0.4, 0.8),
            LLMContextFrame(ctx),
        ],
    )
    assert len(hints(ctx)) == 1 and "sad" in hints(ctx)[0]


async def test_detector_and_hint_together_on_real_speech(voice_cache):
    analyzer = calibrated(voice_cache)
    ctxs = [context(ANGRY), context(ANGRY, ANGRY)]
    audio = spoken(voice_cache, ANGRY, "fast", "loud")
    pipeline = Pipeline(
        [
            EmotionDetector(analyzer=analyzer),
            EmotionHint(tracker=EmotionTracker(), hint_for=hint_for, style_for=bot_style),
        ]
    )
    frames = [*turn(audio, ANGRY), LLMContextFrame(ctxs[0]), *turn(audio, ANGRY)]
    await run_test(pipeline, frames_to_send=[*frames, LLMContextFrame(ctxs[1])])
    assert hints(ctxs[0]) == []
    assert len(hints(ctxs[1])) == 1 and "sounds" in hints(ctxs[1])[0]


async def test_in_place_between_whisper_and_a_real_user_aggregator(voice_cache):
    """Placed as in the assistant pipeline, the detector sees the VAD and turn frames that the
    aggregator sends upstream, and its estimate reaches the hint before the LLM's turn."""
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair

    from mindbot.services import LLMEndpoint, ServiceFactory, SharedModels

    from conftest import make_settings

    settings = make_settings(audio={"smart_turn": False})
    services = ServiceFactory(
        settings, settings.resolve(), SharedModels(settings), LLMEndpoint(None, "m", "k")
    )
    ctx = LLMContext()
    user, _ = LLMContextAggregatorPair(ctx, user_params=services.user_params())
    heard: list[EmotionFrame] = []
    pipeline = Pipeline(
        [
            services.stt(),
            EmotionDetector(analyzer=calibrated(voice_cache), on_emotion=heard.append),
            user,
            EmotionHint(tracker=EmotionTracker(min_turns=1), hint_for=hint_for),
        ]
    )
    speech = spoken(voice_cache, ANGRY, "fast", "loud") + bytes(RATE * 2)  # and a second of silence
    chunks = [speech[i : i + 640] for i in range(0, len(speech), 640)]
    frames = []
    for n, chunk in enumerate(chunks):  # in real time, as a transport delivers it
        frames.append(InputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1))
        if n % 5 == 4:
            frames.append(SleepFrame(0.1))
    down, _ = await run_test(pipeline, frames_to_send=[*frames, SleepFrame(1.5)])
    kinds = [type(f) for f in down]
    assert kinds.count(EmotionFrame) == 1 and kinds.count(LLMContextFrame) == 1
    assert kinds.index(EmotionFrame) < kinds.index(LLMContextFrame)
    assert heard[0].label in {"angry", "frustrated"} and "level_z" in heard[0].cues
    assert len(hints(ctx)) == 1 and ctx.get_messages()[-1]["role"] == "user"
