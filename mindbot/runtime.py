"""The process-wide MindBot runtime: settings, shared models, the local LLM and running sessions.

One ``MindBot`` lives per process. The composition root builds it from ``Settings``, calls
``start()`` (which loads the models and, for ``llm=local`` without a base URL, starts and
supervises the llama.cpp server), hands it to the server or runner, and calls ``stop()`` at the
end. Pipelines use it to get their services and to run their worker; everything a session
reports goes to the registered ``SessionListener`` objects.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import EndWorkerFrame, ErrorFrame, MetricsFrame, TTSSpeakFrame
from pipecat.metrics.metrics import LLMUsageMetricsData, STTUsageMetricsData, TTSUsageMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_mute import BaseUserMuteStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy
from pipecat.workers.runner import WorkerRunner

from mindbot.barge_in import BargeInPause
from mindbot.clients import http_client
from mindbot.config import Providers, Settings
from mindbot.errors import ConfigError
from mindbot.kb.knowledge import KnowledgeBase
from mindbot.memory import TIMEZONE_PREFERENCE, MemoryContext, MemoryService, memory_tools
from mindbot.personas import SHIPPED_DIR, Persona, PersonaLibrary
from mindbot.preferences import SpeechStyle
from mindbot.recorder import SessionRecorder
from mindbot.services import LLMEndpoint, ServiceFactory, SharedModels
from mindbot.session import (
    Call,
    ErrorReport,
    LatencyReport,
    SessionListener,
    TurnReport,
    UsageReport,
)
from mindbot.storage import AsyncStorageWriter, SQLiteStorage
from mindbot.tools import ToolContext, ToolRegistry, ToolSession
from mindbot.turn_text import TextCheckedTurnStopStrategy
from mindbot.vocabulary import build_vocabulary
from mindbot.voice_commands import COMMANDS_DIR, CommandSet, available_languages, load_commands
from mindbot.voices import (
    LanguageSwitching,
    VoiceCatalog,
    catalog_speech_style,
    language_switching,
)

PIPELINE_INPUT_RATE = 16000
"""Whisper reads 16 kHz PCM, so the pipeline input runs at 16 kHz on every transport."""

PHONE_OUTPUT_RATE = 8000
"""Twilio's line is 8 kHz mu-law; producing more would only be resampled away."""

APOLOGY = "Sorry, I had trouble answering that. Could you say it again?"

PipelineRun = Callable[[BaseTransport, Call, "MindBot"], Awaitable[None]]
"""A pipeline's entry point: run one session on a connected transport."""

VoiceControl = Callable[..., Awaitable[None]]
"""Changes a live session's voice: ``await control(voice=..., speed=..., volume=...)``."""


def latency_observer(report: Callable[[LatencyReport], None]) -> UserBotLatencyObserver:
    """Pipecat's ``UserBotLatencyObserver``, reporting each reply's latency with its stages.

    Pipecat announces a reply's latency (``on_latency_measured``) just before its breakdown
    (``on_latency_breakdown``); they are paired here into one ``LatencyReport``. The greeting,
    which is timed from the client connecting rather than from the user's silence, is skipped.
    """
    observer = UserBotLatencyObserver()
    measured: list[float] = []

    @observer.event_handler("on_latency_measured")
    async def _measured(_observer, seconds: float):
        measured.append(seconds)

    @observer.event_handler("on_latency_breakdown")
    async def _breakdown(_observer, breakdown: LatencyBreakdown):
        if not measured:
            return
        stages: dict[str, float] = {}
        for part in breakdown.contributions:
            stages[part.label] = stages.get(part.label, 0.0) + part.duration_secs
        report(LatencyReport(seconds=measured.pop(), stages=stages))
        measured.clear()

    return observer


