"""Voice commands in a phone call, on the cloud code path (Deepgram, OpenAI and Cartesia
stand-ins): "stop" silences the bot, "repeat that" replays its last answer, "goodbye" hangs
up after a goodbye, and none of them reaches the LLM.

The pipeline is the assistant's (``pipelines/assistant.py``), which carries the voice
commands.
"""

from __future__ import annotations

import asyncio

import numpy as np

from mindbot.audio import first_voiced_offset, last_voiced_end
from mindbot.callsim import PhoneCall
from mindbot.harness import serve, ws_url
from mindbot.speech import synthesize
from mindbot.standins import Text
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run

from conftest import wait_until

LONG_ANSWER = " ".join(f"This is sentence number {n} of a very long answer." for n in range(30))
SHORT_ANSWER = "Paris is the capital of France."


class CommandLog:
    """A session listener that keeps the commands reported."""

    def __init__(self):
        self.actions: list[str] = []

    def on_command(self, _call, action: str) -> None:
        self.actions.append(action)


def voiced(pcm: bytes) -> np.ndarray:
    """The samples between the first and the last non-silent 10 ms (8 kHz PCM)."""
    start, end = first_voiced_offset(pcm, 8000), last_voiced_end(pcm, 8000)
    assert start is not None and end is not None, "no bot speech in this audio"
    return np.frombuffer(pcm, dtype=np.int16)[int(start * 8000) : int(end * 8000)]


def same_sound(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two recordings are the same audio: equal length (±30 ms), correlated."""
    n = min(len(a), len(b))
    if abs(len(a) - len(b)) > 240 or n == 0:
        return False
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)) > 0.9


def streamed(llm) -> list[dict]:
    return [r for r in llm.requests if r.get("stream")]


async def test_stop_repeat_and_goodbye_are_acted_on_without_the_llm(cloud_services, voice_cache):
    llm, cartesia = cloud_services.llm, cloud_services.cartesia
    llm.script(Text(LONG_ANSWER), Text(SHORT_ANSWER))
    lines = {
        text: await asyncio.to_thread(synthesize, text, cache_dir=voice_cache)
        for text in [
            "Tell me a long story.",
            "Please stop.",
            "What is the capital of France?",
            "Could you repeat that?",
            "Goodbye.",
        ]
    }
    log = CommandLog()
    bot = cloud_services.bot(memory=False)
    bot.listeners.append(log)
    try:
        async with serve(bot, run) as base_url, PhoneCall(ws_url(base_url)) as call:
            await call.wait_for_bot_speech(timeout=10)

            # "Stop" while the bot reads a long answer: it goes silent and stays silent.
            asked = await call.say(*lines["Tell me a long story."])
            await call.wait_for_bot_speech(after=asked, quiet=0, timeout=10)
            await asyncio.sleep(1.0)
            stopped = await call.say(*lines["Please stop."])
            await asyncio.sleep(2.5)
            assert len(call.bot_audio_after(stopped + 0.5)) / 2 / 8000 < 0.3
            assert call.clears_between(asked, call.now())
            assert len(streamed(llm)) == 1, "'stop' reached the LLM"

            # A short answer, then "repeat that": the same audio again, with no LLM and no TTS.
            asked = await call.say(*lines["What is the capital of France?"])
            answer = await call.wait_for_bot_speech(after=asked, timeout=10)
            spoken_before = len(cartesia.requests)
            asked = await call.say(*lines["Could you repeat that?"])
            replay = await call.wait_for_bot_speech(after=asked, timeout=10)
            assert same_sound(voiced(replay.audio), voiced(answer.audio))
            assert len(cartesia.requests) == spoken_before, "the replay went through the TTS"
            assert len(streamed(llm)) == 2

            # "Goodbye": a goodbye, then the call ends.
            await call.say(*lines["Goodbye."])
            await asyncio.wait_for(call.closed.wait(), timeout=15)
            await wait_until(lambda: not bot.active_sessions)
    finally:
        bot.stop()

    said = " ".join(r.get("transcript", "") for r in cartesia.requests)
    assert "Goodbye, and thanks for calling!" in said
    assert len(streamed(llm)) == 2
    users = [m["content"] for m in streamed(llm)[1]["messages"] if m["role"] == "user"]
    assert not any("stop" in str(content).lower() for content in users)
    assert log.actions == ["stop", "repeat", "goodbye"]

    # Stored: the commands as events of the session, and no empty user turns for them.
    storage = SQLiteStorage(bot.settings.data_dir / "mindbot.db")
    try:
        (session,) = {e["data"]["session_id"] for e in storage.events("voice.command")}
        actions = [e["data"]["action"] for e in storage.events("voice.command")]
        turns = storage.turns(session)
    finally:
        storage.close()
    assert actions == ["stop", "repeat", "goodbye"]
    story, question = [t.text for t in turns if t.role == "user"]
    assert "long story" in story.lower() and "capital of france" in question.lower()
    assert cartesia.cancelled, "the long answer's TTS was not cancelled"
