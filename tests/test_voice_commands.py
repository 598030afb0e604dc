"""Voice commands: the matcher on its own, then the processors, frames in and frames out."""

from pathlib import Path

import pytest
from pipecat.frames.frames import (
    EndWorkerFrame,
    ErrorFrame,
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMMessagesUpdateFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserMuteStartedFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from mindbot.errors import ConfigError
from mindbot.voice_commands import Command, available_languages, load_commands, load_commands_file
from processors.frames import VoiceStyleFrame
from processors.voice_commands import VoiceCommandFrame, VoiceCommands

EN = load_commands("en")
ES = load_commands("es")
VOICES = {"joe": "voice-id-joe", "lucia": "voice-id-lucia"}


def said(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "2026-01-01T00:00:00Z")


def heard(text: str) -> InterimTranscriptionFrame:
    return InterimTranscriptionFrame(text, "caller", "2026-01-01T00:00:00Z")


def commands(actions: list[str] | None = None, language=EN) -> VoiceCommands:
    return VoiceCommands(
        language.match,
        replies=language.replies,
        resolve_voice=VOICES.get,
        on_command=actions.append if actions is not None else None,
    )


def of(kind: type, frames) -> list:
    return [f for f in frames if isinstance(f, kind)]


# --- The matcher ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("um stop", Command("stop")),
        ("Stop please.", Command("stop")),
        ("Okay, stop talking!", Command("stop")),
        ("Hey MindBot, wait. Wait!", Command("stop")),
        ("Could you repeat that?", Command("repeat")),
        ("Hang up now.", Command("goodbye")),
        ("Bye-bye!", Command("goodbye")),
        ("Let\u2019s start over.", Command("start_over")),
        ("Slow down a bit, please.", Command("slower")),
        ("I can't hear you.", Command("louder")),
        ("You're too loud", Command("quieter")),
        ("Can you talk faster?", Command("faster")),
        ("Unmute.", Command("unmute")),
        ("Switch voice to Joe, please.", Command("switch_voice", "joe")),
        ("Use the 2 voice.", Command("switch_voice", "two")),
        ("STOP \U0001f6d1", Command("stop")),
        ("s\u0336t\u0336o\u0336p\u0336", Command("stop")),  # combining marks fold like accents
    ],
)
def test_commands_are_recognized_inside_fillers_and_politeness(text, command):
    assert EN.match(text) == command


@pytest.mark.parametrize(
    "text",
    [
        "Don't stop the music.",
        "I want to start over my subscription.",
        "What's the weather?",
        "Stop charging my card.",
        "Wait, what?",
        "Repeat after me: hello.",
        "Switch to the news.",
        "Okay.",  # nothing but a filler
        "Um, uh, please.",
    ],
)
def test_a_command_word_inside_a_longer_sentence_is_not_a_command(text):
    assert EN.match(text) is None


def test_spanish_commands_come_from_their_own_file():
    assert ES.language == "es" and set(available_languages()) >= {"en", "es"}
    assert ES.match("¡Para, por favor!") == Command("stop")
    assert ES.match("Repítelo.") == Command("repeat")
    assert ES.match("Más despacio") == Command("slower")
    assert ES.match("Adiós") == Command("goodbye")
    assert ES.match("Cambia la voz a Lucía") == Command("switch_voice", "lucia")
    assert ES.match("Para mañana, por favor") is None
    assert ES.match("Stop") is None  # English is not Spanish
    assert "Adiós" in ES.reply("goodbye")


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "",
        "\x00",
        " \t\n ",
        "x" * 10_000,
        "stop " * 2_000,  # a huge transcript is never a command, even made of one
        "\u062a\u0648\u0642\u0641",  # Arabic, right to left
        "\ud800\udfff",  # lone surrogates
        "\u2067\u2069",  # bidi isolates and nothing else
        "\U0001f600" * 50,
        "\u00b2",  # a digit that is no decimal
    ],
)
def test_bad_input_is_no_command_and_never_raises(text):
    assert EN.match(text) is None
    assert ES.match(text) is None


