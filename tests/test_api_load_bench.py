"""``mindbot bench api-load``: the short mode end to end (the server, the cloud stand-ins and
each block's API load in their own processes, real phone calls over the Twilio websocket, real
HTTP requests), the load process ending by itself, and the noise verdict on figures built by
hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mindbot.api_load_bench import (
    MIX,
    ApiLoadOptions,
    ApiLoadResult,
    Block,
    LoadReport,
    format_api_load_summary,
    run_api_load_bench,
)
from mindbot.bench import CloudLatencies, record_json
from mindbot.harness import free_port


async def test_the_short_mode_measures_calls_with_and_without_api_load(
    started, voice_cache, tmp_path
):
    options = ApiLoadOptions.short(cache_dir=voice_cache)
    result = await run_api_load_bench(options, started=started)
    path = tmp_path / "api-load.json"
    record_json(path, **result.as_dict())
    data = json.loads(path.read_text())
    print("\n" + format_api_load_summary(data))

    # The stand-ins, the server and one load process per loaded block, all ended by the bench.
    assert len(started) == 2 + 2 and all(p.poll() is not None for p in started)
    assert {"command", "date", "commit", "machine"} <= data.keys()
    assert [b["loaded"] for b in data["blocks"]] == [False, True, True, False]  # ABBA

    floor = CloudLatencies().total  # every answer waits at least for the injected latencies
    for block in data["blocks"]:
        assert block["calls"] == 1 and block["expected"] == 3  # a greeting and two answers
        assert block["heard"] + block["missing"] == 3 and block["latencies"]
        assert all(floor < s < 20 for s in block["latencies"])
        assert block["p50"] <= block["p95"] == max(block["latencies"])
        assert block["server_cpu_secs"] > 0
        assert (block["api"] is not None) == block["loaded"]

    for block in (b for b in data["blocks"] if b["loaded"]):
        api = block["api"]
        assert api["stopped_by"] == "signal"  # ended by its PID when the calls were done
        assert api["sent"] >= 5 and api["status"]["2xx"] == api["sent"]  # all served
        assert api["status"]["4xx"] == api["status"]["5xx"] == api["status"]["errors"] == 0
        assert 0 < api["p50_ms"] <= api["p95_ms"] < 15_000
        assert block["load_cpu_secs"] > 0
        # After the first quiet block's call, session details are read too.
        assert api["routes"]["session"]["2xx"] > 0
        assert sum(route["sent"] for route in api["routes"].values()) == api["sent"]

    summary = data["summary"]
    assert summary["quiet"]["answers"] + summary["loaded"]["answers"] == sum(
        len(b["latencies"]) for b in data["blocks"]
    )
    assert summary["ratio_p95"] == pytest.approx(summary["loaded"]["p95"] / summary["quiet"]["p95"])
    assert len(summary["quiet_block_p95s"]) == 2 and summary["band"] >= 1.05
    assert summary["verdict"] in {
        "unchanged within noise",
        "unchanged within noise (faster beyond it: the band was drawn narrow)",
        "slower beyond noise",
    }
    totals = summary["api"]
    assert totals["sent"] == sum(b["api"]["sent"] for b in data["blocks"] if b["api"])
    assert totals["status"]["2xx"] == totals["sent"] and totals["status"]["5xx"] == 0
    assert set(totals["routes"]) == set(MIX)
    measures = [row["measure"] for row in data["headline"]]
    assert measures[0].startswith("voice p95 with / without REST API load")
    assert data["headline"][1]["mindbot"].startswith(f"{totals['sent']} of {totals['sent']}, 0 5xx")


def test_the_load_process_stops_by_itself_and_counts_refused_requests(tmp_path):
    report = tmp_path / "load.json"
    closed = free_port()  # nothing listens: every request is an error, none an answer
    command = [sys.executable, "-m", "mindbot.api_load_bench", "load", "--url"]
    command += [f"http://127.0.0.1:{closed}", "--key", "mb_test", "--rps", "10"]
    command += ["--duration", "1", "--user-id", "1", "--report", str(report)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0 and "api-load: sent 10" in out
    load = LoadReport(**json.loads(report.read_text()))
    assert load.stopped_by == "duration" and load.sent == 10 and load.skipped == 0
    assert load.status["errors"] == 10 and load.status["2xx"] == 0
    assert load.latencies_ms == [] and "ConnectError" in load.problems[0]
    figures = load.figures()
    assert figures["p95_ms"] is None and "latencies_ms" not in figures["routes"]["sessions"]


def _block(index: int, loaded: bool, latencies: list[float]) -> Block:
    return Block(
        index=index,
        loaded=loaded,
        calls=1,
        expected=len(latencies) + 1,
        heard=len(latencies) + 1,
        missing=0,
        latencies=latencies,
        p50=min(latencies),
        p95=max(latencies),
        wall_secs=10.0,
        server_cpu_secs=1.0,
    )


def _verdict(quiet: tuple[float, float], loaded: tuple[float, float]) -> dict:
    blocks = [
        _block(0, False, [1.0, quiet[0]]),
        _block(1, True, [1.0, loaded[0]]),
        _block(2, True, [1.0, loaded[1]]),
        _block(3, False, [1.0, quiet[1]]),
    ]
    return ApiLoadResult(ApiLoadOptions(cache_dir=None), 1.0, blocks).summary()


def test_p95_is_unchanged_within_the_spread_of_the_quiet_blocks():
    within = _verdict(quiet=(1.2, 1.5), loaded=(1.4, 1.6))  # band 1.25; ratio 1.6 / 1.5
    assert within["band"] == pytest.approx(1.25) and within["verdict"] == "unchanged within noise"
    slower = _verdict(quiet=(1.2, 1.5), loaded=(1.4, 2.0))  # ratio 2.0 / 1.5 > 1.25
    assert slower["ratio_p95"] == pytest.approx(2.0 / 1.5)
    assert slower["verdict"] == "slower beyond noise"
    # Quiet blocks that agree by chance: the band is at least 5%.
    close = _verdict(quiet=(1.5, 1.5), loaded=(1.4, 1.55))
    assert close["band"] == pytest.approx(1.05) and close["verdict"] == "unchanged within noise"
    faster = _verdict(quiet=(1.5, 1.5), loaded=(1.1, 1.2))
    assert faster["verdict"].startswith("unchanged within noise (faster")


def test_the_command_is_registered():
    from mindbot.api_load_bench import _bench_api_load
    from mindbot.cli import build_parser

    args = build_parser().parse_args(["bench", "api-load", "--short", "--rps", "8"])
    assert args.handler is _bench_api_load and args.short and args.rps == 8
    assert args.calls is None  # the mode's own default
