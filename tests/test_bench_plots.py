"""``mindbot bench plot``: PNG plots from a latency run's JSON, and a clear error for a file
that is not one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mindbot.bench_plots import load_results, plot_results

PNG = b"\x89PNG\r\n\x1a\n"


def results() -> dict:
    replies = [
        {"system": system, "caller_latency": base + i * 0.05, "stages": {}}
        for system, base in (("mindbot", 0.9), ("bare", 1.2))
        for i in range(10)
    ]
    stages = {"endpointing wait": 0.2, "transcription": 0.3, "LLM inference": 0.35}
    systems = {name: {"stages_median": stages} for name in ("mindbot", "bare")}
    return {"replies": replies, "summary": {"profile": "test", "systems": systems}, "commit": "x"}


def test_the_plots_are_png_files(tmp_path):
    written = plot_results(results(), tmp_path / "plots")
    assert [p.name for p in written] == ["latency-distribution.png", "latency-stages.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000  # a drawn figure, not an empty one


def test_the_command_writes_them_and_refuses_other_files(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(json.dumps(results()))
    out = subprocess.run(
        [sys.executable, "-m", "mindbot", "bench", "plot", str(good), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "latency-stages.png" in out.stdout and (tmp_path / "latency-stages.png").exists()

    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a benchmark"}')
    with pytest.raises(ValueError, match="not the results"):
        load_results(bad)
    out = subprocess.run(
        [sys.executable, "-m", "mindbot", "bench", "plot", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "not the results" in out.stderr
