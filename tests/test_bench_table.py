"""``mindbot bench table`` rebuilds BENCHMARKS.md's summary from the runs' JSON files."""

import json

import pytest

from mindbot.bench import record_json
from mindbot.bench_table import END, START, run_table

LATENCY = {
    "summary": {
        "profile": "cloud stand-ins (deepgram/openai/cartesia)",
        "injected": 0.8,
        "systems": {
            "mindbot": {
                "caller_p50": 1.0806,
                "caller_p95": 3.9163,
                "greeting_p50": 0.1663,
                "own_p50": 0.2806,
            },
            "bare": {
                "caller_p50": 1.068,
                "caller_p95": 3.9641,
                "greeting_p50": 0.1821,
                "own_p50": 0.268,
            },
        },
    },
    "command": "mindbot bench latency --profile cloud --calls 8",
    "date": "2026-11-24 10:00:00 UTC",
    "commit": "5d43c73",
}


def test_the_table_holds_each_runs_figures_and_where_they_came_from(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "cloud.json").write_text(json.dumps(LATENCY))
    record_json(
        runs / "capacity.json",
        headline=[
            {"measure": "sessions per core", "mindbot": "7.5", "bare": "8", "target": "≥ 10"}
        ],
    )
    cutoff = {"mindbot": {"rate": 0.833, "by_pause": {"2": {}, "1": {}}}, "bare": {"rate": 0.667}}
    (runs / "cutoff.json").write_text(
        json.dumps(
            {
                "bench": "cutoff",
                "command": "mindbot bench cutoff --set smart_turn_stop_secs=1.5",
                "summary": {"systems": cutoff},
            }
        )
    )
    (runs / "cutoff-heldout.json").write_text(
        json.dumps(
            {
                "bench": "cutoff",
                "command": "mindbot bench cutoff --sentences held-out",
                "summary": {"systems": cutoff},
            }
        )
    )
    (runs / "broken.json").write_text("{not json")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold figures\n{END}\n\n## Details\n")

    block = run_table(runs, doc, lambda: "2 cores")

    text = doc.read_text()
    assert "old figures" not in text and text.startswith("# Benchmarks\n\nintro\n\n")
    assert text.endswith(f"{END}\n\n## Details\n") and block in text
    assert (
        "| voice-to-voice p50, cloud profile | 1.081 s | 1.068 s | ≤ 0.500 s | cloud.json |" in text
    )
    assert "| sessions per core | 7.5 | 8 | ≥ 10 | capacity.json |" in text
    assert "`mindbot bench latency --profile cloud --calls 8`, 2026-11-24 10:00:00 UTC" in text
    row = "| false cut-offs, 1/2 s pauses (smart_turn_stop_secs=1.5) | 83% | 67% | ≤ bare |"
    assert row in text
    assert "| false cut-offs, 1/2 s pauses, held-out sentences | 83% | 67% |" in text
    assert "broken.json" not in text and "Machine: 2 cores." in text
    run_table(runs, doc, lambda: "2 cores")
    assert doc.read_text() == text  # regenerating the same runs changes nothing


def test_a_document_without_the_block_gets_one_and_a_half_block_is_refused(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "cloud.json").write_text(json.dumps(LATENCY))
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n")
    run_table(runs, doc, lambda: "")
    assert doc.read_text().count(START) == 1 and "## Summary of the latest runs" in doc.read_text()
    doc.write_text(f"# Benchmarks\n{START}\n")
    with pytest.raises(ValueError, match="missing"):
        run_table(runs, doc, lambda: "")
    assert doc.read_text() == f"# Benchmarks\n{START}\n"
    with pytest.raises(FileNotFoundError):
        run_table(tmp_path / "nowhere", None, lambda: "")
