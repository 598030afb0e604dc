"""Plots of a latency benchmark's results (``mindbot bench plot RESULTS.json --out DIR``).

Reads the JSON that ``mindbot bench latency --json`` writes and draws, per system (MindBot,
bare Pipecat, feature twins):

- ``latency-distribution.png``: the cumulative distribution of caller-side voice-to-voice
  latency, p50 and p95 marked, where a person sees at a glance which system answers sooner and
  how long the tail is;
- ``latency-stages.png``: the median pipeline-side latency split into Pipecat's stages
  (endpointing wait, transcription, turn detection, LLM, sentence aggregation, synthesis), as
  stacked bars.

Files are PNG, drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGE_ORDER = (
    "endpointing wait",
    "transcription",
    "turn detection",
    "LLM inference",
    "sentence aggregation",
    "speech synthesis",
    "pipeline",
)


def load_results(path: Path) -> dict[str, Any]:
    """A latency benchmark's JSON, checked for what the plots need.

    Raises:
        ValueError: The file is not a latency benchmark's results.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read benchmark results ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("replies"), list):
        raise ValueError(f"{path}: not the results of `mindbot bench latency --json`")
    return data


def plot_results(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw the plots of one latency run into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    replies = [r for r in data["replies"] if isinstance(r, dict)]
    systems = list(dict.fromkeys(str(r.get("system")) for r in replies))
    title = f"{data.get('summary', {}).get('profile', '')} · commit {data.get('commit', '?')}"
    written = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for index, system in enumerate(systems):
        values = np.sort([float(r["caller_latency"]) for r in replies if r["system"] == system])
        if not len(values):
            continue
        share = np.arange(1, len(values) + 1) / len(values)
        (line,) = ax.step(values, share, where="post", label=f"{system} (n={len(values)})")
        for pct in (50, 95):
            at = float(np.percentile(values, pct))
            ax.plot([at], [pct / 100], "o", color=line.get_color())
            ax.annotate(
                f"p{pct} {at:.2f}s",
                (at, pct / 100),
                textcoords="offset points",
                xytext=(6, -10 - 11 * index),
                fontsize=8,
                color=line.get_color(),
            )
    ax.set_xlabel("voice-to-voice latency, caller side (s)")
    ax.set_ylabel("share of replies")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency-distribution.png"))
    plt.close(fig)

    medians = {
        system: (data.get("summary", {}).get("systems", {}).get(system) or {}).get(
            "stages_median", {}
        )
        for system in systems
    }
    labels = [s for s in STAGE_ORDER if any(s in m for m in medians.values())]
    labels += sorted({s for m in medians.values() for s in m} - set(labels))
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    bottoms = np.zeros(len(systems))
    for label in labels:
        heights = np.array([float(medians[s].get(label, 0.0)) for s in systems])
        ax.bar(systems, heights, bottom=bottoms, label=label)
        bottoms += heights
    for x, total in enumerate(bottoms):
        ax.annotate(f"{total:.2f}s", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("median seconds, pipeline side")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency-stages.png"))
    plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
