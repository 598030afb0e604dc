"""``mindbot bench capacity``: the short mode end to end (the servers and the cloud stand-ins in
their own processes, real phone calls over the Twilio websocket), then the underrun detector,
the stop rule and the /proc readings on inputs built by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mindbot.bench import CloudLatencies, record_json
from mindbot.capacity_bench import (
    CapacityOptions,
    Level,
    Ramp,
    cpu_seconds,
    format_capacity_summary,
    level_verdict,
    memory_mb,
    plot_capacity,
    process_tree,
    run_capacity_bench,
    underruns,
)


async def test_the_short_mode_measures_both_systems_end_to_end(started, voice_cache, tmp_path):
    result = await run_capacity_bench(CapacityOptions.short(cache_dir=voice_cache), started=started)
    path = tmp_path / "capacity.json"
    record_json(path, **result.as_dict())
    data = json.loads(path.read_text())
    print("\n" + format_capacity_summary(data))

    assert len(started) == 3 and all(p.poll() is not None for p in started)  # ended by the bench
    assert {"command", "date", "commit", "machine"} <= data.keys()
    assert data["profile"] == "cloud" and data["cores"] == os.cpu_count()
    assert set(data["systems"]) == {"mindbot", "bare"}
    for name, ramp in data["systems"].items():
        levels = ramp["levels"]
        assert [lv["sessions"] for lv in levels] == [1, 2][: len(levels)]
        if len(levels) == 1:  # the ramp may stop at level 1 only for a reason it names
            assert levels[0]["verdict"] and "level 1" in ramp["stopped_because"]
        assert ramp["sessions_per_core"] == ramp["last_good"] / os.cpu_count()
        for level in levels:
            _check_level(name, level)
    assert [row["measure"] for row in data["headline"]][0].startswith("sessions per core")

    png = plot_capacity(data, tmp_path / "capacity.png")
    import matplotlib.pyplot as plt

    image = plt.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 400


def _check_level(system: str, level: dict) -> None:
    n = level["sessions"]
    assert level["system"] == system and level["calls"] == n
    assert level["expected"] == 2 * n  # a greeting and one answer per call
    assert level["heard"] + level["missing"] == level["expected"]
    assert 0 < len(level["latencies"]) <= n
    # Every answer waits at least for the latencies the stand-ins inject.
    assert all(CloudLatencies().total < s < 20 for s in level["latencies"])
    assert min(level["latencies"]) <= level["p50"] <= level["p95"] == max(level["latencies"])
    assert level["bot_audio_secs"] >= 0.5 * level["heard"]  # the underrun check had audio
    assert level["server_cpu_secs"] > 0 and level["cpu_secs_per_session"] > 0
    assert 0 < level["server_utilisation"] <= 1 and 0 < level["machine_utilisation"] <= 1
    assert level["standins_cpu_secs"] > 0 and level["caller_cpu_secs"] > 0
    assert 50 < level["idle_rss_mb"] <= level["peak_rss_mb"]
    assert level["wall_secs"] > 3


def test_a_steady_stream_has_no_underrun():
    chunks = [(0.5 + i * 0.04, 0.04) for i in range(50)]  # real time
    assert underruns(chunks) == []
    ahead = [(0.5 + i * 0.01, 0.04) for i in range(20)]  # a burst: 0.8 s buffered by 0.69 s
    assert underruns([*ahead, (1.25, 0.04)]) == []


def test_a_late_chunk_is_an_underrun_of_the_silence_heard():
    chunks = [(i * 0.04, 0.04) for i in range(10)]  # played out at 0.40 s
    late = [*chunks, (0.65, 0.04), (0.69, 0.04), (0.80, 0.04)]
    gaps = underruns(late)
    assert len(gaps) == 1 and gaps[0] == pytest.approx(0.25)  # 0.73 → 0.80 is under 0.1 s
    assert underruns(late, gap=0.05) == pytest.approx([0.25, 0.07])
    assert underruns([]) == [] and underruns([(3.0, 0.04)]) == []


def _level(sessions: int, p95: float | None, **overrides) -> Level:
    values = {
        "system": "mindbot",
        "sessions": sessions,
        "calls": sessions,
        "expected": 3 * sessions,
        "heard": 3 * sessions,
        "missing": 0,
        "underruns": 0,
        "greeting_underruns": 0,
        "longest_gap_ms": None,
        "bot_audio_secs": 10.0,
        "latencies": [] if p95 is None else [p95],
        "p50": p95,
        "p95": p95,
        "greeting_p50": 0.2,
        "wall_secs": 10.0,
        "server_cpu_secs": 1.0,
        "cpu_secs_per_session": 1.0 / sessions,
        "core_share_per_session": 0.1 / sessions,
        "server_utilisation": 0.05,
        "machine_utilisation": 0.1,
        "standins_cpu_secs": 0.1,
        "caller_cpu_secs": 0.2,
        "caller_lag_max_ms": 2.0,
        "idle_rss_mb": 300.0,
        "peak_rss_mb": 300.0 + 20 * sessions,
        "rss_per_session_mb": 20.0,
    }
    return Level(**(values | overrides))


def test_the_stop_rule():
    first = _level(1, 1.0)
    assert level_verdict(first, first) is None
    assert level_verdict(_level(4, 1.19), first) is None
    assert "20% over" in (level_verdict(_level(4, 1.21), first) or "")
    assert level_verdict(_level(4, 1.3), first, degradation=1.5) is None
    missing = level_verdict(_level(4, 1.0, heard=11, missing=1), first)
    assert missing == "1 of 12 replies missing"
    underrun = level_verdict(_level(4, 1.0, underruns=2, longest_gap_ms=180.0), first)
    assert underrun == "2 audio underruns (longest 180 ms)"
    assert level_verdict(_level(4, None), first) == "no answer measured"


def test_capacity_is_the_last_good_level_per_core():
    ramp = Ramp("mindbot", [_level(1, 1.0), _level(3, 1.1), _level(5, 1.5, verdict="slow")])
    summary = ramp.summary(cores=2)
    assert summary["last_good"] == 3 and summary["sessions_per_core"] == 1.5
    assert summary["cpu_bound_sessions_per_core"] == pytest.approx(30.0)  # 1 / (0.1 / 3)
    assert Ramp("bare", [_level(1, 1.0, verdict="missing")]).summary(2)["last_good"] == 0


def test_the_proc_readings_of_a_process_and_its_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in process_tree(os.getpid())
        assert process_tree(child.pid) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds([os.getpid()]) > 0 and memory_mb(os.getpid()) > 10
    assert memory_mb(os.getpid(), "VmHWM") >= memory_mb(os.getpid())
    assert cpu_seconds([2**22 + 12345]) == 0 and memory_mb(2**22 + 12345) == 0


def test_the_command_is_registered_without_loading_the_runtime():
    import subprocess
    import sys

    from mindbot.cli import _bench_capacity, build_parser

    args = build_parser().parse_args(["bench", "capacity", "--short", "--systems", "bare"])
    assert args.handler is _bench_capacity and args.short and args.systems == "bare"
    # Building the parser (every mindbot command does) must not import Pipecat.
    probe = "import sys; from mindbot.cli import build_parser; build_parser(); "
    probe += "print('pipecat' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr
