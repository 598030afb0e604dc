"""The tool-layer benchmark: a scripted suite of tool calls, with faults, through Pipecat.

Each case is one user message to a real Pipecat pipeline (user aggregator → OpenAI LLM service
→ assistant aggregator) whose LLM is the scripted OpenAI stand-in: it streams the case's tool
call exactly as OpenAI does, MindBot's ``ToolSession`` runs the tool (weather against the
Open-Meteo stand-in, with injected 500s, malformed bodies and timeouts; the calculator; the
clock; unknown tools; bad arguments; a side effect confirmed by a spoken yes), the result goes
back in the follow-up request, and the stand-in answers with the case's closing sentence.

A case succeeds when its tool result is what it should be and the closing sentence was produced
(the caller would hear an answer, never silence). The tool layer's own time per call is the
call's duration minus the tool's I/O (``ToolCallReport.overhead_secs``).

    mindbot bench tools [--rounds 10] [--json bench-results/tools.json]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from mindbot.session import ToolCallReport
from mindbot.standins import ScriptedLLMServer, Text, ToolCall, ToolCalls
from mindbot.standins.openmeteo import OpenMeteoStandIn
from mindbot.tools import ToolContext, ToolSession, ToolSettings, tool
from mindbot.tools.calculator import calculate
from mindbot.tools.clock import current_time
from mindbot.tools.weather import get_weather


@dataclass
class Case:
    """One scripted tool call and what its result must be."""

    name: str
    calls: list[ToolCall]
    said: str
    expect_ok: bool
    faulted: bool
    faults: list[str] = field(default_factory=list)
    check: str = ""  # a substring the tool result must hold


@dataclass
class CaseResult:
    name: str
    faulted: bool
    ok: bool
    answered: bool
    result: dict[str, Any]
    seconds: float


@dataclass
class ToolBenchResult:
    cases: list[CaseResult]
    reports: list[ToolCallReport]
    fillers: int

    def summary(self) -> dict[str, Any]:
        clean = [c for c in self.cases if not c.faulted]
        faulted = [c for c in self.cases if c.faulted]
        overhead = sorted(r.overhead_secs * 1000 for r in self.reports)
        return {
            "calls": len(self.cases),
            "non_faulted": len(clean),
            "non_faulted_succeeded": sum(c.ok and c.answered for c in clean),
            "faulted": len(faulted),
            "faulted_answered": sum(c.answered and c.ok for c in faulted),
            "silent_or_crashed": sum(not c.answered for c in self.cases),
            "fillers_spoken": self.fillers,
            "overhead_ms_p50": _percentile(overhead, 50),
            "overhead_ms_p95": _percentile(overhead, 95),
            "overhead_ms_max": overhead[-1] if overhead else 0.0,
            "tool_reports": len(self.reports),
        }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


@tool(label="the notes app", confirm=lambda a: f"save a note saying {a['text']}")
async def save_note(ctx: ToolContext, text: str) -> dict:
    """Save a note for the caller.

    Args:
        text: The note.
    """
    ctx.resources["notes"].append(text)
    return {"saved": text}


def suite(rounds: int) -> list[Case]:
    """``rounds`` × 11 cases; in 5 of each 11 a fault is injected or the input is bad."""
    weather = ToolCall("get_weather", {"place": "London"})

    def clean(name, call, said, *, ok=True, faults=(), check=""):
        return Case(name, [call], said, ok, False, list(faults), check)

    def faulted(name, call, said, *, faults=(), check=""):
        return Case(name, [call], said, False, True, list(faults), check)

    cases = []
    for n in range(rounds):
        cases += [
            clean(
                "calculate",
                ToolCall("calculate", {"expression": f"{n} * 3 + 1"}),
                "What is it?",
                check=f'"result": {n * 3 + 1}',
            ),
            clean(
                "time",
                ToolCall("current_time", {"timezone": "Asia/Tokyo"}),
                "What time is it in Tokyo?",
                check="Asia/Tokyo",
            ),
            clean("weather", weather, "What's the weather?", check="London"),
            clean("weather, one 500", weather, "And now?", faults=["500"], check="London"),
            clean(
                "note proposed",
                ToolCall("save_note", {"text": f"note {n}"}),
                "Note that down.",
                ok=False,
                check="needs_confirmation",
            ),
            clean(
                "note confirmed",
                ToolCall("confirm_action", {}),
                "Yes, please.",
                check=f"note {n}",
            ),
            faulted("weather, slow", weather, "Weather?", faults=["slow"], check="timeout"),
            faulted("weather, malformed", weather, "Weather?", faults=["malformed"] * 3),
            faulted("weather, 500s", weather, "Weather?", faults=["500"] * 3),
            faulted("unknown tool", ToolCall("launch_rocket", {}), "Launch!", check="unknown_tool"),
            faulted(
                "bad arguments",
                ToolCall("calculate", {"expr": 5}),
                "What's the sum?",
                check="bad_arguments",
            ),
        ]
    return cases


class _Listener(FrameProcessor):
    """Collects the LLM's replies and the fillers on their way to TTS."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[str] = []
        self.fillers = 0
        self._text: list[str] = []
        self.reply_done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self._text.append(frame.text)
        elif isinstance(frame, TTSSpeakFrame):
            self.fillers += 1
        elif isinstance(frame, LLMFullResponseEndFrame) and self._text:
            self.replies.append("".join(self._text).strip())
            self._text.clear()
            self.reply_done.set()
        await self.push_frame(frame, direction)


