"""``mindbot bench table``: the headline figures of every benchmark run, as one table in
BENCHMARKS.md, regenerated from the runs' JSON files.

Each benchmark writes its results with ``record_json`` (command, date, commit and machine
included). This module reads a folder of them, picks each run's headline figures and rewrites
the block between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in
BENCHMARKS.md, so the summary never drifts from the runs behind it::

    mindbot bench table bench-results --write BENCHMARKS.md

A run's headline is its ``headline`` list when the benchmark wrote one (``{"measure",
"mindbot", "bare", "target"}``); the latency and "stop" benchmarks, which predate it, are read
from their summaries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"


@dataclass(frozen=True)
class Headline:
    """One figure of one run.

    Args:
        measure: What was measured, with its unit.
        mindbot: MindBot's figure, formatted.
        bare: Bare Pipecat's figure in the same run, formatted ("" when not measured).
        target: The issue's target, if it has one.
        run: Which file it came from.
        command: The command that produced it.
        date: When.
        commit: At which commit.
    """

    measure: str
    mindbot: str
    bare: str
    target: str
    run: str
    command: str
    date: str
    commit: str


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _latency(summary: dict[str, Any], overrides: str = "") -> list[dict[str, str]]:
    systems = summary.get("systems", {})
    mindbot, bare = systems.get("mindbot", {}), systems.get("bare", {})
    kind = "cloud" if "cloud" in str(summary.get("profile", "")) else "offline"
    target = {"cloud": ("≤ 0.500 s", ""), "offline": ("≤ 0.600 s", "")}[kind]
    profile = kind
    rows = [
        {
            "measure": f"voice-to-voice p50, {profile} profile{overrides}",
            "mindbot": _secs(mindbot.get("caller_p50")),
            "bare": _secs(bare.get("caller_p50")),
            "target": target[0],
        },
        {
            "measure": f"voice-to-voice p95, {profile} profile{overrides}",
            "mindbot": _secs(mindbot.get("caller_p95")),
            "bare": _secs(bare.get("caller_p95")),
            "target": "",
        },
        {
            "measure": f"greeting after the websocket start, p50, {profile} profile{overrides}",
            "mindbot": _secs(mindbot.get("greeting_p50")),
            "bare": _secs(bare.get("greeting_p50")),
            "target": "≤ 0.500 s",
        },
    ]
    if summary.get("injected") is not None:
        rows.append(
            {
                "measure": "own time p50 (caller side minus injected service latency)",
                "mindbot": _secs(mindbot.get("own_p50")),
                "bare": _secs(bare.get("own_p50")),
                "target": "",
            }
        )
    return rows


def _commands(data: dict[str, Any]) -> list[dict[str, str]]:
    summary = data.get("summary", {})
    barge_in = data.get("barge_in", "")
    return [
        {
            "measure": f'"stop" to silence beyond the STT, p50 (barge-in {barge_in})',
            "mindbot": _ms(summary.get("after_stt_ms_p50")),
            "bare": "",
            "target": "< 150 ms",
        }
    ]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _overrides(data: dict[str, Any]) -> str:
    """The ``--set`` settings of a turn-taking run, as a label ("" for the defaults)."""
    words = str(data.get("command", "")).split()
    sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    sets += [w.removeprefix("MINDBOT_AUDIO__").lower() for w in words if w.startswith("MINDBOT_")]
    return f" ({', '.join(sets)})" if sets else ""


def _cutoff(data: dict[str, Any]) -> list[dict[str, str]]:
    systems = data.get("summary", {}).get("systems", {})
    mindbot, bare = systems.get("mindbot", {}), systems.get("bare", {})
    pauses = "/".join(sorted(mindbot.get("by_pause", {}), key=float))
    chosen = re.search(r"--sentences[= ](\S+)", data.get("command", ""))
    sentences = f", {chosen.group(1)} sentences" if chosen and chosen.group(1) != "tuning" else ""
    return [
        {
            "measure": f"false cut-offs, {pauses} s pauses{sentences}{_overrides(data)}",
            "mindbot": _pct(mindbot.get("rate")),
            "bare": _pct(bare.get("rate")),
            "target": "≤ bare",
        }
    ]


def _bargein(data: dict[str, Any]) -> list[dict[str, str]]:
    systems = data.get("summary", {}).get("systems", {})
    mindbot, bare = systems.get("mindbot", {}), systems.get("bare", {})
    return [
        {
            "measure": f"barge-in: caller's first word to silence, p50{_overrides(data)}",
            "mindbot": _ms(mindbot.get("silent_ms_p50")),
            "bare": _ms(bare.get("silent_ms_p50")),
            "target": "< 250 ms",
        }
    ]


def _eval_suite(data: dict[str, Any]) -> list[dict[str, str]]:
    m = data["metrics"]
    profile = data.get("profile", "")
    return [
        {
            "measure": f"eval suite ({profile}): scenarios passed",
            "mindbot": f"{m.get('scenarios_passed')}/{m.get('scenarios')}",
            "bare": "",
            "target": "all",
        },
        {
            "measure": "eval suite: function call success rate",
            "mindbot": _pct(m.get("function_call_success_rate")),
            "bare": "",
            "target": "",
        },
        {
            "measure": "eval suite: response latency p50 (offline STT/TTS, instant LLM)",
            "mindbot": _secs(m.get("latency_p50")),
            "bare": "",
            "target": "",
        },
        {
            "measure": "eval suite: STT word error rate",
            "mindbot": _pct(m.get("word_error_rate")),
            "bare": "",
            "target": "",
        },
    ]


def headlines(data: dict[str, Any]) -> list[dict[str, str]]:
    """A run's headline rows, from its ``headline`` list or its known summary."""
    if isinstance(data.get("headline"), list):
        return [
            {k: str(row.get(k, "")) for k in ("measure", "mindbot", "bare", "target")}
            for row in data["headline"]
            if isinstance(row, dict) and row.get("measure")
        ]
    summary = data.get("summary")
    if isinstance(data.get("metrics"), dict) and "scenarios" in data:
        return _eval_suite(data)
    if data.get("bench") == "cutoff":
        return _cutoff(data)
    if data.get("bench") == "bargein":
        return _bargein(data)
    if isinstance(summary, dict) and "systems" in summary:
        return _latency(summary, _overrides(data))
    if "barge_in" in data and isinstance(summary, dict):
        return _commands(data)
    return []