def test_the_reply_fills_in_the_voice():
    assert EN.reply("unknown_voice", voice="bob") == "Sorry, I don't know a voice called bob."
    assert EN.reply("no_such_reply") == ""


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ("language: en\ncommands: {stop: [stop]\n", "invalid YAML at line"),
        ("language: en\n", "field 'commands' is required"),
        ("language: en\ncommands: {dance: [dance]}\n", "'commands.dance'"),
        ("language: en\ncommands: {stop: stop}\n", "field 'commands.stop'"),
        ("language: en\ncommands: {stop: []}\n", "field 'commands.stop' must list"),
        ("language: en\ncommands: {switch_voice: [switch voice]}\n", "'commands.switch_voice'"),
        ("language: en\ncommands: {stop: [stop], mute: [Stop!]}\n", "also a phrase of 'stop'"),
        ("language: en\nfillers: [stop]\ncommands: {stop: [stop]}\n", "no words once fillers"),
        ("language: en\ncommands: {stop: [stop]}\nreplies: {hello: Hi}\n", "'replies.hello'"),
        ("language: english\ncommands: {stop: [stop]}\n", "field 'language'"),
        ("language: en\ncommands: {stop: [stop]}\nvoices: [a]\n", "unknown field 'voices'"),
        ("- stop\n", "expected a mapping"),
    ],
)
def test_a_broken_file_is_one_line_naming_the_file_and_the_field(tmp_path, content, names):
    path = tmp_path / "en.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_commands_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and names in message and "\n" not in message


def test_an_unknown_language_names_the_ones_there_are(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"no voice commands for 'fr' \(available: en, es\)"):
        load_commands("fr")
    with pytest.raises(ConfigError, match="not an ISO 639-1"):
        load_commands("../en")


# --- The listener -----------------------------------------------------------------------------


async def test_a_command_is_acted_on_and_its_words_go_no_further():
    actions: list[str] = []
    down, up = await run_test(
        commands(actions).listener(),
        frames_to_send=[said("Okay, stop talking!")],
        expected_down_frames=[InterruptionFrame, VoiceCommandFrame],
        expected_up_frames=[InterruptionFrame],
    )
    assert down[1].action == "stop"
    assert actions == ["stop"]


async def test_other_frames_pass_through_untouched_and_in_order():
    sent: list[Frame] = [
        said("Don't stop the music."),
        heard("I want to start"),
        said("I want to start over my subscription."),
        TextFrame("not a transcript"),
        said("What's the weather?"),
    ]
    down, up = await run_test(
        commands().listener(),
        frames_to_send=sent,
        expected_down_frames=[type(f) for f in sent],
        expected_up_frames=[],
    )
    assert [f.text for f in down] == [f.text for f in sent]


async def test_an_interim_stop_interrupts_before_the_final_arrives():
    actions: list[str] = []
    down, _ = await run_test(
        commands(actions).listener(),
        frames_to_send=[heard("Stop"), SleepFrame(0.1), said("Stop.")],
        expected_down_frames=[InterruptionFrame, VoiceCommandFrame],
    )
    assert actions == ["stop"]  # once, on the interim


async def test_an_interim_stop_that_turns_into_a_sentence_lets_the_sentence_through():
    down, _ = await run_test(
        commands().listener(),
        frames_to_send=[heard("Stop"), SleepFrame(0.1), said("Stop charging my card.")],
        expected_down_frames=[InterruptionFrame, TranscriptionFrame],
    )
    assert down[1].text == "Stop charging my card."


async def test_the_turn_end_waits_until_the_caller_stops_speaking():
    down, _ = await run_test(
        commands().listener(),
        frames_to_send=[
            VADUserStartedSpeakingFrame(),
            said("Stop."),
            SleepFrame(0.1),
            VADUserStoppedSpeakingFrame(),
        ],
        expected_down_frames=[
            VADUserStartedSpeakingFrame,
            InterruptionFrame,
            VADUserStoppedSpeakingFrame,
            VoiceCommandFrame,
        ],
    )


async def test_speed_and_volume_commands_ask_for_a_new_style_and_say_so():
    actions: list[str] = []
    down, _ = await run_test(
        commands(actions).listener(),
        frames_to_send=[said("Slower, please."), said("Louder!")],
        expected_down_frames=[
            VoiceStyleFrame,
            TTSSpeakFrame,
            VoiceCommandFrame,
            VoiceStyleFrame,
            TTSSpeakFrame,
            VoiceCommandFrame,
        ],
    )
    slower, louder = of(VoiceStyleFrame, down)
    assert (slower.source, slower.speed_step, slower.volume_step) == ("command", 0.87, None)
    assert (louder.speed_step, louder.volume_step) == (None, 1.25)
    assert of(TTSSpeakFrame, down)[0].text == "Okay, I'll slow down."
    assert not of(TTSSpeakFrame, down)[0].append_to_context
    assert actions == ["slower", "louder"]