async def run_tool_bench(rounds: int = 10, *, case_timeout: float = 15.0) -> ToolBenchResult:
    """Run the suite and return every case's outcome and every tool call's report."""
    reports: list[ToolCallReport] = []
    results: list[CaseResult] = []
    notes: list[str] = []
    async with (
        ScriptedLLMServer(api_key="sk-bench") as llm,
        OpenMeteoStandIn(slow_secs=2.0) as meteo,
        httpx.AsyncClient() as http,
    ):
        settings = ToolSettings(
            timeout_secs=0.5,
            retries=2,
            filler_after_secs=0.3,
            weather={"geocoding_url": meteo.geocoding_url, "forecast_url": meteo.forecast_url},
        )
        tools = ToolSession(
            [calculate, current_time, get_weather, save_note],
            ToolContext(settings=settings, http=http, resources={"notes": notes}),
            on_call=reports.append,
        )
        service = OpenAILLMService(
            api_key="sk-bench",
            base_url=llm.base_url,
            settings=OpenAILLMService.Settings(model="gpt-bench", system_instruction="Bench."),
        )
        tools.attach(service)
        user, assistant = LLMContextAggregatorPair(LLMContext(tools=tools.schemas()))
        listener = _Listener()
        worker = PipelineWorker(
            Pipeline([user, service, listener, assistant]),
            params=PipelineParams(),
            cancel_on_idle_timeout=False,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        try:
            for index, case in enumerate(suite(rounds)):
                closing = f"Answer {index}."
                llm.script(ToolCalls(case.calls), Text(closing))
                meteo.clear()
                for fault in case.faults:
                    meteo.fail(fault)  # type: ignore[arg-type]
                listener.reply_done.clear()
                started = time.perf_counter()
                message = {"role": "user", "content": case.said}
                await worker.queue_frames([LLMMessagesAppendFrame([message], run_llm=True)])
                answered = await _wait_for(listener, closing, case_timeout)
                seconds = time.perf_counter() - started
                result = _tool_result(llm)
                text = json.dumps(result)
                ok = (result.get("ok") is True) == case.expect_ok and case.check in text
                if case.faulted:
                    ok = result.get("ok") is False and bool(result.get("message")) and ok
                results.append(CaseResult(case.name, case.faulted, ok, answered, result, seconds))
        finally:
            await worker.cancel()
            await running
    return ToolBenchResult(results, reports, listener.fillers)


async def _wait_for(listener: _Listener, closing: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while closing not in listener.replies:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(listener.reply_done.wait(), remaining)
        except TimeoutError:
            return False
        listener.reply_done.clear()
    return True


def _tool_result(llm: ScriptedLLMServer) -> dict[str, Any]:
    """The last tool result in the last request the LLM stand-in received."""
    for message in reversed(llm.requests[-1].get("messages", [])):
        if message.get("role") == "tool":
            try:
                return json.loads(message["content"])
            except (TypeError, json.JSONDecodeError):
                return {"unparsed": message.get("content")}
    return {}


def format_tool_summary(summary: dict[str, Any]) -> str:
    """The summary as the lines ``mindbot bench tools`` prints."""
    return (
        f"{summary['calls']} tool calls: {summary['non_faulted_succeeded']}/"
        f"{summary['non_faulted']} without faults succeeded; {summary['faulted_answered']}/"
        f"{summary['faulted']} with faults or bad input ended in a spoken answer; "
        f"{summary['silent_or_crashed']} silent or crashed; {summary['fillers_spoken']} fillers\n"
        f"tool layer overhead per call (beyond the tool's own I/O): "
        f"p50 {summary['overhead_ms_p50']:.3f} ms, p95 {summary['overhead_ms_p95']:.3f} ms, "
        f"max {summary['overhead_ms_max']:.3f} ms"
    )


def write_tool_json(result: ToolBenchResult, path: Path) -> None:
    """Write the summary, every case and the machine to ``path``."""
    from mindbot.bench import record_json

    record_json(path, summary=result.summary(), cases=[asdict(c) for c in result.cases])
