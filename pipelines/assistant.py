"""Assistant: MindBot's general voice assistant, speaking as the call's persona.

transport.input → STT → user context (Silero VAD, smart-turn, barge-in) → LLM → TTS
    → transport.output → assistant context

Run it as MindBot does (``mindbot run assistant --transport webrtc|daily|twilio``) or the way
Pipecat's runner runs a bot file (``python pipelines/assistant.py -t webrtc|daily|twilio``).
"""

from __future__ import annotations

import asyncio

from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMUserAggregator,
)
from pipecat.runner.types import RunnerArguments
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import BaseTransport

from mindbot.runtime import MindBot
from mindbot.session import Call
from processors.knowledge_retrieval import KnowledgeRetrieval

STILL_THERE = "Are you still there?"
GOODBYE = "It seems you've stepped away. Goodbye for now!"


def build(
    transport: BaseTransport,
    stt: STTService,
    user: LLMUserAggregator,
    llm: LLMService,
    tts: TTSService,
    assistant: LLMAssistantAggregator,
    *,
    knowledge: KnowledgeRetrieval | None = None,
) -> Pipeline:
    """The assistant's pipeline: the stages in the order audio flows through them."""
    return Pipeline(
        [
            transport.input(),
            stt,
            *([knowledge.listener()] if knowledge else []),  # starts searches on transcripts
            user,
            *([knowledge.injector()] if knowledge else []),  # passages into the context
            llm,
            tts,
            transport.output(),
            assistant,
        ]
    )


async def run(transport: BaseTransport, call: Call, bot: MindBot) -> None:
    """Run one assistant session on a connected transport until it ends."""
    services = bot.services
    persona = bot.persona_for(call)
    memory = await bot.recall(call)
    speech = bot.speech_for(persona, memory)
    kb = await asyncio.to_thread(bot.knowledge_base, persona.knowledge_base)
    knowledge = None
    if kb is not None:
        knowledge = KnowledgeRetrieval(
            kb.asearch, on_sources=lambda sources: bot.report_sources(call, sources)
        )
    tools = bot.tools_for(call, memory, kb)
    language = f"Speak {speech.language_name}." if speech.language != persona.language else ""
    instruction = "\n\n".join(
        filter(None, [persona.system_instruction(), language, tools.instruction(), memory.render()])
    )
    context = LLMContext(tools=tools.schemas()) if tools else LLMContext()
    user, assistant = bot.context_aggregators(context, call)
    llm = services.llm(system_instruction=instruction)
    tools.attach(llm)
    pipeline = build(
        transport,
        services.stt(language=speech.language),
        user,
        llm,
        services.tts(voices=speech.voices, speed=speech.speed, language=speech.language),
        assistant,
        knowledge=knowledge,
    )
    worker = bot.worker(pipeline, call)
    bot.manage_connection(transport, worker, greeting=persona.greeting_for(memory.name))
    bot.end_after_idle(user, worker, prompt=STILL_THERE, goodbye=GOODBYE)
    await bot.run_worker(worker)


async def bot(runner_args: RunnerArguments) -> None:
    """Pipecat runner entry point (``python pipelines/assistant.py -t ...``)."""
    from mindbot.runner import run_from_runner

    await run_from_runner(run, runner_args)


if __name__ == "__main__":
    from mindbot.runner import main

    main()
