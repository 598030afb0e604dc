"""Wake phrases: a real user aggregator, built from the ServiceFactory's parameters, answers
nothing until a phrase is heard, and goes back to waiting after the timeout; and a phone call
to an always-on bot, through the assistant pipeline."""

import asyncio

import pytest
from pipecat.frames.frames import LLMContextFrame, TranscriptionFrame, UserStartedSpeakingFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.tests.utils import SleepFrame, run_test

from mindbot.callsim import PhoneCall
from mindbot.harness import serve, ws_url
from mindbot.services import LLMEndpoint, ServiceFactory, SharedModels, wake_strategy
from mindbot.speech import synthesize
from mindbot.standins import Text
from pipelines.assistant import run

from conftest import make_settings

TURN_END = SleepFrame(1.0)  # the silence timeout (0.6 s) ends a turn


def factory(**audio) -> ServiceFactory:
    settings = make_settings(audio={"smart_turn": False, **audio})
    return ServiceFactory(
        settings, settings.resolve(), SharedModels(settings), LLMEndpoint(None, "m", "k")
    )


def said(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "now")


async def converse(factory: ServiceFactory, frames, *, wake_phrases=()):
    """Run ``frames`` through the session's user aggregator.

    Returns:
        What the caller said in each turn that ran the LLM, the wake events in order, and how
        many user turns started.
    """
    params = factory.user_params(wake_phrases=wake_phrases)
    events: list[str] = []
    strategy = wake_strategy(params)
    if strategy is not None:

        @strategy.event_handler("on_wake_phrase_detected")
        async def _woken(_strategy, phrase):
            events.append(f"woken by {phrase}")

        @strategy.event_handler("on_wake_phrase_timeout")
        async def _asleep(_strategy):
            events.append("asleep")

    user, _ = LLMContextAggregatorPair(LLMContext(), user_params=params)
    turns: list[str] = []

    @user.event_handler("on_user_turn_stopped")
    async def _turn(_aggregator, _strategy, message):
        turns.append(message.content)

    down, _ = await run_test(user, frames_to_send=frames)
    assert sum(isinstance(f, LLMContextFrame) for f in down) == len(turns)
    started = sum(isinstance(f, UserStartedSpeakingFrame) for f in down)
    return turns, events, started


async def test_without_wake_phrases_every_transcript_is_a_turn():
    assert wake_strategy(factory().user_params()) is None
    turns, _, _ = await converse(factory(), [said("what time is it"), TURN_END])
    assert turns == ["what time is it"]


async def test_speech_without_the_phrase_never_reaches_the_llm():
    f = factory(wake_phrases=["Hey MindBot"])
    turns, events, started = await converse(
        f, [said("what time is it"), TURN_END, said("hey mind the gap"), TURN_END]
    )
    assert turns == [] and events == [] and started == 0


async def test_the_phrase_opens_a_turn_that_keeps_what_followed_it():
    f = factory(wake_phrases=["Hey MindBot"])
    turns, events, _ = await converse(
        f, [said("never mind"), TURN_END, said("Hey, Mind Bot! What time is it?"), TURN_END]
    )
    assert turns == ["Hey, Mind Bot! What time is it?"]
    assert events == ["woken by Hey Mind Bot"]


async def test_after_the_timeout_the_bot_waits_for_the_phrase_again():
    f = factory(wake_phrases=["hey mindbot"], wake_timeout_secs=1.5)
    turns, events, _ = await converse(
        f,
        [
            said("hey mindbot what time is it"),
            TURN_END,
            said("and the date"),  # still awake: no phrase needed
            TURN_END,
            SleepFrame(2.0),  # no activity for longer than the timeout
            said("what about tomorrow"),
            TURN_END,
            said("hey mindbot what about tomorrow"),
            TURN_END,
        ],
    )
    assert turns == [
        "hey mindbot what time is it",
        "and the date",
        "hey mindbot what about tomorrow",
    ]
    assert events == ["woken by hey mindbot", "asleep", "woken by hey mindbot"]


async def test_a_callers_own_phrase_works_beside_the_deployments():
    f = factory(wake_phrases=["hey mindbot"])
    turns, _, _ = await converse(
        f, [said("okay jarvis lights off"), TURN_END], wake_phrases=["Okay Jarvis", None, "🎉"]
    )
    assert turns == ["okay jarvis lights off"]


async def test_odd_transcripts_neither_crash_nor_wake_the_bot():
    odd = ["", "\x00", "🎉" * 50, "\u202ehey mindbot\u202c"[::-1], "x" * 10_000, "مرحبا مايند بوت"]
    f = factory(wake_phrases=["hey mindbot"])
    frames = [x for text in odd for x in (said(text), SleepFrame(0.05))]
    turns, events, _ = await converse(f, [*frames, TURN_END, said("hey mindbot hi"), TURN_END])
    assert turns == ["hey mindbot hi"]
    assert events == ["woken by hey mindbot"]


async def test_a_call_to_an_always_on_bot_is_answered_only_after_its_wake_phrase(
    cloud_services, voice_cache
):
    texts = ("What is the capital of France", "Hello assistant what is the capital of France")
    plain, woken = [
        await asyncio.to_thread(synthesize, text, cache_dir=voice_cache) for text in texts
    ]
    # Deepgram is handed the words said: Piper's voice differs from one synthesis to the next,
    # and Whisper tiny.en (the stand-in's fallback) sometimes misses "assistant" in it.
    cloud_services.deepgram.add_transcripts(*texts)
    cloud_services.llm.script(Text("Paris is the capital of France."))
    bot = cloud_services.bot(memory=False, audio={"wake_phrases": ["hello assistant"]})
    try:
        async with serve(bot, run) as base_url, PhoneCall(ws_url(base_url)) as call:
            await call.wait_for_bot_speech(timeout=10)  # the greeting
            asked = await call.say(*plain)
            with pytest.raises(TimeoutError):  # not woken: no answer
                await call.wait_for_bot_speech(after=asked, timeout=4)
            asked = await call.say(*woken)
            answer = await call.wait_for_bot_speech(after=asked, timeout=10)
    finally:
        bot.stop()
    assert answer.latency is not None
    (request,) = [r for r in cloud_services.llm.requests if r.get("stream")]
    users = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert len(users) == 1 and "capital of France" in users[0]
