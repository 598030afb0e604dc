"""Assistant: MindBot's general voice assistant, speaking as the call's persona.

transport.input → STT → listeners (voice commands, emotion, language, knowledge search)
→ user context (Silero VAD, smart-turn, barge-in, wake phrases) → injectors (passages,
emotion hint, reply language) → LLM → voice style → TTS → command audio cache → volume
→ transport.output → assistant context

Run it as MindBot does (``mindbot run assistant --transport webrtc|daily|twilio``) or the way
Pipecat's runner runs a bot file (``python pipelines/assistant.py -t webrtc|daily|twilio``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from loguru import logger
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMUserAggregator,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.runner.types import RunnerArguments
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_mute import BaseUserMuteStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

from mindbot.emotion import EmotionAnalyzer, EmotionTracker, bot_style, hint_for
from mindbot.kb.knowledge import KnowledgeBase
from mindbot.personas import Persona
from mindbot.preferences import LANGUAGES, WAKE_PHRASE_PREFERENCE, SpeechStyle
from mindbot.runtime import MindBot
from mindbot.session import Call
from processors.emotion_detector import EmotionDetector, EmotionHint
from processors.frames import VoiceStyleFrame
from processors.knowledge_retrieval import KnowledgeRetrieval
from processors.language_switcher import LanguageSwitcher
from processors.voice_commands import VoiceCommands
from processors.voice_style import VoiceStyleController

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
    listeners: Sequence[FrameProcessor] = (),
    injectors: Sequence[FrameProcessor] = (),
    before_tts: Sequence[FrameProcessor] = (),
    after_tts: Sequence[FrameProcessor] = (),
) -> Pipeline:
    """The assistant's pipeline: the stages in the order audio flows through them.

    Args:
        listeners: Processors that read the caller's transcripts before the user aggregator
            turns them into a turn (commands, emotion, language, knowledge search).
        injectors: Processors that add to the LLM context after the user aggregator (passages,
            hints, the reply language).
        before_tts: Processors between the LLM and the TTS (the voice style).
        after_tts: Processors between the TTS and the transport (output audio).
    """
    return Pipeline(
        [
            transport.input(),
            stt,
            *listeners,
            user,
            *injectors,
            llm,
            *before_tts,
            tts,
            *after_tts,
            transport.output(),
            assistant,
        ]
    )


@dataclass
class Blocks:
    """A session's building blocks, by where they go in the pipeline (see ``build``)."""

    listeners: list[FrameProcessor] = field(default_factory=list)
    injectors: list[FrameProcessor] = field(default_factory=list)
    after_tts: list[FrameProcessor] = field(default_factory=list)
    mute_strategies: list[BaseUserMuteStrategy] = field(default_factory=list)
    stop_strategies: list[BaseUserTurnStopStrategy] = field(default_factory=list)


def add_commands(blocks: Blocks, bot: MindBot, call: Call, speech: SpeechStyle) -> None:
    """Voice commands in the caller's language, when there is a commands file for it."""
    commands = bot.commands.get(speech.language)
    if commands is None:
        return
    voice = VoiceCommands(
        commands.match,
        replies=commands.replies,
        resolve_voice=bot.voices.resolver(bot.providers.tts),
        on_command=lambda action: bot.report_command(call, action),
    )
    blocks.listeners.append(voice.listener())  # first: command words reach no other listener
    blocks.after_tts.append(voice.player())  # keeps the last reply's audio for "repeat that"
    blocks.mute_strategies.append(voice.mute_strategy())
    blocks.stop_strategies.append(voice.turn_end_strategy())


