"""The audio settings: where they come from, how mistakes read, and what barge-in does."""

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    InterruptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import (
    MinWordsUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
    WakePhraseUserTurnStartStrategy,
)
from pydantic import ValidationError

from mindbot.audio_settings import AudioSettings, clean_phrases, matchable_wake_phrases
from mindbot.config import Settings
from mindbot.errors import ConfigError
from mindbot.services import LLMEndpoint, ServiceFactory, SharedModels, start_strategies

from conftest import make_settings


def test_the_defaults_are_the_turn_taking_mindbot_always_had():
    audio = make_settings().audio
    assert (audio.vad_confidence, audio.vad_start_secs, audio.vad_stop_secs) == (0.7, 0.2, 0.2)
    assert audio.smart_turn and audio.user_turn_stop_timeout == 5.0
    assert (audio.barge_in, audio.noise_filter, audio.wake_phrases) == ("always", "none", [])


def test_audio_settings_come_from_nested_variables(monkeypatch):
    monkeypatch.setenv("MINDBOT_AUDIO__VAD_STOP_SECS", "0.35")
    monkeypatch.setenv("MINDBOT_AUDIO__BARGE_IN", "min_words")
    monkeypatch.setenv("MINDBOT_AUDIO__WAKE_PHRASES", '["Hey MindBot", "hey  mindbot"]')
    audio = Settings.load(_env_file=None).audio
    assert audio.vad_stop_secs == 0.35
    assert audio.barge_in == "min_words"
    assert audio.wake_phrases == ["Hey MindBot"]  # tidied, the repeat dropped


def test_audio_settings_come_from_the_yaml_section(monkeypatch, tmp_path):
    config = tmp_path / "mindbot.yaml"
    config.write_text(
        "audio:\n  noise_filter: rnnoise\n  output_volume: 0.5\n"
        "  vocabulary: [Harbor Lane, TrailSync]\n"
    )
    monkeypatch.setenv("MINDBOT_CONFIG_FILE", str(config))
    audio = Settings.load(_env_file=None).audio
    assert (audio.noise_filter, audio.output_volume) == ("rnnoise", 0.5)
    assert audio.vocabulary == ["Harbor Lane", "TrailSync"]


def test_each_bad_field_is_named_once_in_one_line(monkeypatch):
    monkeypatch.setenv("MINDBOT_AUDIO__VAD_STOP_SECS", "9")
    monkeypatch.setenv("MINDBOT_AUDIO__BARGE_IN", "sometimes")
    monkeypatch.setenv("MINDBOT_AUDIO__NOISE_FILTER", "krisp")
    monkeypatch.setenv("MINDBOT_AUDIO__WAKE_PHRASES", '["!!!"]')
    with pytest.raises(ConfigError) as error:
        Settings.load(_env_file=None)
    message = str(error.value)
    assert "\n" not in message
    problems = message.split("; ")
    assert sorted(p.split(":")[0] for p in problems) == [
        "MINDBOT_AUDIO__BARGE_IN",
        "MINDBOT_AUDIO__NOISE_FILTER",
        "MINDBOT_AUDIO__VAD_STOP_SECS",
        "MINDBOT_AUDIO__WAKE_PHRASES",
    ]
    assert "'always', 'min_words' or 'never'" in message
    assert "wake phrase '!!!' is not usable" in message


def test_a_moved_variable_says_where_it_went(monkeypatch):
    monkeypatch.setenv("MINDBOT_VAD_STOP_SECS", "0.35")
    with pytest.raises(ConfigError) as error:
        Settings.load(_env_file=None)
    assert str(error.value) == (
        "MINDBOT_VAD_STOP_SECS moved to MINDBOT_AUDIO__VAD_STOP_SECS (audio.vad_stop_secs in YAML)"
    )


def test_the_vad_must_stop_before_the_turn_times_out():
    with pytest.raises(ValidationError) as error:
        AudioSettings(vad_stop_secs=1.5, user_turn_stop_timeout=1.0)
    assert "must be less than audio.user_turn_stop_timeout" in str(error.value)


def test_unknown_audio_fields_are_refused():
    with pytest.raises(ValidationError) as error:
        AudioSettings(vad_stop=0.3)
    assert error.value.errors()[0]["loc"] == ("vad_stop",)


