"""Writing a new processor: a keyword alert that speaks up without asking the LLM.

    uv run examples/03-new-processor.py

``EmergencyNoticeProcessor`` watches what the caller says; when they say "emergency" it makes
the bot read a fixed safety notice at once. It passes every frame on, so the assistant still
answers as usual.
"""

import asyncio

from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from mindbot.config import Settings
from mindbot.harness import serve, simulated_call, ws_url
from mindbot.logs import configure_logging
from mindbot.runtime import MindBot

NOTICE = "If this is a medical emergency, please hang up and dial nine one one."


class EmergencyNoticeProcessor(FrameProcessor):
    """Speaks a safety notice when the caller says "emergency".

    Consumes: nothing.
    Emits: ``TTSSpeakFrame(NOTICE)`` downstream, once per call.
    Passes on: every frame, unchanged and in order.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.noticed = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and not self.noticed:
            if "emergency" in frame.text.lower():
                self.noticed = True
                await self.push_frame(TTSSpeakFrame(NOTICE))


async def careful_assistant(transport, call, bot: MindBot) -> None:
    """The assistant with the notice placed between the speech recognizer and the LLM."""
    services = bot.services
    persona = bot.persona_for(call)
    user, assistant = bot.context_aggregators(LLMContext(), call)
    pipeline = Pipeline(
        [
            transport.input(),
            services.stt(),
            EmergencyNoticeProcessor(),
            user,
            services.llm(system_instruction=persona.system_instruction()),
            services.tts(),
            transport.output(),
            assistant,
        ]
    )
    worker = bot.worker(pipeline, call)
    bot.manage_connection(transport, worker, greeting=persona.greeting_for(None))
    await bot.run_worker(worker)


async def main() -> None:
    settings = Settings.load(log_level="WARNING")
    configure_logging(settings.log_level)
    bot = MindBot(settings)
    bot.start()
    try:
        async with serve(bot, careful_assistant) as base_url:
            report = await simulated_call(ws_url(base_url), ["I think this is an emergency."])
    finally:
        bot.stop()
    print(f"Caller:  {report.turns[0].said}")
    print(f"MindBot: {report.turns[0].heard}")


if __name__ == "__main__":
    asyncio.run(main())