class UsageObserver(BaseObserver):
    """Turns Pipecat's usage metrics (``enable_usage_metrics``) into ``UsageReport`` objects.

    Each ``MetricsFrame`` is seen once, where it is first pushed; the provider is the one the
    settings resolved for that service.

    Args:
        providers: The session's resolved providers.
        report: Receives each usage report.
    """

    def __init__(self, providers: Providers, report: Callable[[UsageReport], None]):
        super().__init__(observe_every_push=False)
        self._providers = providers
        self._report = report

    async def on_push_frame(self, data: FramePushed):
        if not isinstance(data.frame, MetricsFrame):
            return
        for item in data.frame.data:
            if usage := self._usage(item):
                self._report(usage)

    def _usage(self, item) -> UsageReport | None:
        p = self._providers
        if isinstance(item, LLMUsageMetricsData):
            return UsageReport(
                "llm",
                p.llm,
                item.model,
                prompt_tokens=item.value.prompt_tokens,
                completion_tokens=item.value.completion_tokens,
            )
        if isinstance(item, TTSUsageMetricsData):
            return UsageReport("tts", p.tts, item.model, characters=item.value)
        if isinstance(item, STTUsageMetricsData):
            return UsageReport("stt", p.stt, item.model, audio_secs=item.value.audio_seconds)
        return None


def error_kind(processor: object) -> str:
    """Which part of a pipeline a failing processor is (``ErrorReport.kind``)."""
    if isinstance(processor, LLMService):
        return "llm"
    if isinstance(processor, STTService):
        return "stt"
    if isinstance(processor, TTSService):
        return "tts"
    if isinstance(processor, BaseInputTransport | BaseOutputTransport):
        return "transport"
    return "pipeline"


