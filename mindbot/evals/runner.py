"""Running the suite: each scenario is a call to MindBot through Pipecat's eval transport.

MindBot is served on loopback as ``mindbot run`` serves it (``mindbot.server.create_app``),
with one more route that exists only in this eval server, ``WS /eval``: Pipecat's eval
WebSocket transport (``EvalFastAPIWebsocketTransport``, RTVI with the eval's own messages)
carrying a normal session of the pipeline under test. The harness is Pipecat's
``EvalScriptSession``: it speaks the caller's turns, reads the bot's RTVI events and matches
each turn's expectations with Pipecat's matcher.

A call's caller comes from the scenario's ``mindbot:`` block, passed in the route's query
(``/eval?user_id=...&persona=...``). The session is a browser-like RTVI client, so it is a
``webrtc`` call to MindBot (stored, and remembered when it carries a user id), marked
``eval`` in its body. The route also asks the bot's RTVI observer for the raw VAD events
(``vad_user_stopped_speaking``), from which the response latency is measured. What MindBot
itself reports about each session (latency, tool calls, errors, commands, sources) is collected
by a ``SessionListener`` beside the harness's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, WebSocket
from loguru import logger
from pipecat.evals.fastapi_transport import EvalFastAPIWebsocketTransport
from pipecat.evals.results import (
    EvalAssertionFailure,
    EvalScriptResult,
    EvalScriptTurnProgress,
    EvalScriptTurnResult,
)
from pipecat.evals.script import EvalScriptScenario
from pipecat.evals.script_session import EvalScriptSession
from pipecat.evals.serializer import EvalConnectionFlags, EvalSerializer
from pipecat.evals.session import EvalSessionParams
from pipecat.evals.transport import EvalTransportParams
from pipecat.evals.tts import CachingTTSService, tts_cache_key
from pipecat.processors.frameworks.rtvi.frames import RTVIConfigureObserverFrame
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.services.settings import TTSSettings
from pipecat.services.stt_service import STTService

from mindbot.evals.catalog import SuiteScenario
from mindbot.evals.voices import BOT_TRANSCRIBER, CALLER_VOICE, bot_transcriber, caller_voice
from mindbot.harness import serve
from mindbot.runtime import MindBot, PipelineRun
from mindbot.session import Call, ErrorReport, LatencyReport, SessionListener, ToolCallReport
from mindbot.transports import HANDSHAKE_TIMEOUT_SECS, audio_in_filter

EVAL_PATH = "/eval"
"""The eval transport's route on the eval server."""

SESSION_END_TIMEOUT_SECS = 15.0
"""How long a finished scenario waits for its MindBot session to end."""

LEARNING_TIMEOUT_SECS = 30.0
"""How long the next call waits for memories to be learned from the last one."""

Progress = Callable[[SuiteScenario, EvalScriptTurnProgress], None]


@dataclass
class SessionReport:
    """What MindBot reported about one eval session (its ``SessionListener`` events).

    Parameters:
        latencies: Voice-to-voice seconds, as MindBot measured them (pipeline side).
        tool_calls: ``(tool, status)`` of each tool call.
        errors: ``kind: processor`` of each pipeline error.
        commands: The voice commands carried out.
        sources: The labels of the knowledge passages given to the LLM.
        started: Whether the session started.
        ended: Why the session ended, once it has.
        done: Set when the session has ended.
    """

    latencies: list[float] = field(default_factory=list)
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    started: bool = False
    ended: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class SessionReports(SessionListener):
    """A session listener that keeps each eval session's reports, by the eval run's id."""

    def __init__(self) -> None:
        self.by_run: dict[str, SessionReport] = {}

    def report(self, run_id: str) -> SessionReport:
        """The reports of the session that ``run_id`` placed (empty until it reports)."""
        return self.by_run.setdefault(run_id, SessionReport())

    def _of(self, call: Call) -> SessionReport | None:
        run_id = call.body.get("eval_run")
        return self.report(run_id) if isinstance(run_id, str) else None

    def on_session_started(self, call: Call) -> None:
        """Note that the session started."""
        if report := self._of(call):
            report.started = True

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        """Keep a voice-to-voice latency."""
        if report := self._of(call):
            report.latencies.append(latency.seconds)

    def on_tool_call(self, call: Call, tool_call: ToolCallReport) -> None:
        """Keep a tool call's name and status."""
        if report := self._of(call):
            report.tool_calls.append((tool_call.name, tool_call.status))

    def on_error(self, call: Call, error: ErrorReport) -> None:
        """Keep where a pipeline error happened (never its message: it may quote the caller)."""
        if report := self._of(call):
            report.errors.append(f"{error.kind}: {error.processor}")

    def on_command(self, call: Call, action: str) -> None:
        """Keep a voice command."""
        if report := self._of(call):
            report.commands.append(action)

    def on_sources(self, call: Call, sources: list[dict[str, Any]]) -> None:
        """Keep the labels of the passages given to the LLM."""
        if report := self._of(call):
            report.sources.extend(str(s.get("label")) for s in sources)

    def on_session_ended(self, call: Call, reason: str) -> None:
        """Note that the session ended."""
        if report := self._of(call):
            report.ended = reason
            report.done.set()