def add_emotion(blocks: Blocks, bot: MindBot, call: Call, persona: Persona) -> None:
    """The caller's emotion per turn (stored, hinted to the LLM) and, if the persona is
    emotional, the bot's voice following it."""
    if not bot.settings.emotion_detection:
        return
    blocks.listeners.append(
        EmotionDetector(
            analyzer=EmotionAnalyzer(),
            on_emotion=lambda frame: bot.report_emotion(call, frame.as_record()),
        )
    )
    style_for = (
        (lambda label: bot_style(label, persona.emotion_styles)) if persona.emotional else None
    )
    blocks.injectors.append(
        EmotionHint(tracker=EmotionTracker(), hint_for=hint_for, style_for=style_for)
    )


def add_language(blocks: Blocks, bot: MindBot, call: Call, speech: SpeechStyle) -> bool:
    """Following the caller into another language (Deepgram only); whether it is on."""
    switching = bot.language_switching()
    logger.info(f"{call}: {switching.message}")
    if not switching.enabled:
        return False
    provider = bot.providers.tts
    switcher = LanguageSwitcher(
        language=speech.language,
        voice=speech.voices.get(provider),
        voice_for=lambda code: (v := bot.voices.for_language(code, provider)) and v.id,
        names=LANGUAGES,
        languages=switching.languages,
    )
    blocks.listeners.append(switcher.listener())
    blocks.injectors.append(switcher.injector())
    return True


def add_knowledge(blocks: Blocks, bot: MindBot, call: Call, kb: KnowledgeBase | None) -> None:
    """Passages from the persona's knowledge base, searched while the caller speaks."""
    if kb is None:
        return
    knowledge = KnowledgeRetrieval(
        kb.asearch, on_sources=lambda sources: bot.report_sources(call, sources)
    )
    blocks.listeners.append(knowledge.listener())  # starts searches on transcripts
    blocks.injectors.insert(0, knowledge.injector())  # passages into the context


async def run(transport: BaseTransport, call: Call, bot: MindBot) -> None:
    """Run one assistant session on a connected transport until it ends."""
    services = bot.services
    persona = bot.persona_for(call)
    memory = await bot.recall(call)
    speech = bot.speech_for(persona, memory)
    kb = await asyncio.to_thread(bot.knowledge_base, persona.knowledge_base)
    vocabulary = await asyncio.to_thread(bot.vocabulary_for, memory, kb)

    blocks = Blocks()
    add_commands(blocks, bot, call, speech)
    add_emotion(blocks, bot, call, persona)
    multilingual = add_language(blocks, bot, call, speech)
    add_knowledge(blocks, bot, call, kb)

    tts = services.tts(voices=speech.voices, speed=speech.speed, language=speech.language)
    style = VoiceStyleController(
        settings_type=type(tts).Settings,
        speed=speech.speed,
        emotion=persona.voice_emotion,
        emotional=persona.emotional,
    )
    tools = bot.tools_for(call, memory, kb)
    language = f"Speak {speech.language_name}." if speech.language != persona.language else ""
    instruction = "\n\n".join(
        filter(None, [persona.system_instruction(), language, tools.instruction(), memory.render()])
    )
    context = LLMContext(tools=tools.schemas()) if tools else LLMContext()
    wake_phrase = memory.preferences.get(WAKE_PHRASE_PREFERENCE)
    user, assistant = bot.context_aggregators(
        context,
        call,
        wake_phrases=[wake_phrase] if wake_phrase else (),
        mute_strategies=blocks.mute_strategies,
        stop_strategies=blocks.stop_strategies,
    )
    llm = services.llm(system_instruction=instruction)
    tools.attach(llm)
    pipeline = build(
        transport,
        services.stt(language=speech.language, vocabulary=vocabulary, multilingual=multilingual),
        user,
        llm,
        tts,
        assistant,
        listeners=blocks.listeners,
        injectors=blocks.injectors,
        before_tts=[style],
        after_tts=[*blocks.after_tts, style.output_volume()],
    )
    worker = bot.worker(pipeline, call)

    async def restyle(**changes) -> None:  # the API's voice changes, applied like commands'
        await worker.queue_frames([VoiceStyleFrame(source="command", **changes)])

    bot.voice_control(call, restyle)
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