async def test_switching_to_a_known_voice_and_to_an_unknown_one():
    actions: list[str] = []
    down, _ = await run_test(
        commands(actions).listener(),
        frames_to_send=[said("Switch voice to Joe."), said("Change your voice to Bob.")],
        expected_down_frames=[
            VoiceStyleFrame,
            TTSSpeakFrame,
            VoiceCommandFrame,
            TTSSpeakFrame,
            VoiceCommandFrame,
        ],
    )
    assert down[0].voice == "voice-id-joe" and down[0].source == "command"
    assert down[3].text == "Sorry, I don't know a voice called bob."
    assert actions == ["switch_voice", "unknown_voice"]


async def test_without_a_voice_catalog_switching_voices_is_left_to_the_llm():
    listener = VoiceCommands(EN.match, replies=EN.replies).listener()
    down, _ = await run_test(
        listener,
        frames_to_send=[said("Switch voice to Joe.")],
        expected_down_frames=[TranscriptionFrame],
    )


async def test_starting_over_empties_the_context_and_says_so():
    context = LLMContext(messages=[{"role": "user", "content": "My name is Ada."}])
    pair_user = LLMUserAggregator(context)
    down, _ = await run_test(
        Pipeline([commands().listener(), pair_user]),
        frames_to_send=[said("Let's start over.")],
    )
    assert context.get_messages() == []
    speech = of(TTSSpeakFrame, down)
    assert [s.text for s in speech] == ["Okay, let's start over. What can I do for you?"]
    assert not of(LLMContextFrame, down)  # no reply from the LLM


async def test_start_over_alone_pushes_a_context_update_that_runs_no_llm():
    down, _ = await run_test(
        commands().listener(),
        frames_to_send=[said("start over")],
        expected_down_frames=[
            InterruptionFrame,
            LLMMessagesUpdateFrame,
            TTSSpeakFrame,
            VoiceCommandFrame,
        ],
    )
    assert down[1].messages == [] and not down[1].run_llm


async def test_goodbye_is_said_whatever_happens_then_the_call_ends():
    actions: list[str] = []
    down, _ = await run_test(
        commands(actions).listener(),
        frames_to_send=[said("Goodbye!"), said("Stop.")],
        expected_down_frames=None,
        send_end_frame=False,
    )
    kinds = [type(f) for f in down]
    assert kinds[:4] == [InterruptionFrame, TTSSpeakFrame, EndWorkerFrame, VoiceCommandFrame]
    assert down[1].text == "Goodbye, and thanks for calling!" and not down[1].interruptible
    assert actions == ["goodbye"]  # nothing is a command once the call is ending


async def test_bad_transcripts_pass_through_and_nothing_fails():
    texts = ["", "\x00", "\U0001f600" * 30, "\u062a\u0648\u0642\u0641", "y" * 10_000, "\ud800"]
    down, up = await run_test(
        commands().listener(),
        frames_to_send=[*(said(t) for t in texts), heard(""), heard("x" * 10_000)],
        expected_down_frames=[TranscriptionFrame] * len(texts) + [InterimTranscriptionFrame] * 2,
    )
    assert [f.text for f in down[: len(texts)]] == texts
    assert not of(ErrorFrame, up)


# --- The player -------------------------------------------------------------------------------


def spoken(*chunks: bytes) -> list[Frame]:
    return [
        TTSStartedFrame(),
        *(TTSAudioRawFrame(chunk, 8000, 1) for chunk in chunks),
        TTSStoppedFrame(),
    ]


async def test_repeat_replays_the_last_complete_utterance_from_its_audio():
    voice = commands()
    first, cut = [b"\x01\x02" * 80, b"\x03\x04" * 80], b"\x05\x06" * 80
    down, _ = await run_test(
        Pipeline([voice.listener(), voice.player()]),
        frames_to_send=[
            *spoken(*first),
            SleepFrame(0.1),
            TTSStartedFrame(),
            TTSAudioRawFrame(cut, 8000, 1),
            SleepFrame(0.1),
            InterruptionFrame(),  # the caller cut this one off: it is not kept
            SleepFrame(0.1),
            said("Could you repeat that, please?"),
        ],
    )
    replayed = down[down.index(of(InterruptionFrame, down)[-1]) + 1 :]
    assert [type(f) for f in replayed] == [TTSAudioRawFrame, TTSAudioRawFrame, TTSStoppedFrame]
    assert [f.audio for f in replayed[:2]] == first
    assert not of(VoiceCommandFrame, down)  # the player keeps it off the transport


async def test_repeat_before_the_bot_spoke_says_there_is_nothing_to_repeat():
    voice = commands()
    down, _ = await run_test(
        Pipeline([voice.listener(), voice.player()]),
        frames_to_send=[said("Repeat that.")],
        expected_down_frames=[InterruptionFrame, TTSSpeakFrame],
    )
    assert down[1].text == "I haven't said anything yet."