def collect(folder: Path) -> list[Headline]:
    """Every headline figure of the JSON runs in ``folder`` (sorted by file name)."""
    rows: list[Headline] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            logger.warning(f"bench table: skipping {path.name}: {e}")
            continue
        if not isinstance(data, dict):
            continue
        for row in headlines(data):
            rows.append(
                Headline(
                    **row,
                    run=path.name,
                    command=str(data.get("command", "")),
                    date=str(data.get("date") or data.get("started_at", "")),
                    commit=str(data.get("commit", "")),
                )
            )
    return rows


def render(rows: list[Headline], machine: str = "") -> str:
    """The Markdown block: one table of figures, then where each run came from."""
    lines = [
        START,
        "",
        "| measure | MindBot | bare Pipecat | target | run |",
        "|---|---:|---:|---|---|",
    ]
    lines += [f"| {r.measure} | {r.mindbot} | {r.bare} | {r.target} | {r.run} |" for r in rows]
    runs: dict[str, Headline] = {r.run: r for r in rows}
    lines += ["", "Runs:", ""]
    for run, r in runs.items():
        command = f"`{r.command}`" if r.command else "(command not recorded)"
        lines.append(f"- {run}: {command}, {r.date or 'date unknown'}, commit {r.commit or '?'}")
    if machine:
        lines += ["", f"Machine: {machine}."]
    lines += ["", END]
    return "\n".join(lines)


def rewrite(document: Path, block: str) -> None:
    """Replace the table block in ``document`` (appended at the end when it has none).

    Raises:
        ValueError: The document has a start marker without an end marker (or the reverse).
    """
    text = document.read_text() if document.exists() else ""
    has_start, has_end = START in text, END in text
    if has_start != has_end:
        raise ValueError(f"{document}: one of {START} / {END} is missing")
    if has_start:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Summary of the latest runs\n\n" + block + "\n"
    document.write_text(text)


def run_table(folder: Path, write: Path | None, machine: Callable[[], str]) -> str:
    """Collect, render and (with ``write``) rewrite; returns the block."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of benchmark results")
    rows = collect(folder)
    block = render(rows, machine())
    if write is not None:
        rewrite(write, block)
    return block
