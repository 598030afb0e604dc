"""``mindbot eval suite``: the assistant's conversation scenarios, and the seed's metrics.

Two profiles:

- **ci** (the default): MindBot's offline STT and TTS (Whisper, Piper) and, for the LLM, the
  OpenAI stand-in answering with the scripted responder (``mindbot.evals.responder``), so a
  run needs no network, no key and no model download, and its replies depend only on what
  MindBot put in each request.
- **live** (``--live``): the providers the settings configure (keys from ``MINDBOT_*``,
  ``.env`` or ``mindbot.yaml``). It needs an LLM that can call tools (OpenAI or another
  OpenAI-compatible endpoint); without one it is skipped, with the reason.

Either way the bot runs on a scratch data folder (its own database and knowledge base, with
the packaged office handbook for the knowledge scenario), so a run never touches real callers'
data, and the default persona is MindBot's own, which the packaged scenarios are written for.
"""

from __future__ import annotations

import asyncio
import json
import platform
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipecat.evals.session import EvalSessionParams

from mindbot.config import Settings
from mindbot.evals.catalog import KNOWLEDGE_DIR, SuiteScenario
from mindbot.evals.metrics import (
    Metrics,
    ScenarioOutcome,
    compute_metrics,
    errored,
    response_latencies,
)
from mindbot.evals.runner import Progress, ScenarioRun, run_scenarios
from mindbot.runtime import MindBot, PipelineRun

PERSONA = "mindbot"
"""The persona the packaged scenarios are written for."""


@dataclass
class SuiteReport:
    """A suite run: what each scenario found, and the metrics.

    Parameters:
        profile: ``ci`` or ``live``.
        providers: The STT, LLM and TTS the bot used (and the LLM model).
        runs: One per scenario, in order.
        metrics: The suite's metrics.
        started_at: When the run started (ISO 8601, UTC).
        vad_stop_secs: The bot's VAD stop time (the latency's correction).
    """

    profile: str
    providers: dict[str, str]
    runs: list[ScenarioRun]
    metrics: Metrics
    started_at: str
    vad_stop_secs: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether every scenario passed."""
        return all(r.result.passed for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (no transcripts beyond the scenarios' own text)."""
        return {
            "command": "mindbot eval suite",
            "profile": self.profile,
            "started_at": self.started_at,
            "commit": _commit(),
            "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
            "providers": self.providers,
            "passed": self.passed,
            "metrics": self.metrics.as_dict(),
            "scenarios": [_scenario_record(r, self.vad_stop_secs) for r in self.runs],
        }


def scratch_overrides(scratch: Path) -> dict[str, Any]:
    """Settings that keep a run's data in ``scratch`` and play the packaged scenarios' bot.

    Args:
        scratch: An empty folder for the run's database and knowledge base.
    """
    return {
        "data_dir": scratch,
        "database_path": scratch / "mindbot.db",
        "kb": {"folder": scratch / "kb", "watch_dirs": []},
        "persona": PERSONA,
        "storage": True,
        "memory": True,
        "user_idle_secs": 0,
    }


@asynccontextmanager
async def ci_settings(scratch: Path, **overrides: Any) -> AsyncIterator[Settings]:
    """The ci profile's settings, with the scripted LLM served for the duration of the block.

    Args:
        scratch: An empty folder for the run's data.
        **overrides: More settings (they win).
    """
    from mindbot.evals.responder import respond
    from mindbot.standins import ScriptedLLMServer

    async with ScriptedLLMServer(default_reply=respond) as llm:
        yield Settings.load(
            **scratch_overrides(scratch)
            | {
                "stt": "whisper",
                "tts": "piper",
                "llm": "openai",
                "openai_api_key": "sk-eval",
                "llm_base_url": llm.base_url,
                "llm_model": "scripted",
            }
            | overrides
        )


def live_settings(scratch: Path) -> Settings | str:
    """The live profile's settings, or why it cannot run here.

    Args:
        scratch: An empty folder for the run's data.
    """
    settings = Settings.load(**scratch_overrides(scratch))
    providers = settings.resolve()
    if providers.llm != "openai":
        return (
            "--live needs an LLM that can call tools: set MINDBOT_OPENAI_API_KEY "
            "(or MINDBOT_LLM=openai with MINDBOT_LLM_BASE_URL)"
        )
    return settings


@asynccontextmanager
async def eval_bot(settings: Settings) -> AsyncIterator[MindBot]:
    """A started MindBot with the packaged knowledge in its persona's collection.

    Args:
        settings: The run's settings (see ``ci_settings`` and ``live_settings``).
    """
    bot = MindBot(settings)
    await asyncio.to_thread(bot.start)
    try:
        collection = bot.personas.get(settings.persona).knowledge_base
        kb = await asyncio.to_thread(bot.knowledge_base, collection, create=True)
        await asyncio.to_thread(kb.add, [KNOWLEDGE_DIR])
        yield bot
    finally:
        await asyncio.to_thread(bot.stop)