class MindBot:
    """The process-wide runtime shared by every session.

    Args:
        settings: MindBot's settings.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.providers: Providers = settings.resolve()
        self.models = SharedModels(settings)
        self.personas = PersonaLibrary([SHIPPED_DIR, *settings.persona_dirs])
        self.personas.get(settings.persona)  # an unknown default persona stops start-up
        self.tools = ToolRegistry.default(settings.tools)
        self._check_persona_tools()
        self.voices = VoiceCatalog.load(user_file=settings.voices_file)
        self.commands: dict[str, CommandSet] = {}
        if settings.voice_commands:  # a broken commands file stops start-up
            folder = settings.voice_commands_dir or COMMANDS_DIR
            self.commands = {
                code: load_commands(code, folder=folder) for code in available_languages(folder)
            }
        self.listeners: list[SessionListener] = []
        self._llm_server = None
        self._factory: ServiceFactory | None = None
        self.storage: SQLiteStorage | None = None
        self.memory: MemoryService | None = None
        self.learning: set[asyncio.Task] = set()
        self._writer: AsyncStorageWriter | None = None
        self._active: dict[str, Call] = {}
        self._voice_controls: dict[str, VoiceControl] = {}
        self._barge_in_pauses: dict[str, BargeInPause] = {}
        self._closers: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        self._embedder = None
        self._knowledge: dict[str, KnowledgeBase] = {}
        self._knowledge_lock = threading.Lock()
        self._kb_terms: dict[str, tuple[tuple[str, ...], list[str]]] = {}

    def _check_persona_tools(self) -> None:
        for name in self.personas.names():
            if unknown := self.tools.unknown(self.personas.get(name).tools):
                raise ConfigError(
                    f"persona {name!r} ({self.personas.source(name)}) lists unknown tools: "
                    f"{', '.join(unknown)}; known: {', '.join(sorted(self.tools.names))}"
                )

    @property
    def services(self) -> ServiceFactory:
        """The factory of per-session services (available after ``start()``)."""
        if self._factory is None:
            raise RuntimeError("MindBot.start() must be called before sessions run")
        return self._factory

    @property
    def active_sessions(self) -> list[Call]:
        """The calls in progress."""
        return list(self._active.values())

    def start(self) -> None:
        """Load the shared models and start the local LLM server when needed (blocking).

        Raises:
            ConfigError: A model file is missing.
            LocalLLMError: The local LLM server did not start.
        """
        if self._factory is not None:
            return
        s = self.settings
        logger.info(
            f"MindBot: STT={self.providers.stt} LLM={self.providers.llm} TTS={self.providers.tts}"
        )
        if s.storage:
            self._open_storage()
        self.models.warm_up(
            self.providers,
            smart_turn=s.audio.smart_turn,
            text_turn_check=s.audio.text_turn_check,
        )
        self._factory = ServiceFactory(s, self.providers, self.models, self._llm_endpoint())

    def stop(self) -> None:
        """Stop the local LLM server, if MindBot started one, and close storage."""
        if self._llm_server is not None:
            self._llm_server.stop()
            self._llm_server = None
        if self._writer is not None:
            self.listeners = [x for x in self.listeners if not isinstance(x, SessionRecorder)]
            self._writer.close()
            self._writer = None
        if self.storage is not None:
            self.storage.close()
            self.storage = None
            self.memory = None
        with self._knowledge_lock:
            for kb in self._knowledge.values():
                kb.close()
            self._knowledge.clear()
        self._factory = None

    def _open_storage(self) -> None:
        path = self.settings.database_path or self.settings.data_dir / "mindbot.db"
        self.storage = SQLiteStorage(path)
        self._writer = AsyncStorageWriter(self.storage)
        self.listeners.append(SessionRecorder(self.storage, self._writer))
        self.memory = (
            MemoryService(self.storage, resolve_voice=self.voices.resolver(self.providers.tts))
            if self.settings.memory
            else None
        )
        logger.info(f"MindBot: conversations are stored in {path}")

    def _llm_endpoint(self) -> LLMEndpoint:
        s = self.settings
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else "not-needed"
        if self.providers.llm == "openai":
            return LLMEndpoint(base_url=s.llm_base_url, model=s.llm_model, api_key=key)
        if s.llm_base_url:
            return LLMEndpoint(base_url=s.llm_base_url, model=s.llm_model, api_key=key)
        from mindbot.llm_server import LlamaServer, smollm2_model_path

        server = LlamaServer(
            model_path=s.local_llm_model_path or smollm2_model_path(),
            n_threads=s.local_llm_threads,
            n_ctx=s.local_llm_context,
            startup_timeout=s.local_llm_startup_timeout,
        )
        server.start()
        self._llm_server = server
        return LLMEndpoint(base_url=server.base_url, model=server.model_alias, api_key="local")

    def persona_for(self, call: Call) -> Persona:
        """The call's persona: from its request body, else by dialled number, else the default.

        A persona asked for by name that does not exist is logged, and the default is used.
        Once a session has started, its persona is ``call.persona``.
        """
        if call.persona in self.personas.names():
            return self.personas.get(call.persona)
        name = call.body.get("persona") or self.settings.persona_by_number.get(call.to_number or "")
        if isinstance(name, str) and name in self.personas.names():
            return self.personas.get(name)
        if name:
            logger.warning(f"{call}: unknown persona {str(name)[:40]!r}; using the default")
        return self.personas.get(self.settings.persona)

    def voice_control(self, call: Call, control: VoiceControl) -> None:
        """Register how a live session's voice is changed from outside the call (the API).

        The pipeline owns the frames, so it gives the function; ``restyle`` calls it.
        """
        self._voice_controls[call.session_id] = control

    async def restyle(self, session_id: str, **changes: Any) -> bool:
        """Change a live session's voice (``voice`` id, ``speed``, ``volume``), from the bot's
        next utterance.

        Returns:
            Whether the session is running in this process with a voice control.
        """
        control = self._voice_controls.get(session_id)
        if control is None:
            return False
        await control(**changes)
        return True

    def local_llm_healthy(self) -> bool | None:
        """Whether the supervised llama.cpp server answers (``None`` when MindBot runs none)."""
        return None if self._llm_server is None else self._llm_server.is_healthy()

    # --- Building blocks for pipelines -------------------------------------------------------

    def context_aggregators(
        self,
        context: LLMContext,
        call: Call,
        *,
        wake_phrases: Sequence[str] = (),
        mute_strategies: Sequence[BaseUserMuteStrategy] = (),
        stop_strategies: Sequence[BaseUserTurnStopStrategy] = (),
    ) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
        """The session's user and assistant aggregators, reporting turns to the listeners.

        The user side carries Silero VAD, smart-turn end-of-turn detection and barge-in; the
        assistant side summarizes older turns with Pipecat's context summarization, so a long
        call stays within the model's context.

        Args:
            context: The session's LLM context.
            call: The session's call.
            wake_phrases: The caller's own wake phrases, besides ``audio.wake_phrases``.
            mute_strategies: More user mute strategies (e.g. the voice commands').
            stop_strategies: More user-turn stop strategies (e.g. the voice commands').
        """
        params = self.services.user_params(wake_phrases=wake_phrases)
        params.user_mute_strategies.extend(mute_strategies)
        if stop_strategies:
            turns = params.user_turn_strategies
            assert turns is not None and turns.stop is not None
            turns.stop.extend(stop_strategies)
        user, assistant = LLMContextAggregatorPair(
            context,
            user_params=params,
            assistant_params=self.services.assistant_params(),
        )
        self._connect_barge_in_pause(params, call, wake_phrases=wake_phrases)
        strategies = params.user_turn_strategies
        for strategy in (strategies.stop if strategies else None) or []:
            if isinstance(strategy, TextCheckedTurnStopStrategy):

                @strategy.event_handler("on_turn_end_overruled")
                async def _overruled(_strategy, decision):
                    self._notify("on_end_of_turn_overruled", call, decision)

        @user.event_handler("on_user_turn_stopped")
        async def _user_turn(_aggregator, _strategy, message):
            turn = TurnReport(
                role="user", text=message.content or "", started_at=message.timestamp or None
            )
            self._report_turn(call, turn)

        @assistant.event_handler("on_assistant_turn_stopped")
        async def _assistant_turn(_aggregator, message):
            turn = TurnReport(
                role="assistant", text=message.content or "", interrupted=message.interrupted
            )
            self._report_turn(call, turn)

        return user, assistant

    def _connect_barge_in_pause(
        self, params: LLMUserAggregatorParams, call: Call, *, wake_phrases: Sequence[str]
    ) -> None:
        """Feed the session's VAD to its transport's barge-in pause (``mindbot.barge_in``).

        Only where a caller's speech interrupts the bot at once: with ``audio.barge_in``
        ``always`` and no wake phrase (the deployment's, or the caller's own).
        """
        from mindbot.local_services import SharedSileroVADAnalyzer

        pause = self._barge_in_pauses.get(call.session_id)
        audio = self.settings.audio
        if pause is None or audio.barge_in != "always" or audio.wake_phrases or wake_phrases:
            return
        if isinstance(params.vad_analyzer, SharedSileroVADAnalyzer):
            params.vad_analyzer.listen_for_onset(pause.heard)

    def output_rate(self, call: Call) -> int:
        """The pipeline's output sample rate: 8 kHz on a phone line, else ``audio``'s."""
        if call.transport == "twilio":
            return PHONE_OUTPUT_RATE
        return self.settings.audio.output_sample_rate

    def worker(self, pipeline: Pipeline, call: Call) -> PipelineWorker:
        """A ``PipelineWorker`` for one session, with metrics and latency reporting on.

        Args:
            pipeline: The session's pipeline.
            call: The session's call.
        """

        def report(latency: LatencyReport) -> None:
            logger.info(f"{call}: voice-to-voice {latency.seconds:.3f}s (pipeline side)")
            self._notify("on_latency", call, latency)

        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=PIPELINE_INPUT_RATE,
                audio_out_sample_rate=self.output_rate(call),
                enable_metrics=True,
                enable_usage_metrics=True,
            ),
            observers=[
                latency_observer(report),
                UsageObserver(self.providers, lambda usage: self._notify("on_usage", call, usage)),
            ],
            # RTVI talks to browser clients; a phone line would receive its JSON as noise.
            enable_rtvi=call.transport != "twilio",
            idle_timeout_secs=self.settings.session_idle_timeout,
            conversation_id=call.session_id,
            enable_tracing=self.settings.monitoring.tracing_enabled(),
        )
        last_apology = 0.0

        @worker.event_handler("on_pipeline_error")
        async def _error(worker: PipelineWorker, frame: ErrorFrame):
            nonlocal last_apology
            # Provider errors can quote what was sent (the caller's words): details at DEBUG.
            logger.warning(f"{call}: {frame.processor or 'pipeline'} failed")
            logger.debug(f"{call}: {frame.processor or 'pipeline'} failed: {frame.error}")
            error = ErrorReport(
                error_kind(frame.processor),  # type: ignore[arg-type]
                str(frame.processor or "pipeline"),
                str(frame.error),
                fatal=bool(frame.fatal),
            )
            self._notify("on_error", call, error)
            # A failed LLM reply would otherwise leave the caller in silence.
            if isinstance(frame.processor, LLMService) and time.monotonic() - last_apology > 5:
                last_apology = time.monotonic()
                await worker.queue_frames([TTSSpeakFrame(APOLOGY)])

        return worker

    def manage_connection(
        self, transport: BaseTransport, worker: PipelineWorker, *, greeting: str | None
    ) -> None:
        """Greet the caller as soon as they connect, and end the session when they leave.

        Args:
            transport: The session's transport.
            worker: The session's worker.
            greeting: What the bot says first (``None``: the caller speaks first).
        """

        @transport.event_handler("on_client_connected")
        async def _connected(_transport, _client):
            if greeting:
                await worker.queue_frames([TTSSpeakFrame(greeting)])

        @transport.event_handler("on_client_disconnected")
        async def _disconnected(_transport, _client):
            await worker.cancel()

    def end_after_idle(
        self, user: LLMUserAggregator, worker: PipelineWorker, *, prompt: str, goodbye: str
    ) -> None:
        """Ask whether the caller is still there after silence, and end the call after more.

        The silence is ``MINDBOT_USER_IDLE_SECS`` (0 turns this off).

        Args:
            user: The session's user aggregator.
            worker: The session's worker.
            prompt: What to say after the first idle period.
            goodbye: What to say before hanging up after the second.
        """
        idle_count = 0

        @user.event_handler("on_user_turn_started")
        async def _active(_aggregator, _strategy):
            nonlocal idle_count
            idle_count = 0

        @user.event_handler("on_user_turn_idle")
        async def _idle(_aggregator):
            nonlocal idle_count
            idle_count += 1
            if idle_count == 1:
                await worker.queue_frames([TTSSpeakFrame(prompt)])
            else:
                await worker.queue_frames([TTSSpeakFrame(goodbye), EndWorkerFrame("idle")])

    async def run_session(self, run: PipelineRun, transport: BaseTransport, call: Call) -> str:
        """Run one session to its end; a failure is logged and never propagates.

        Args:
            run: The pipeline's entry point.
            transport: The session's connected transport.
            call: The session's call.

        Returns:
            Why it ended: ``completed``, ``cancelled`` or ``error``.
        """
        call.pipeline = call.pipeline or run.__module__.rsplit(".", 1)[-1]
        call.persona = call.persona or self.persona_for(call).name
        if self.storage is not None and call.identity and call.stored_user_id is None:
            user = await asyncio.to_thread(self.storage.user_for_identity, *call.identity)
            call.stored_user_id = user.id
        self._active[call.session_id] = call
        pause = getattr(transport, "barge_in_pause", None)
        if isinstance(pause, BargeInPause):
            self._barge_in_pauses[call.session_id] = pause
            pause.on_outcome = lambda outcome: self._notify("on_barge_in_pause", call, outcome)
        started = time.monotonic()
        logger.info(f"{call}: started")
        self._notify("on_session_started", call)
        reason = "completed"
        try:
            await run(transport, call, self)
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception:
            reason = "error"
            logger.exception(f"{call}: failed")
        finally:
            self._active.pop(call.session_id, None)
            self._voice_controls.pop(call.session_id, None)
            self._barge_in_pauses.pop(call.session_id, None)
            for close in self._closers.pop(call.session_id, []):
                try:
                    await close()
                except Exception as e:
                    logger.debug(f"{call}: closing a session resource failed ({e!r})")
            logger.info(f"{call}: ended ({reason}) after {time.monotonic() - started:.1f}s")
            self._notify("on_session_ended", call, reason)
            if self.memory is not None and call.stored_user_id is not None:
                task = asyncio.create_task(self._learn(call), name=f"learn {call}")
                self.learning.add(task)
                task.add_done_callback(self.learning.discard)
        return reason

    def tools_for(
        self, call: Call, memory: MemoryContext, knowledge: KnowledgeBase | None = None
    ) -> ToolSession:
        """The session's LLM tools: its persona's tools, a known caller's memory by voice, and
        ``search_knowledge_base`` when the persona has a knowledge base.

        Tools the settings do not configure are left out. The local llama.cpp server cannot
        stream tool calls, so with it there are none. Put ``schemas()`` in the session's
        ``LLMContext`` and ``attach()`` the session to its LLM.
        """
        settings = self.settings.tools
        timezone = str(memory.preferences.get(TIMEZONE_PREFERENCE) or settings.timezone)
        http = http_client(timeout=settings.timeout_secs, follow_redirects=False)
        self._closers.setdefault(call.session_id, []).append(http.aclose)
        context = ToolContext(
            settings=settings,
            http=http,
            timezone=timezone,
            session_id=call.session_id,
            user_id=call.stored_user_id,
        )
        if self.services.local_llm:
            return ToolSession([], context)
        extra = []
        if self.memory is not None and call.stored_user_id is not None:
            extra = memory_tools(
                self.memory, call.stored_user_id, call.session_id, enabled=memory.enabled
            )
        tools = self.tools.select(self.persona_for(call).tools)
        if knowledge is not None:
            from mindbot.kb.tool import knowledge_tool

            tools.append(knowledge_tool(knowledge))
        return ToolSession(
            tools,
            context,
            on_call=lambda report: self._notify("on_tool_call", call, report),
            extra=extra,
        )

    def speech_for(self, persona: Persona, memory: MemoryContext) -> SpeechStyle:
        """The session's voice, speaking rate and language: the persona's, with the caller's
        preferences applied."""
        return catalog_speech_style(
            persona.voices, persona.language, memory.preferences, self.providers.tts, self.voices
        )

    def language_switching(self) -> LanguageSwitching:
        """Whether sessions follow a caller into another language, with the reason why."""
        if not self.settings.language_switching:
            return LanguageSwitching(
                False, (), "Language switching is off (MINDBOT_LANGUAGE_SWITCHING=false)."
            )
        return language_switching(self.providers.stt, self.providers.tts, self.voices)

    # --- Knowledge base ---------------------------------------------------------------------

    @property
    def knowledge_folder(self) -> Path:
        """Where the knowledge-base collections live (``kb.folder``, default DATA_DIR/kb)."""
        return self.settings.kb.folder or self.settings.data_dir / "kb"

    def knowledge_base(self, collection: str = "default", *, create: bool = False):
        """A knowledge-base collection, opened once per process (blocking: use a thread).

        Returns None when the collection does not exist and ``create`` is false, so a session
        whose persona has no documents never loads the embedding model.
        """
        with self._knowledge_lock:
            kb = self._knowledge.get(collection)
            if kb is None:
                folder = self.knowledge_folder
                if not create and not (folder / f"{collection}.documents.db").exists():
                    return None
                if self._embedder is None:
                    from mindbot.kb.embeddings import embedding_model

                    self._embedder = embedding_model(
                        self.settings.kb,
                        openai_api_key=self.settings.openai_api_key,
                        cache_dir=self.settings.data_dir / "models",
                    )
                folder.mkdir(parents=True, exist_ok=True)
                kb = KnowledgeBase(
                    folder,
                    collection=collection,
                    settings=self.settings.kb,
                    embed_model=self._embedder,
                )
                self._knowledge[collection] = kb
            return kb

    def vocabulary_for(self, memory: MemoryContext, kb: KnowledgeBase | None) -> list[str]:
        """The terms a caller is likely to say, for the STT (blocking: use a thread).

        The caller's name and the proper nouns of their memories, then the knowledge base's
        document titles and most frequent proper nouns; the deployment's ``audio.vocabulary``
        is added by the STT factory. The knowledge base's terms are worked out once per
        version of its documents, not per call.
        """
        titles: list[str] = []
        terms: list[str] = []
        if kb is not None:
            documents = kb.list()
            key = tuple(sorted(d.content_hash for d in documents))
            with self._knowledge_lock:
                cached = self._kb_terms.get(kb.collection)
            if cached is None or cached[0] != key:
                texts = [p.text for p in kb.passages()]
                cached = (key, build_vocabulary(kb_texts=texts))
                with self._knowledge_lock:
                    self._kb_terms[kb.collection] = cached
            titles = [d.title for d in documents]
            terms = cached[1]
        return build_vocabulary(memory=memory, kb_titles=[*titles, *terms])

    async def watch_knowledge(self) -> None:
        """Keep the default collection in step with ``kb.watch_dirs`` until cancelled."""
        folders = self.settings.kb.watch_dirs
        if not folders:
            return
        kb = await asyncio.to_thread(self.knowledge_base, "default", create=True)
        await kb.watch(folders)  # syncs each folder first, then follows its changes

    def report_sources(self, call: Call, sources: list[dict]) -> None:
        """Tell the listeners which knowledge-base passages the next reply is given."""
        self._notify("on_sources", call, sources)

    def report_emotion(self, call: Call, emotion: dict[str, Any]) -> None:
        """Tell the listeners the caller's estimated emotion in the turn now ending.

        Args:
            call: The session's call.
            emotion: ``label``, ``valence``, ``arousal``, ``confidence`` and numeric ``cues``
                (an ``EmotionFrame``'s ``as_record()``).
        """
        logger.debug(f"{call}: caller sounds {emotion.get('label')}")
        self._notify("on_emotion", call, emotion)

    def report_command(self, call: Call, action: str) -> None:
        """Tell the listeners a voice command was carried out."""
        logger.info(f"{call}: voice command {action}")
        self._notify("on_command", call, action)

    async def recall(self, call: Call) -> MemoryContext:
        """What MindBot remembers about the caller (empty for anonymous callers)."""
        if self.memory is None or call.stored_user_id is None:
            return MemoryContext()
        return await asyncio.to_thread(self.memory.recall, call.stored_user_id)

    async def _learn(self, call: Call) -> None:
        """Learn from a finished session in the background; failures are logged, not raised."""
        from openai import AsyncOpenAI

        memory, writer, factory = self.memory, self._writer, self._factory
        if memory is None or writer is None or factory is None or call.stored_user_id is None:
            return
        try:
            await asyncio.to_thread(writer.flush, 10)  # the session's turns are on disk
            if factory.local_llm:
                # One llama.cpp thread serves every call: learn when no caller is waiting.
                # (Polled: an asyncio.Event would tie MindBot to one event loop.)
                while self._active:  # noqa: ASYNC110
                    await asyncio.sleep(1.0)
            endpoint = factory.llm_endpoint
            client = AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key)
            try:
                await memory.learn(
                    call.session_id,
                    call.stored_user_id,
                    (client, endpoint.model),
                    constrained=factory.local_llm,
                )
            finally:
                await client.close()
        except Exception as e:
            logger.warning(f"{call}: learning from the session failed ({type(e).__name__})")

    async def run_worker(self, worker: PipelineWorker) -> None:
        """Run a session's worker until it ends."""
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    # --- Reporting ------------------------------------------------------------------------------

    def _report_turn(self, call: Call, turn: TurnReport) -> None:
        logger.info(f"{call}: {turn.role} turn ({len(turn.text)} chars)")
        logger.debug(f"{call}: {turn.role}: {turn.text}")
        self._notify("on_turn", call, turn)

    def _notify(self, event: str, *args) -> None:
        for listener in self.listeners:
            handler = getattr(listener, event, None)
            if handler is None:
                continue
            try:
                handler(*args)
            except Exception:
                logger.exception(f"MindBot: listener {listener!r} failed on {event}")