@dataclass
class ScenarioRun:
    """One scenario's call: Pipecat's result and MindBot's own reports.

    Parameters:
        item: The scenario and its caller.
        result: What the harness found.
        report: What MindBot reported about the session.
        seconds: Wall-clock time of the call.
    """

    item: SuiteScenario
    result: EvalScriptResult
    report: SessionReport
    seconds: float


def eval_route(bot: MindBot, run: PipelineRun) -> Callable[[WebSocket], Awaitable[None]]:
    """The ``WS /eval`` endpoint: one session of ``run`` per eval connection.

    Args:
        bot: The started MindBot runtime.
        run: The pipeline's entry point.
    """

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            kind, data = await asyncio.wait_for(
                parse_telephony_websocket(websocket), HANDSHAKE_TIMEOUT_SECS
            )
        except Exception as e:
            logger.warning(f"Eval handshake failed: {e.__class__.__name__}")
            await websocket.close(code=1008)
            return
        if kind != "eval":
            logger.warning(f"Not an eval connection (detected {kind!r})")
            await websocket.close(code=1008)
            return
        query = websocket.query_params
        body: dict[str, Any] = {"eval": True, "eval_run": query.get("run") or ""}
        if query.get("persona"):
            body["persona"] = query["persona"]
        call = Call(transport="webrtc", user_id=query.get("user_id") or None, body=body)
        transport = EvalFastAPIWebsocketTransport(
            websocket,
            EvalTransportParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                serializer=EvalSerializer(),
                audio_in_filter=audio_in_filter(bot.settings.audio),
                audio_out_volume=bot.settings.audio.output_volume,
            ),
            EvalConnectionFlags.model_validate(data.body or {}),
        )

        @transport.event_handler("on_client_connected")
        async def _report_vad(_transport, _websocket):
            # The raw VAD's stop is the caller's end of speech, the response latency's start;
            # the turn-level user_stopped_speaking comes only once the turn is decided.
            await transport.input().push_frame(
                RTVIConfigureObserverFrame(vad_user_speaking_enabled=True)
            )

        await bot.run_session(run, transport, call)

    return endpoint