async def run_suite(
    bot: MindBot,
    run: PipelineRun,
    scenarios: Sequence[SuiteScenario],
    *,
    profile: str,
    params: EvalSessionParams,
    on_done: Callable[[ScenarioRun], None] | None = None,
    on_progress: Progress | None = None,
) -> SuiteReport:
    """Run the scenarios against a started bot and measure the metrics.

    Args:
        bot: The bot (see ``eval_bot``).
        run: The pipeline's entry point.
        scenarios: The scenarios, in order.
        profile: ``ci`` or ``live``, for the report.
        params: How each session behaves (timeouts, the caller-voice cache).
        on_done: Told each scenario's outcome as it finishes.
        on_progress: Told each turn and expectation as it resolves.
    """
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    runs = await run_scenarios(
        bot, run, scenarios, params=params, on_done=on_done, on_progress=on_progress
    )
    vad_stop_secs = bot.settings.audio.vad_stop_secs
    return SuiteReport(
        profile=profile,
        providers=_providers(bot),
        runs=runs,
        metrics=compute_metrics((outcome(r) for r in runs), vad_stop_secs=vad_stop_secs),
        started_at=started_at,
        vad_stop_secs=vad_stop_secs,
    )


def outcome(run: ScenarioRun) -> ScenarioOutcome:
    """What the metrics read of a scenario's call."""
    return ScenarioOutcome(
        scenario=run.item.scenario,
        result=run.result,
        tool_statuses=[status for _, status in run.report.tool_calls],
        pipeline_errors=len(run.report.errors),
        bot_latencies=[round(x, 3) for x in run.report.latencies],
    )


def status(run: ScenarioRun) -> str:
    """``pass``, ``FAIL`` or ``ERROR`` (the call itself broke)."""
    if run.result.passed:
        return "pass"
    return "ERROR" if errored(run.result) else "FAIL"


def format_line(run: ScenarioRun) -> str:
    """One scenario's result on one line, with its failures under it."""
    turns = run.result.turns
    played = sum(t.status == "passed" for t in turns)
    head = f"{status(run):<5} {run.item.name:<44} {played}/{len(turns)} turns"
    lines = [f"{head}  {run.seconds:5.1f} s"]
    lines += [f"      {failure}" for failure in run.result.failures]
    return "\n".join(lines)


def format_report(report: SuiteReport) -> str:
    """The metrics as a table, after a heading naming the profile and providers."""
    m = report.metrics
    p = report.providers
    rows = [
        ("scenarios passed", f"{m.scenarios_passed}/{m.scenarios}"),
        (
            "error rate",
            f"{_pct(m.error_rate)} of scenarios ({m.scenarios_failed} failed, "
            f"{m.scenarios_errored} errored); {_pct(m.turn_error_rate)} of turns "
            f"({m.turns_failed} failed, {m.turns_not_run} not run, of {m.turns})",
        ),
        (
            "function call success rate",
            f"{_pct(m.function_call_success_rate)} ({m.calls_made}/{m.calls_expected} expected "
            f"calls made; tool runs ok: {m.tool_runs_ok}/{m.tool_runs})",
        ),
        (
            "response latency p50 / p95",
            f"{_secs(m.latency(0.5))} / {_secs(m.latency(0.95))} ({len(m.latencies)} replies, "
            "caller's end of speech to the bot's first audio, at the eval client)",
        ),
        (
            "  MindBot's own measure",
            f"{_secs(m.latency(0.5, bot=True))} / {_secs(m.latency(0.95, bot=True))} "
            f"({len(m.bot_latencies)} replies, pipeline side)",
        ),
        (
            "STT word error rate",
            f"{_pct(m.word_error_rate)} ({m.stt_errors} errors in {m.stt_words} words, "
            f"{m.stt_utterances} Piper utterances, {p['stt']})",
        ),
        ("pipeline errors", str(m.pipeline_errors)),
    ]
    width = max(len(name) for name, _ in rows)
    heading = (
        f"MindBot eval suite ({report.profile}): STT {p['stt']}, LLM {p['llm']} "
        f"({p['llm_model']}), TTS {p['tts']}"
    )
    return "\n".join([heading, *(f"{name:<{width}}  {value}" for name, value in rows)])


def write_json(report: SuiteReport, path: Path) -> None:
    """Write the report as JSON to ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")


def _scenario_record(run: ScenarioRun, vad_stop_secs: float) -> dict[str, Any]:
    result = run.result
    return {
        "name": run.item.name,
        "file": str(run.item.path) if run.item.path else None,
        "status": status(run),
        "seconds": round(run.seconds, 2),
        "turns": [t.status for t in result.turns],
        "failures": [
            {
                "turn": f.turn_index,
                "expectation": f.expectation_index,
                "event": f.event_name,
                "kind": f.kind,
                "reason": f.reason,
            }
            for f in result.failures
        ],
        "tool_calls": [{"name": n, "status": s} for n, s in run.report.tool_calls],
        "commands": run.report.commands,
        "sources": run.report.sources,
        "pipeline_errors": run.report.errors,
        "latencies": response_latencies(result.events_seen, vad_stop_secs),
        "bot_latencies": [round(x, 3) for x in run.report.latencies],
    }


def _providers(bot: MindBot) -> dict[str, str]:
    p = bot.providers
    return {"stt": p.stt, "llm": p.llm, "tts": p.tts, "llm_model": bot.settings.llm_model}


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"
