"""End to end on the cloud code path: Deepgram, OpenAI and Cartesia clients against stand-ins."""

import asyncio

from mindbot.callsim import PhoneCall
from mindbot.harness import serve, simulated_call, ws_url
from mindbot.personas import SHIPPED_DIR, PersonaLibrary
from mindbot.runtime import APOLOGY
from mindbot.speech import synthesize
from mindbot.standins import MidStreamError, Text
from pipelines.assistant import run

from conftest import wait_until


async def test_a_call_runs_through_the_cloud_clients(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    bot = cloud_services.bot()
    assert (bot.providers.stt, bot.providers.llm, bot.providers.tts) == (
        "deepgram",
        "openai",
        "cartesia",
    )
    try:
        async with serve(bot, run) as base_url:
            report = await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?"],
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()

    connection = cloud_services.deepgram.connections[0]
    assert connection["headers"]["authorization"] == "Token dg-test"
    assert connection["query"]["sample_rate"] == ["16000"]

    request = cloud_services.llm.requests[0]
    assert request["model"] == "gpt-test"
    instruction = PersonaLibrary([SHIPPED_DIR]).default.system_instruction()
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][0]["content"].startswith(instruction)
    user = [m["content"] for m in request["messages"] if m["role"] == "user"]
    assert "capital of france" in user[-1].lower()
    assert cloud_services.llm.headers[0]["authorization"] == "Bearer sk-test"

    spoken = " ".join(r.get("transcript", "") for r in cloud_services.cartesia.requests)
    assert "Hi, I'm MindBot" in spoken
    assert "Paris is the capital of France." in spoken
    assert report.turns[0].speech is not None and report.turns[0].latency > 0


async def test_the_caller_can_barge_in_and_the_bot_stops(cloud_services, voice_cache):
    long_answer = " ".join(f"This is sentence number {n} of a very long answer." for n in range(30))
    cloud_services.llm.script(Text(long_answer))
    question, rate = synthesize("Tell me a long story.", cache_dir=voice_cache)
    interruption, _ = synthesize("Wait, wait, please stop talking now.", cache_dir=voice_cache)
    bot = cloud_services.bot()
    turns = TurnRecorder()
    bot.listeners.append(turns)
    try:
        async with serve(bot, run) as base_url:
            async with PhoneCall(ws_url(base_url)) as call:
                await call.wait_for_bot_speech(timeout=10)
                asked_at = await call.say(question, rate)
                answer = await call.wait_for_bot_speech(after=asked_at, quiet=0, timeout=10)
                await asyncio.sleep(1.0)  # the bot is mid-answer
                talk_started = call.now()
                await call.say(interruption, rate)
                clears = call.clears_between(talk_started, call.now())
                assert clears, "the bot never sent clear while the caller talked over it"
                assert answer.start < clears[0]
                await asyncio.sleep(2.0)
                # The long answer (about a minute of speech) did not go on playing.
                after_clear = call.bot_audio_after(clears[0])
                assert len(after_clear) / 2 / 8000 < 10.0
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()
    assert cloud_services.cartesia.cancelled, "the TTS context was not cancelled"
    story = next(t for t in turns.assistant if "sentence number" in t.text)
    assert story.interrupted
    assert len(story.text) < len(long_answer) / 2


class TurnRecorder:
    """A session listener that keeps the assistant's turns."""

    def __init__(self):
        self.assistant = []

    def on_turn(self, call, turn):
        if turn.role == "assistant":
            self.assistant.append(turn)


async def test_when_the_llm_fails_the_caller_hears_an_apology_and_the_call_goes_on(
    cloud_services, voice_cache
):
    cloud_services.llm.script(MidStreamError("overloaded"), Text("Paris is the capital of France."))
    bot = cloud_services.bot()
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?", "What is the capital of France?"],
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()
    spoken = [r.get("transcript", "") for r in cloud_services.cartesia.requests]
    assert any(APOLOGY in text for text in spoken)
    assert any("Paris is the capital of France." in text for text in spoken)
    assert len([r for r in cloud_services.llm.requests if r.get("stream")]) == 2
