"""Every session and completed turn is stored as it happens, and survives a SIGKILL."""

import asyncio
import os
import signal

from mindbot.callsim import PhoneCall
from mindbot.harness import free_port, serve, simulated_call, ws_url
from mindbot.speech import synthesize
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run

from conftest import ServerProcess, wait_until


async def test_a_call_is_stored_turn_by_turn_with_its_caller(cloud_services, voice_cache):
    cloud_services.llm.script(Text("Paris is the capital of France."), Text("It is cold."))
    bot = cloud_services.bot()
    path = bot.settings.data_dir / "mindbot.db"
    try:
        async with serve(bot, run) as base_url:
            await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?", "What is the weather like?"],
                from_number="+15550107777",
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()

    storage = SQLiteStorage(path)
    user = storage.find_user("+15550107777")
    assert user is not None
    (session,) = storage.sessions_for_user(user.id)
    assert (session.transport, session.pipeline, session.persona) == (
        "twilio",
        "assistant",
        "mindbot",
    )
    assert session.end_reason == "completed" and session.ended_at is not None
    turns = storage.turns(session.id)
    assert [t.role for t in turns] == ["assistant", "user", "assistant", "user", "assistant"]
    assert turns[0].text.startswith("Hi, I'm MindBot")
    assert "capital of france" in turns[1].text.lower()
    assert turns[2].text == "Paris is the capital of France."
    assert turns[2].latency_secs is not None and "speech synthesis" in turns[2].stages
    stats = storage.session_stats(session.id)
    assert stats["turns"] == 5 and stats["interruptions"] == 0
    assert stats["end_reason"] == "completed" and stats["duration_secs"] > 0
    assert (
        stats["mean_latency_secs"] > 0 and stats["p95_latency_secs"] >= stats["mean_latency_secs"]
    )
    storage.close()


async def test_killing_mindbot_mid_call_loses_at_most_the_turn_in_flight(
    cloud_services, voice_cache, tmp_path
):
    cloud_services.llm.script(Text("Paris is the capital of France."))
    port = free_port()
    settings = cloud_services.settings | {"data_dir": tmp_path}
    command = ["-m", "mindbot", "run", "--transport", "twilio", "--host", "127.0.0.1"]
    server = ServerProcess([*command, "--port", str(port)], settings, port)
    question, rate = synthesize("What is the capital of France?", cache_dir=voice_cache)
    follow_up, _ = synthesize("And how many people live there?", cache_dir=voice_cache)
    try:
        await server.wait_ready()
        async with PhoneCall(ws_url(server.base_url), from_number="+15550108888") as call:
            await call.wait_for_bot_speech(timeout=15)
            asked = await call.say(question, rate)
            await call.wait_for_bot_speech(after=asked, timeout=15)  # the reply, to its end
            speaking = asyncio.create_task(call.say(follow_up, rate))
            await asyncio.sleep(1.0)  # mid-sentence
            os.kill(server.process.pid, signal.SIGKILL)
            await asyncio.wait_for(call.closed.wait(), 10)
            speaking.cancel()
    finally:
        await server.stop()
    assert server.process.returncode == -signal.SIGKILL

    storage = SQLiteStorage(tmp_path / "mindbot.db")
    user = storage.find_user("+15550108888")
    assert user is not None
    (session,) = storage.sessions_for_user(user.id)
    assert session.ended_at is None  # it never ended: the process died
    turns = storage.turns(session.id)
    assert [t.text for t in turns[:3]] == [
        "Hi, I'm MindBot. How can I help you today?",
        turns[1].text,
        "Paris is the capital of France.",
    ]
    assert "capital of france" in turns[1].text.lower()
    storage.close()
