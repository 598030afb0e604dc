"""Hello, MindBot: start the offline assistant and phone it from a simulated caller.

    uv run examples/01-hello.py ["What can you do?" ...]

Everything runs on this machine: Whisper hears the caller, SmolLM2 answers, Piper speaks, and
the call goes over a real Twilio Media Streams websocket on loopback.
"""

import asyncio
import sys

from mindbot.config import Settings
from mindbot.harness import serve, simulated_call, ws_url
from mindbot.logs import configure_logging
from mindbot.runtime import MindBot
from pipelines.assistant import run


async def main(questions: list[str]) -> None:
    settings = Settings.load(log_level="WARNING")
    configure_logging(settings.log_level)
    bot = MindBot(settings)
    bot.start()
    try:
        async with serve(bot, run) as base_url:
            report = await simulated_call(ws_url(base_url), questions)
    finally:
        bot.stop()
    print(f"MindBot: {report.greeting.heard}")
    for turn in report.turns:
        print(f"Caller:  {turn.said}")
        print(f"MindBot: {turn.heard}   ({turn.latency:.2f} s after the caller stopped)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["Hello! What is the capital of France?"]))
