"""End to end, fully offline: a simulated Twilio caller talks with the assistant.

Real Whisper tiny.en, SmolLM2 through the supervised llama.cpp server and the Piper voice, over
a real Media Streams websocket on loopback, with the caller's speech synthesized by Piper.
"""

import re

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.session import Call, LatencyReport, TurnReport
from pipelines.assistant import run


class Recorder:
    """A session listener that keeps what sessions report."""

    def __init__(self):
        self.turns: list[tuple[Call, TurnReport]] = []
        self.latencies: list[LatencyReport] = []
        self.ended: list[tuple[Call, str]] = []

    def on_turn(self, call, turn):
        self.turns.append((call, turn))

    def on_latency(self, call, latency):
        self.latencies.append(latency)

    def on_session_ended(self, call, reason):
        self.ended.append((call, reason))


async def test_a_caller_is_greeted_and_gets_a_spoken_english_answer(offline_bot, voice_cache):
    from loguru import logger

    recorder = Recorder()
    offline_bot.listeners.append(recorder)
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(m.record["message"]), level="DEBUG")
    try:
        async with serve(offline_bot, run) as base_url:
            report = await simulated_call(
                ws_url(base_url),
                ["What is the capital of France?"],
                from_number="+15550100042",
                cache_dir=voice_cache,
            )
    finally:
        offline_bot.listeners.remove(recorder)
        logger.remove(sink)

    assert "help" in report.greeting.heard.lower()
    answer = report.turns[0]
    assert answer.speech is not None and len(answer.speech.audio) > 8000  # > 0.5 s of audio
    assert len(re.findall(r"[A-Za-z]+", answer.heard)) >= 2, answer.heard
    assert answer.latency is not None and answer.latency > 0

    user_turns = [turn for _, turn in recorder.turns if turn.role == "user"]
    assert "capital of france" in user_turns[0].text.lower()
    call = recorder.turns[0][0]
    assert call.transport == "twilio" and call.from_number == "+15550100042"
    assert any(line.endswith(f"user: {user_turns[0].text}") for line in logged)
    latency = recorder.latencies[0]
    assert "transcription" in latency.stages and "speech synthesis" in latency.stages
    assert abs(sum(latency.stages.values()) - latency.seconds) < 0.1
    assert recorder.ended[0][1] == "completed"


async def test_the_second_call_reuses_the_loaded_models(offline_bot, voice_cache):
    whisper, piper = offline_bot.models.whisper(), offline_bot.models.piper()
    async with serve(offline_bot, run) as base_url:
        report = await simulated_call(ws_url(base_url), [], cache_dir=voice_cache)
    assert report.greeting.heard
    assert offline_bot.models.whisper() is whisper and offline_bot.models.piper() is piper