@pytest.mark.parametrize(
    "text", ["", "   ", "\x00", "🎉🎉", "x" * 10_000, "one two three four five six seven"]
)
def test_unusable_phrases_are_refused_in_settings_and_dropped_from_callers_lists(text):
    with pytest.raises(ValidationError):
        AudioSettings(wake_phrases=[text])
    assert clean_phrases([text, None, 42, "Hey MindBot"]) == ["Hey MindBot"]


def test_odd_but_usable_phrases_are_tidied():
    assert clean_phrases(["\u202eHey\x00 Bot\u202c", "Cafe\u0301 Bot", "ｈｅｙ  bot"]) == [
        "Hey Bot",
        "Café Bot",
    ]


def test_wake_phrases_are_made_matchable_the_way_whisper_writes_them():
    phrases = matchable_wake_phrases(["Hey, MindBot!", "hey mindbot", "OK\u00a0Computer", "!!!"])
    assert phrases == ["Hey Mind Bot", "OK Computer"]


@pytest.mark.parametrize(
    ("barge_in", "kinds"),
    [
        ("always", [VADUserTurnStartStrategy, TranscriptionUserTurnStartStrategy]),
        ("never", [VADUserTurnStartStrategy, TranscriptionUserTurnStartStrategy]),
        ("min_words", [MinWordsUserTurnStartStrategy]),
    ],
)
def test_the_start_strategies_follow_the_barge_in_policy(barge_in, kinds):
    plain = start_strategies(AudioSettings(barge_in=barge_in))
    assert [type(s) for s in plain] == kinds
    woken = start_strategies(AudioSettings(barge_in=barge_in), wake_phrases=["hey mindbot"])
    assert [type(s) for s in woken] == [WakePhraseUserTurnStartStrategy, *kinds]


def factory(**audio) -> ServiceFactory:
    settings = make_settings(audio={"smart_turn": False, **audio})
    return ServiceFactory(
        settings, settings.resolve(), SharedModels(settings), LLMEndpoint(None, "m", "k")
    )


async def talk_over_the_bot(factory: ServiceFactory, *texts: str):
    """Send the caller's transcripts to a real user aggregator while the bot speaks."""
    user, _ = LLMContextAggregatorPair(LLMContext(), user_params=factory.user_params())
    frames = [BotStartedSpeakingFrame(), SleepFrame(0.05)]
    for text in texts:
        frames += [TranscriptionFrame(text, "caller", "now"), SleepFrame(0.1)]
    down, _ = await run_test(user, frames_to_send=[*frames, SleepFrame(1.0)])
    contexts = [f for f in down if isinstance(f, LLMContextFrame)]
    said = [m["content"] for c in contexts[-1:] for m in c.context.get_messages()]
    return down, said


async def test_barge_in_always_interrupts_the_bot_on_the_first_word():
    down, said = await talk_over_the_bot(factory(barge_in="always"), "stop")
    assert any(isinstance(f, InterruptionFrame) for f in down)
    assert said == ["stop"]


async def test_barge_in_never_lets_the_caller_speak_without_interrupting():
    down, said = await talk_over_the_bot(factory(barge_in="never"), "stop")
    assert any(isinstance(f, UserStartedSpeakingFrame) for f in down)
    assert not any(isinstance(f, InterruptionFrame) for f in down)
    assert said == ["stop"]


async def test_barge_in_min_words_ignores_a_short_word_while_the_bot_speaks():
    f = factory(barge_in="min_words", barge_in_min_words=3)
    down, said = await talk_over_the_bot(f, "uh-huh", "wait stop talking please")
    interruptions = [x for x in down if isinstance(x, InterruptionFrame)]
    assert len(interruptions) == 1
    assert said == ["wait stop talking please"]


def test_smart_turns_wait_and_the_vads_volume_gate_are_settings():
    settings = make_settings(audio={"smart_turn": True, "smart_turn_stop_secs": 1.2})
    params = ServiceFactory(
        settings, settings.resolve(), SharedModels(settings), LLMEndpoint(None, "m", "k")
    ).user_params()
    (stop,) = params.user_turn_strategies.stop
    assert stop._turn_analyzer.params.stop_secs == 1.2
    quiet = make_settings(audio={"vad_min_volume": 0.3})
    vad = ServiceFactory(
        quiet, quiet.resolve(), SharedModels(quiet), LLMEndpoint(None, "m", "k")
    ).user_params()
    assert vad.vad_analyzer.params.min_volume == 0.3
    with pytest.raises(ValidationError):
        AudioSettings(smart_turn_stop_secs=0.1)
