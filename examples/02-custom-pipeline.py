"""A custom pipeline from building blocks: the assistant with a call time limit.

    uv run examples/02-custom-pipeline.py [SECONDS]

It composes the assistant's stages with ``CallTimeLimitProcessor`` from ``processors/``: when
the limit is reached the bot says goodbye and hangs up. A simulated caller phones it.
"""

import asyncio
import sys

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext

from mindbot.callsim import PhoneCall
from mindbot.config import Settings
from mindbot.harness import serve, ws_url
from mindbot.logs import configure_logging
from mindbot.runtime import MindBot
from processors.call_time_limit import CallTimeLimitProcessor

LIMIT_SECS = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0


async def timed_assistant(transport, call, bot: MindBot) -> None:
    """The assistant, cut off politely after ``LIMIT_SECS``."""
    services = bot.services
    persona = bot.persona_for(call)
    user, assistant = bot.context_aggregators(LLMContext(), call)
    pipeline = Pipeline(
        [
            transport.input(),
            services.stt(),
            user,
            services.llm(system_instruction=persona.system_instruction()),
            CallTimeLimitProcessor(max_secs=LIMIT_SECS),
            services.tts(),
            transport.output(),
            assistant,
        ]
    )
    worker = bot.worker(pipeline, call)
    bot.manage_connection(transport, worker, greeting=persona.greeting_for(None))
    await bot.run_worker(worker)


async def main() -> None:
    settings = Settings.load(log_level="WARNING", user_idle_secs=0)
    configure_logging(settings.log_level)
    bot = MindBot(settings)
    bot.start()
    try:
        async with serve(bot, timed_assistant) as base_url:
            async with PhoneCall(ws_url(base_url)) as call:
                await call.wait_for_bot_speech()
                print(f"{call.now():5.1f} s  MindBot greeted the caller")
                await asyncio.wait_for(call.closed.wait(), LIMIT_SECS + 30)
                print(f"{call.now():5.1f} s  MindBot said goodbye and ended the call")
    finally:
        bot.stop()


if __name__ == "__main__":
    asyncio.run(main())