@asynccontextmanager
async def serve_eval(
    bot: MindBot, run: PipelineRun, *, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve MindBot with the eval route on loopback for the duration of the block.

    Yields:
        The eval transport's URL, e.g. ``ws://127.0.0.1:40123/eval``.
    """

    def add_eval_route(app: FastAPI) -> None:
        app.add_api_websocket_route(EVAL_PATH, eval_route(bot, run))

    async with serve(bot, run, host=host, extend=add_eval_route) as base_url:
        yield base_url.replace("http://", "ws://") + EVAL_PATH


async def run_scenarios(
    bot: MindBot,
    run: PipelineRun,
    scenarios: Sequence[SuiteScenario],
    *,
    params: EvalSessionParams,
    on_done: Callable[[ScenarioRun], None] | None = None,
    on_progress: Progress | None = None,
) -> list[ScenarioRun]:
    """Place one call per scenario, in order, and collect what each found.

    Each call waits for the previous session to end and for MindBot to learn from it, as a
    caller's next call would find it.

    Args:
        bot: The started MindBot runtime.
        run: The pipeline's entry point.
        scenarios: The scenarios, in the order to run them.
        params: How each session behaves (timeouts, the caller-voice cache).
        on_done: Told each scenario's outcome as it finishes.
        on_progress: Told each turn and expectation as it resolves.
    """
    reports = SessionReports()
    bot.listeners.append(reports)
    runs: list[ScenarioRun] = []
    try:
        async with serve_eval(bot, run) as url:
            for index, item in enumerate(scenarios):
                run_id = str(index)
                started = time.monotonic()
                try:
                    result = await _run_one(bot, url, item, run_id, params, on_progress)
                except Exception as e:  # the harness could not even run it (a bad voice config)
                    logger.warning(f"Eval: {item.name} could not run: {type(e).__name__}: {e}")
                    result = _broken(item, e)
                await _settle(bot, reports.report(run_id))
                outcome = ScenarioRun(
                    item, result, reports.report(run_id), time.monotonic() - started
                )
                runs.append(outcome)
                if on_done is not None:
                    on_done(outcome)
    finally:
        bot.listeners.remove(reports)
    return runs


async def _run_one(
    bot: MindBot,
    url: str,
    item: SuiteScenario,
    run_id: str,
    params: EvalSessionParams,
    on_progress: Progress | None,
) -> EvalScriptResult:
    scenario = item.scenario
    query = {"run": run_id, "user_id": item.caller.user_id, "persona": item.caller.persona}
    bot_url = f"{url}?{urlencode({k: v for k, v in query.items() if v})}"
    session = EvalScriptSession.from_scenario(
        scenario,
        bot_url,
        params=params,
        user_tts=_caller_voice(bot, scenario.user_speech, params),
        bot_stt=_bot_transcriber(bot, scenario),
    )
    if on_progress is not None:

        @session.event_handler("on_progress")
        async def _progress(_session, record):
            if isinstance(record, EvalScriptTurnProgress):
                on_progress(item, record)

    try:
        return await session.run()
    finally:
        # Pipecat's harness runner takes over SIGINT for its pipeline; give Ctrl+C back.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


def _broken(item: SuiteScenario, error: Exception) -> EvalScriptResult:
    """The result of a scenario the harness could not run: errored, every turn not run."""
    failure = EvalAssertionFailure(-1, -1, "<error>", f"{type(error).__name__}: {error}", "error")
    turns = [EvalScriptTurnResult(i) for i in range(len(item.scenario.turns))]
    return EvalScriptResult(item.name, passed=False, failures=[failure], turns=turns)


def _caller_voice(
    bot: MindBot, speech: dict | None, params: EvalSessionParams
) -> CachingTTSService | None:
    """MindBot's Piper voice for the caller's turns, on the runtime's loaded model.

    ``None`` leaves it to Pipecat: text turns, or a scenario naming another voice.
    """
    if not speech or speech.get("factory") != CALLER_VOICE:
        return None
    return CachingTTSService(
        caller_voice(speech, voice=bot.models.piper()),
        cache_key=tts_cache_key(speech),
        cache_dir=params.cache_dir,
        use_cache=params.use_cache,
        settings=TTSSettings(model=None, voice=None, language=None),
    )


def _bot_transcriber(bot: MindBot, scenario: EvalScriptScenario) -> STTService | None:
    """MindBot's Whisper for ``response`` checks, on the runtime's loaded model, else None."""
    transcriber = scenario.transcriber or {}
    wanted = scenario.wants_response() and scenario.bot_audio
    if not wanted or transcriber.get("factory") != BOT_TRANSCRIBER:
        return None
    return bot_transcriber(transcriber, model=bot.models.whisper())


async def _settle(bot: MindBot, report: SessionReport) -> None:
    """Wait for the session to end and for MindBot to learn from it."""
    if report.started:
        try:
            await asyncio.wait_for(report.done.wait(), SESSION_END_TIMEOUT_SECS)
        except TimeoutError:
            logger.warning("Eval: a session did not end after its scenario")
    if learning := set(bot.learning):
        await asyncio.wait(learning, timeout=LEARNING_TIMEOUT_SECS)


def default_voice_cache() -> Path:
    """Where the caller's synthesized turns are kept between runs."""
    return Path.home() / ".cache" / "mindbot" / "eval-voices"