# --- With Pipecat's user aggregator -------------------------------------------------------------


def aggregator(voice: VoiceCommands | None, context: LLMContext, **params) -> LLMUserAggregator:
    stop = [SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.05)]
    return LLMUserAggregator(
        context,
        params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
                stop=[*stop, voice.turn_end_strategy()] if voice else stop,
            ),
            user_mute_strategies=[voice.mute_strategy()] if voice else [],
            **params,
        ),
    )


def asks_to_repeat(frames) -> bool:
    return any(
        m.get("role") == "developer" and "repeat" in str(m.get("content"))
        for f in of(LLMContextFrame, frames)
        for m in f.context.get_messages()
    )


COMMAND_TURN = [
    VADUserStartedSpeakingFrame(),  # the turn starts before the bot has finished: it interrupts
    said("Stop."),
    SleepFrame(0.05),
    VADUserStoppedSpeakingFrame(),
    SleepFrame(0.6),
]


async def test_without_the_strategies_pipecat_answers_the_empty_command_turn():
    """The control: Pipecat's empty-turn recovery runs the LLM when the turn times out."""
    voice, context = commands(), LLMContext()
    down, _ = await run_test(
        Pipeline([voice.listener(), aggregator(None, context, user_turn_stop_timeout=0.3)]),
        frames_to_send=COMMAND_TURN,
    )
    assert asks_to_repeat(down)


async def test_with_the_strategies_a_command_turn_ends_at_once_and_gets_no_reply():
    voice, context = commands(), LLMContext()
    down, _ = await run_test(
        # A long stop timeout: only the turn-end strategy can end the turn within the test.
        Pipeline([voice.listener(), aggregator(voice, context, user_turn_stop_timeout=5.0)]),
        frames_to_send=COMMAND_TURN,
    )
    assert of(UserStoppedSpeakingFrame, down)
    assert not of(LLMContextFrame, down)
    assert context.get_messages() == []


async def test_muted_the_bot_ignores_the_caller_until_unmute():
    actions: list[str] = []
    voice, context = commands(actions), LLMContext()
    down, up = await run_test(
        Pipeline([voice.listener(), aggregator(voice, context)]),
        frames_to_send=[
            said("Mute."),
            SleepFrame(0.2),
            said("What's the weather?"),  # ignored
            SleepFrame(0.2),
            said("Stop."),  # not a command while muted
            SleepFrame(0.2),
            said("Unmute!"),
            SleepFrame(0.2),
            said("What's the weather?"),
            SleepFrame(0.3),
        ],
    )
    assert actions == ["mute", "unmute"]
    assert [s.text for s in of(TTSSpeakFrame, down)] == [
        "Okay, I'm not listening now. Say unmute when you need me.",
        "I'm listening again.",
    ]
    # One interruption: the last question's turn. "Stop" while muted did nothing.
    assert len(of(InterruptionFrame, up)) == 1
    assert of(UserMuteStartedFrame, down)
    (reply,) = of(LLMContextFrame, down)  # one LLM run: the question after "unmute"
    users = [m["content"] for m in context.get_messages() if m["role"] == "user"]
    assert users == ["What's the weather?"]


async def test_without_the_mute_strategy_mute_is_not_a_command():
    down, _ = await run_test(
        commands().listener(),
        frames_to_send=[said("Mute.")],
        expected_down_frames=[TranscriptionFrame],
    )


# --- The "stop" benchmark's arithmetic -----------------------------------------------------------


def test_the_stop_benchmark_summarizes_its_calls_in_milliseconds():
    from mindbot.command_bench import CommandBenchResult, StopTiming, format_command_summary

    result = CommandBenchResult(profile="deepgram/openai/cartesia", failures=["bot was silent"])
    for n in range(1, 5):
        result.stops.append(
            StopTiming(
                clear=0.1 * n,
                audio=0.1 * n,
                stop=0.1 * n,
                stt=0.08 * n,
                after_stt=0.02 * n,
                barge_in_first=n == 1,
            )
        )
    summary = result.summary()
    assert (summary["calls"], summary["failures"], summary["barge_in_first"]) == (4, 1, 1)
    assert (summary["stop_ms_p50"], summary["stop_ms_p95"]) == (200.0, 400.0)
    assert summary["after_stt_ms_p50"] == 40.0
    table = format_command_summary(summary)
    assert "beyond the STT (stop - recognized)" in table and "+40 ms" in table
