"""``mindbot bench api-load``: does REST API traffic slow the voice path down?

One MindBot server process (the cloud profile: Deepgram, OpenAI and Cartesia stand-ins with
the providers' published latencies injected, in their own process; storage on) takes simulated
phone calls one after another (``mindbot.capacity_bench.place_call``: the Twilio Media Streams
websocket on loopback, Piper-synthesized questions paced in real time), measured from the
caller's side: the end of the caller's speech to the first bot audio. The questions go round in
order over the run, so blocks of equal length ask the same ones; two that Smart Turn often
takes as unfinished are left out (``TURN_HESITANT``).

The calls run in blocks, alternately **quiet** (no API traffic) and **loaded**: during a loaded
block a second process (``python -m mindbot.api_load_bench load``) sends a dashboard-like mix of
requests to the same server at a fixed rate (``MIX``: session lists and details, daily
analytics, Prometheus metrics, and preference updates of a test user; nothing that runs the
LLM). It stops by itself after ``--duration`` and is ended by its PID when the block's calls
are done, then reports requests sent, status classes and latency. The blocks go in ABBA order
(quiet, loaded, loaded, quiet, ...) so that a slow drift in the machine's load cancels out of
the with/without comparison.

**Unchanged within noise.** The voice figures are pooled per condition; the effect is the ratio
of the loaded p95 to the quiet p95. The noise is what the same run shows without any load: the
ratio of the largest to the smallest quiet block's p95 (taken as at least ``NOISE_FLOOR``, as
two small blocks can agree by chance). The p95 is unchanged within noise when
``ratio <= band``: the loaded calls are no slower than the quiet ones differ among themselves.
(A ratio below ``1 / band`` is noise as well, as the load cannot speed the calls up; it is
reported, since it says the band was drawn narrow.) The API's figures must show no 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mindbot.capacity_bench import CallOutcome, _Helpers, _Process, _Server

# The load process imports this module too: the bench's machinery (Pipecat, the server) is
# imported where the bench uses it, so the load starts in a fraction of a second.

NOISE_FLOOR = 0.05
"""The smallest noise band: quiet blocks closer than 5% are taken as 5% apart."""
MIX = {"sessions": 30, "session": 25, "daily": 20, "metrics": 15, "preferences": 10}
"""The load's requests and their weights: what a dashboard polls, plus an operator's edits."""
MAX_IN_FLIGHT = 32
"""Requests the load process keeps open at most; one due beyond that is skipped and counted."""
REQUEST_TIMEOUT = 10.0
"""Seconds an API request may take: under the 15 s the bench gives the process to end."""
READY_LINE = "api-load: sending"
"""What the load process prints once its client is ready and the first request goes out."""
TEST_USER = "+15559990000"
"""The phone number of the user whose preferences the load edits (no call comes from it)."""
TIMEZONES = ("Europe/London", "America/New_York")
QUIET_SECS = 0.5
TURN_HESITANT = ("Can you recommend a good book?", "What time zone is London in?")
"""Questions of ``mindbot.bench.QUESTIONS`` the bench does not ask. Smart Turn often takes their
Piper audio as unfinished, and the answer then waits out ``audio.smart_turn_stop_secs`` (3 s),
load or not (the turns' "turn detection" stage shows it): asked in every block alike, they would
make both conditions' p95 that timeout."""
"""Silence that ends a bot utterance: the stand-in's answer is one short sentence."""


def _percentile(values: list[float], pct: int) -> float | None:
    """The benchmarks' nearest-rank percentile (``mindbot.bench._pct``)."""
    from mindbot.bench import _pct

    return _pct(values, pct)


def _voice_cache() -> Path | None:
    from mindbot.harness import DEFAULT_VOICE_CACHE

    return DEFAULT_VOICE_CACHE


# -- The load process --


@dataclass
class LoadReport:
    """What one load process sent and how the server answered (its JSON report, raw).

    The load process stays light (no Pipecat, no server code): it keeps every latency, and
    ``figures`` turns them into percentiles where the bench runs.
    """

    rps: float
    """The rate asked for."""
    duration_secs: float = 0.0
    """From the first request due to the last answer."""
    stopped_by: str = "duration"
    """``duration`` (it ran its course) or ``signal`` (ended by its PID)."""
    sent: int = 0
    skipped: int = 0
    """Requests due while ``MAX_IN_FLIGHT`` were open: the server (or the load) fell behind."""
    status: dict[str, int] = field(
        default_factory=lambda: {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "errors": 0}
    )
    """Answers by status class; ``errors``: no answer (connection refused, timeout)."""
    routes: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: {"sent": 0, "2xx": 0, "latencies_ms": []} for name in MIX}
    )
    """Per request of ``MIX``: sent, answered 2xx, and every answer's latency (ms, sent to
    fully read)."""
    problems: list[str] = field(default_factory=list)
    """The first few non-2xx answers or errors (route and status or exception type)."""

    @property
    def latencies_ms(self) -> list[float]:
        """Every answered request's latency, ms."""
        return [ms for route in self.routes.values() for ms in route["latencies_ms"]]

    def figures(self) -> dict[str, Any]:
        """The report with p50/p95 (all requests and per route) instead of raw latencies."""
        data = asdict(self)
        data["routes"] = {
            name: {
                "sent": route["sent"],
                "2xx": route["2xx"],
                "p50_ms": _percentile(route["latencies_ms"], 50),
                "p95_ms": _percentile(route["latencies_ms"], 95),
            }
            for name, route in self.routes.items()
        }
        rate = self.sent / self.duration_secs if self.duration_secs else 0.0
        return data | {
            "achieved_rps": round(rate, 2),
            "p50_ms": _percentile(self.latencies_ms, 50),
            "p95_ms": _percentile(self.latencies_ms, 95),
        }


class _Load:
    """Sends ``MIX`` at a fixed rate (open loop: a slow answer does not delay the next request).

    Args:
        client: An HTTP client with the server's base URL and the API key.
        rps: Requests per second.
        user_id: The test user whose preferences are edited.
        seed: Seeds the choice of requests, so a run's mix can be repeated.
    """

    def __init__(self, client: Any, rps: float, user_id: int, seed: int):
        self.client = client
        self.rps = rps
        self.user_id = user_id
        self.report = LoadReport(rps=rps)
        self._random = random.Random(seed)
        self._session_ids: list[str] = []
        self._edits = 0

    async def run(self, duration: float, stop: asyncio.Event) -> LoadReport:
        """Send until ``duration`` seconds have passed or ``stop`` is set; wait for answers."""
        loop = asyncio.get_running_loop()
        open_requests: set[asyncio.Task[None]] = set()
        start = loop.time()
        print(f"{READY_LINE} {self.rps:g} requests/s for up to {duration:g} s", flush=True)
        due = 0
        while due / self.rps < duration:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, start + due / self.rps - loop.time()))
            if stop.is_set():
                self.report.stopped_by = "signal"
                break
            due += 1
            if len(open_requests) >= MAX_IN_FLIGHT:
                self.report.skipped += 1
                continue
            task = asyncio.create_task(self._one(self._pick()))
            open_requests.add(task)
            task.add_done_callback(open_requests.discard)
        await asyncio.gather(*open_requests)
        self.report.duration_secs = loop.time() - start
        return self.report

    def _pick(self) -> str:
        name = self._random.choices(list(MIX), weights=list(MIX.values()))[0]
        return "sessions" if name == "session" and not self._session_ids else name

    def _request(self, name: str) -> tuple[str, str, dict[str, Any] | None]:
        """The method, path and JSON body of a request of kind ``name``."""
        if name == "sessions":
            return "GET", "/api/v1/sessions?limit=20", None
        if name == "session":
            return "GET", f"/api/v1/sessions/{self._random.choice(self._session_ids)}", None
        if name == "daily":
            return "GET", "/api/v1/analytics/daily", None
        if name == "metrics":
            return "GET", "/metrics", None
        self._edits += 1
        body = {"timezone": TIMEZONES[self._edits % len(TIMEZONES)]}
        return "PATCH", f"/api/v1/users/{self.user_id}/preferences", body

    async def _one(self, name: str) -> None:
        import httpx

        method, path, body = self._request(name)
        route = self.report.routes[name]
        self.report.sent += 1
        route["sent"] += 1
        began = time.monotonic()
        try:
            response = await self.client.request(method, path, json=body)
        except httpx.HTTPError as e:
            self.report.status["errors"] += 1
            self._problem(f"{method} {name}: {type(e).__name__}")
            return
        route["latencies_ms"].append(round((time.monotonic() - began) * 1000, 2))
        kind = f"{response.status_code // 100}xx"
        self.report.status[kind] = self.report.status.get(kind, 0) + 1
        if response.status_code >= 300:
            self._problem(f"{method} {name}: {response.status_code}")
            return
        route["2xx"] += 1
        if name == "sessions":
            self._session_ids = [item["id"] for item in response.json()["items"]]

    def _problem(self, text: str) -> None:
        if len(self.report.problems) < 5:
            self.report.problems.append(text)


async def generate_load(
    url: str, key: str, *, rps: float, duration: float, user_id: int, seed: int = 0
) -> LoadReport:
    """Send the API load to ``url`` until ``duration`` passes or SIGTERM/SIGINT arrives.

    Args:
        url: The server's base URL (``http://127.0.0.1:PORT``).
        key: An API key with the ``write`` scope and a rate limit above ``rps``.
        rps: Requests per second.
        duration: The most seconds to send for.
        user_id: The test user whose preferences the load edits.
        seed: Seeds the choice of requests.
    """
    import httpx

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=REQUEST_TIMEOUT,
        limits=limits,
    ) as client:
        return await _Load(client, rps, user_id, seed).run(duration, stop)


def _load_main(args: argparse.Namespace) -> None:
    report = asyncio.run(
        generate_load(
            args.url,
            args.key,
            rps=args.rps,
            duration=args.duration,
            user_id=args.user_id,
            seed=args.seed,
        )
    )
    text = json.dumps(asdict(report))
    if args.report:
        # Written whole, then renamed: the bench never reads half a report.
        partial = Path(args.report).with_suffix(".partial")
        partial.write_text(text)
        partial.replace(args.report)
    print(
        f"api-load: sent {report.sent} in {report.duration_secs:.1f} s ({report.stopped_by}, "
        f"{report.skipped} skipped); answers {report.status}",
        flush=True,
    )


# -- The bench --


@dataclass
class ApiLoadOptions:
    """What ``mindbot bench api-load`` runs.

    Args:
        rounds: ABBA halves: round 1 is quiet then loaded, round 2 loaded then quiet, ...
            (two rounds: four blocks, two of each).
        calls: Calls per block, one after another.
        turns: Questions per call (2 x 6: each of the six questions twice per block).
        rps: The API load's requests per second.
        warmup: Place one unmeasured one-question call first (lazy imports, first-use costs,
            and a stored session for the load to read).
        reply: The LLM stand-in's answer (None: the capacity bench's short answer).
        reply_timeout: How long a caller waits for each reply.
        quiet: Silence that ends a bot utterance.
        load_max_secs: The load process's own limit (``--duration``) in case it is not ended.
        pipeline: MindBot's pipeline.
        cache_dir: Where the synthesized questions are kept.
    """

    rounds: int = 2
    calls: int = 2
    turns: int = 6
    rps: float = 20.0
    warmup: bool = True
    reply: str | None = None
    reply_timeout: float = 20.0
    quiet: float = QUIET_SECS
    load_max_secs: float = 600.0
    pipeline: str = "assistant"
    cache_dir: Path | None = field(default_factory=_voice_cache)

    @classmethod
    def short(cls, **overrides: Any) -> ApiLoadOptions:
        """CI's mode: four blocks of one two-question call, 5 requests/s, no warm-up call."""
        values: dict[str, Any] = {
            "rounds": 2,
            "calls": 1,
            "turns": 2,
            "rps": 5.0,
            "warmup": False,
            "load_max_secs": 120.0,
        }
        return cls(**(values | overrides))

    def plan(self) -> list[bool]:
        """Whether each block is loaded, in ABBA order."""
        halves = ((False, True), (True, False))
        return [loaded for r in range(self.rounds) for loaded in halves[r % 2]]


@dataclass
class Block:
    """The figures of one block of calls."""

    index: int
    loaded: bool
    calls: int
    expected: int
    """Bot utterances waited for: a greeting and one answer per question, per call."""
    heard: int
    missing: int
    latencies: list[float]
    """Caller-side voice-to-voice latency of every answer heard, seconds."""
    p50: float | None
    p95: float | None
    wall_secs: float
    server_cpu_secs: float
    """The server's process tree over the block: the API's work shows here."""
    load_cpu_secs: float | None = None
    api: dict[str, Any] | None = None
    """The load process's report (``LoadReport.figures``), for a loaded block."""


@dataclass
class ApiLoadResult:
    """Every block, and the settings of the run."""

    options: ApiLoadOptions
    injected: float
    """The latency the stand-ins inject plus the VAD's stop time: a floor for every answer."""
    blocks: list[Block]
    api_latencies_ms: list[float] = field(default_factory=list)
    """Every answered API request's latency over the run's loaded blocks."""
    wall_secs: float = 0.0
    """The whole run, from the first process started to the last one stopped."""

    def summary(self) -> dict[str, Any]:
        """Voice p50/p95 per condition and their ratio, the noise band, the API's figures."""
        quiet = [lat for b in self.blocks if not b.loaded for lat in b.latencies]
        loaded = [lat for b in self.blocks if b.loaded for lat in b.latencies]
        quiet_p95s = [b.p95 for b in self.blocks if not b.loaded and b.p95 is not None]
        noise = max(quiet_p95s) / min(quiet_p95s) if len(quiet_p95s) >= 2 else None
        band = max(noise or 0.0, 1 + NOISE_FLOOR)
        p95_quiet, p95_loaded = _percentile(quiet, 95), _percentile(loaded, 95)
        ratio = p95_loaded / p95_quiet if p95_quiet and p95_loaded else None
        p50_quiet, p50_loaded = _percentile(quiet, 50), _percentile(loaded, 50)
        api = _api_totals([b.api for b in self.blocks if b.api], self.api_latencies_ms)
        return {
            "quiet": {"answers": len(quiet), "p50": p50_quiet, "p95": p95_quiet},
            "loaded": {"answers": len(loaded), "p50": p50_loaded, "p95": p95_loaded},
            "ratio_p95": ratio,
            "ratio_p50": p50_loaded / p50_quiet if p50_quiet and p50_loaded else None,
            "quiet_block_p95s": quiet_p95s,
            "noise": noise,
            "band": band,
            "verdict": _verdict(ratio, band if noise is not None else None),
            "missing": sum(b.missing for b in self.blocks),
            "api": api,
        }

    def as_dict(self) -> dict[str, Any]:
        """The results for ``record_json``: options, blocks, summary, headline."""
        summary = self.summary()
        return {
            "benchmark": "api-load",
            "profile": "cloud",
            "cores": os.cpu_count(),
            "injected": self.injected,
            "wall_secs": self.wall_secs,
            "noise_floor": NOISE_FLOOR,
            "questions_left_out": list(TURN_HESITANT),
            "mix": MIX,
            "options": asdict(self.options) | {"cache_dir": str(self.options.cache_dir)},
            "blocks": [asdict(b) for b in self.blocks],
            "summary": summary,
            "headline": _headline(summary, self.options.rps),
        }


def _verdict(ratio: float | None, band: float | None) -> str:
    if ratio is None:
        return "not measured: an answer is missing on one side"
    if band is None:
        return "not judged: fewer than two quiet blocks to measure the noise"
    if ratio > band:
        return "slower beyond noise"
    if ratio < 1 / band:
        return "unchanged within noise (faster beyond it: the band was drawn narrow)"
    return "unchanged within noise"


def _api_totals(reports: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    status: Counter[str] = Counter()
    routes: dict[str, Counter[str]] = {name: Counter() for name in MIX}
    for report in reports:
        status.update(report["status"])
        for name, route in report["routes"].items():
            routes[name].update({"sent": route["sent"], "2xx": route["2xx"]})
    duration = sum(r["duration_secs"] for r in reports)
    sent = sum(r["sent"] for r in reports)
    return {
        "sent": sent,
        "skipped": sum(r["skipped"] for r in reports),
        "status": dict(status),
        "achieved_rps": sent / duration if duration else 0.0,
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "routes": {name: dict(counts) for name, counts in routes.items()},
        "problems": [p for r in reports for p in r["problems"]][:5],
    }


def _headline(summary: dict[str, Any], rps: float) -> list[dict[str, str]]:
    ratio, quiet, loaded = summary["ratio_p95"], summary["quiet"], summary["loaded"]
    api = summary["api"]
    voice = "—"
    if ratio is not None:
        voice = f"{ratio:.2f} ({loaded['p95']:.2f} s / {quiet['p95']:.2f} s): {summary['verdict']}"
    served = f"{api['status'].get('2xx', 0)} of {api['sent']}, {api['status'].get('5xx', 0)} 5xx"
    if api["p95_ms"] is not None:
        served += f", p95 {api['p95_ms']:.0f} ms"
    return [
        {
            "measure": f"voice p95 with / without REST API load ({rps:g} req/s), cloud profile",
            "mindbot": voice,
            "bare": "",
            "target": (
                f"within noise (≤ +{(summary['band'] - 1) * 100:.0f}%: the quiet blocks' spread)"
                if summary["noise"] is not None
                else "within noise (not judged: one quiet block)"
            ),
        },
        {
            "measure": "REST API requests served during calls (2xx of sent, 5xx, p95)",
            "mindbot": served,
            "bare": "",
            "target": "0 5xx",
        },
    ]


async def run_api_load_bench(
    options: ApiLoadOptions, *, started: list[Any] | None = None
) -> ApiLoadResult:
    """Place calls in quiet and loaded blocks against one server and measure both sides.

    Args:
        options: What to run.
        started: Every process the bench starts is appended here (so a caller can make sure
            they end); the bench stops them itself before it returns.
    """
    from mindbot.bench import QUESTIONS, CloudLatencies
    from mindbot.capacity_bench import SHORT_REPLY, _Helpers, _start_server, _start_standins
    from mindbot.config import Settings
    from mindbot.speech import synthesize

    questions = [
        await asyncio.to_thread(synthesize, text, cache_dir=options.cache_dir)
        for text in QUESTIONS
        if text not in TURN_HESITANT
    ]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mindbot-api-load-") as folder:
        helpers = _Helpers(Path(folder), started)
        try:
            _, cloud = await _start_standins(helpers, options.reply or SHORT_REPLY)
            settings = _server_settings(cloud, Path(folder) / "mindbot.db")
            key, user_id = _prepare_database(settings, options.rps)
            server = await _start_server(helpers, "mindbot", settings, options.pipeline)
            run = _Run(options, helpers, server, key, user_id)
            if options.warmup:
                await run.calls(questions, 1, 1, number=9000)
            for index, loaded in enumerate(options.plan()):
                run.blocks.append(await run.block(index, loaded, questions))
                print(_block_line(run.blocks[-1]), flush=True)
        finally:
            await helpers.stop()
    injected = CloudLatencies().total + Settings.load(**settings).audio.vad_stop_secs
    wall = time.monotonic() - began
    return ApiLoadResult(options, injected, run.blocks, run.api_latencies_ms, wall)


def _server_settings(cloud: dict[str, Any], database: Path) -> dict[str, Any]:
    """The server's settings: the capacity bench's, the stand-ins, storage in ``database``."""
    return cloud | {
        "stt": "deepgram",
        "tts": "cartesia",
        "user_idle_secs": 0,
        "memory": False,
        "llm_temperature": 0,
        "llm_max_tokens": 48,
        "storage": True,
        "database_path": str(database),
    }


def _prepare_database(settings: dict[str, Any], rps: float) -> tuple[str, int]:
    """Create the load's API key (as ``mindbot keys create`` does) and its test user."""
    from mindbot.api.auth import create_key
    from mindbot.storage import SQLiteStorage

    storage = SQLiteStorage(Path(settings["database_path"]))
    try:
        # The bucket holds a minute's worth: four times the load's rate never runs dry.
        rate = max(600, round(rps * 60 * 4))
        key, _ = create_key(storage, "api-load-bench", ["write"], rate)
        user = storage.user_for_identity("phone", TEST_USER, display_name="Load Test")
        return key, user.id
    finally:
        storage.close()


def _http_url(ws_url: str) -> str:
    """``http://host:port`` of the server whose Twilio websocket is ``ws_url``."""
    return f"http://{urlsplit(ws_url).netloc}"


class _Run:
    """The server, the key, and the blocks measured so far."""

    def __init__(
        self,
        options: ApiLoadOptions,
        helpers: _Helpers,
        server: _Server,
        key: str,
        user_id: int,
    ):
        self.options = options
        self.helpers = helpers
        self.server = server.process
        self.ws_url = server.url
        self.url = _http_url(server.url)
        self.key = key
        self.user_id = user_id
        self.blocks: list[Block] = []
        self.api_latencies_ms: list[float] = []
        self._asked = 0

    async def calls(
        self, questions: list[tuple[bytes, int]], calls: int, turns: int, *, number: int
    ) -> list[CallOutcome]:
        """Place ``calls`` calls one after another, ``turns`` questions each.

        The questions go round in order over the whole run, so a block of ``len(questions)``
        turns (or a multiple) asks each as often as every other block does.
        """
        from mindbot.capacity_bench import place_call

        outcomes = []
        for k in range(calls):
            asked = [questions[(self._asked + i) % len(questions)] for i in range(turns)]
            self._asked += turns
            outcomes.append(
                await place_call(
                    self.ws_url,
                    asked,
                    from_number=f"+1555{number + k:07d}",
                    reply_timeout=self.options.reply_timeout,
                    quiet=self.options.quiet,
                )
            )
        return outcomes

    async def block(self, index: int, loaded: bool, questions: list[tuple[bytes, int]]) -> Block:
        """One block of calls, with the load process running through it when ``loaded``."""
        from mindbot.capacity_bench import cpu_seconds, process_tree

        if error := self.server.died():
            raise RuntimeError(f"the MindBot server {error}")
        load = await self._start_load(index) if loaded else None
        pids = process_tree(self.server.pid)
        cpu_before, began = cpu_seconds(pids), time.monotonic()
        outcomes = await self.calls(
            questions, self.options.calls, self.options.turns, number=index * self.options.calls
        )
        wall, server_cpu = time.monotonic() - began, cpu_seconds(pids) - cpu_before
        latencies = [lat for o in outcomes for lat in o.latencies]
        expected = sum(o.expected for o in outcomes)
        heard = sum(o.heard for o in outcomes)
        block = Block(
            index=index,
            loaded=loaded,
            calls=len(outcomes),
            expected=expected,
            heard=heard,
            missing=expected - heard,
            latencies=latencies,
            p50=_percentile(latencies, 50),
            p95=_percentile(latencies, 95),
            wall_secs=wall,
            server_cpu_secs=server_cpu,
        )
        if load is not None:
            block.load_cpu_secs = cpu_seconds([load.process.pid])
            report = await load.finish()
            block.api = report.figures()
            self.api_latencies_ms += report.latencies_ms
        return block

    async def _start_load(self, index: int) -> _LoadProcess:
        report = self.helpers.folder / f"load-{index}.json"
        args = [
            "load",
            *("--url", self.url, "--key", self.key, "--rps", f"{self.options.rps:g}"),
            *("--duration", f"{self.options.load_max_secs:g}", "--user-id", str(self.user_id)),
            *("--seed", str(index), "--report", str(report)),
        ]
        process = self.helpers.start(args, f"load-{index}", module=__name__)
        load = _LoadProcess(process, report)
        await load.wait_ready()
        return load


@dataclass
class _LoadProcess:
    """A running load process and where it writes its report."""

    process: _Process
    report: Path

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until it says it is sending (its Python start can take seconds)."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.process.log.read_text():
            if error := self.process.died():
                raise RuntimeError(f"the API load process {error}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API load process did not start:\n{self.process.log}")
            await asyncio.sleep(0.1)

    async def finish(self) -> LoadReport:
        """End it by its PID (SIGTERM: it stops sending, waits for answers, reports)."""
        await self.process.stop()
        if not self.report.exists():
            raise RuntimeError(f"the API load process wrote no report: {self.process.died()}")
        data = json.loads(self.report.read_text())
        return LoadReport(**data)


# -- Output --


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _block_line(block: Block) -> str:
    api = block.api or {}
    status = api.get("status", {})
    ms = api.get("p95_ms")
    return (
        f"{block.index + 1:>5d}  {'loaded' if block.loaded else 'quiet':7s}{block.calls:>6d}"
        f"{block.heard:>6d}{block.missing:>5d}{_secs(block.p50):>8s}{_secs(block.p95):>8s}"
        f"{block.server_cpu_secs:>8.1f}{api.get('sent', '-')!s:>7s}"
        f"{status.get('2xx', '-')!s:>6s}{status.get('5xx', '-')!s:>5s}"
        f"{'-' if ms is None else f'{ms:.0f}':>8s}"
    )


HEADER = (
    f"{'block':>5s}  {'kind':7s}{'calls':>6s}{'heard':>6s}{'miss':>5s}{'p50 s':>8s}{'p95 s':>8s}"
    f"{'cpu s':>8s}{'api':>7s}{'2xx':>6s}{'5xx':>5s}{'api p95':>8s}"
)
"""Columns: calls placed, bot utterances heard and missing, caller-side voice-to-voice p50/p95,
server CPU seconds over the block, API requests sent, answered 2xx and 5xx, API p95 (ms)."""


def format_api_load_summary(data: dict[str, Any]) -> str:
    """The run's table (as ``ApiLoadResult.as_dict`` gives it) and its verdict."""
    summary = data["summary"]
    quiet, loaded, api = summary["quiet"], summary["loaded"], summary["api"]
    lines = [
        f"voice path under REST API load, cloud profile, {data['options']['rps']:g} requests/s "
        f"from a second process; blocks in ABBA order",
        HEADER,
        *(_block_line(Block(**block)) for block in data["blocks"]),
        f"quiet:  {quiet['answers']} answers, p50 {_secs(quiet['p50'])} s, "
        f"p95 {_secs(quiet['p95'])} s",
        f"loaded: {loaded['answers']} answers, p50 {_secs(loaded['p50'])} s, "
        f"p95 {_secs(loaded['p95'])} s",
    ]
    if summary["ratio_p95"] is not None and summary["noise"] is None:
        lines.append(f"loaded/quiet p95 {summary['ratio_p95']:.3f}: {summary['verdict']}")
    elif summary["ratio_p95"] is not None:
        lines.append(
            f"loaded/quiet p95 {summary['ratio_p95']:.3f} (p50 {summary['ratio_p50']:.3f}); "
            f"noise band ±{(summary['band'] - 1) * 100:.1f}% (quiet blocks' p95 "
            f"{', '.join(f'{p:.3f}' for p in summary['quiet_block_p95s'])}, floor "
            f"{NOISE_FLOOR * 100:.0f}%): {summary['verdict']}"
        )
    else:
        lines.append(summary["verdict"])
    lines.append(
        f"API: {api['sent']} requests ({api['achieved_rps']:.1f}/s, {api['skipped']} skipped), "
        f"status {api['status']}, p50 {api['p50_ms'] or 0:.1f} ms, p95 {api['p95_ms'] or 0:.1f} ms"
        f"; replies missing on calls: {summary['missing']}; run took {data['wall_secs']:.0f} s"
    )
    if api["problems"]:
        lines.append(f"API problems (first few): {'; '.join(api['problems'])}")
    return "\n".join(lines)


# -- The command --


def add_api_load_bench(benches: Any) -> None:
    """Add ``mindbot bench api-load`` to the ``bench`` subcommands."""
    bench = benches.add_parser(
        "api-load", help="voice p95 with and without REST API load from a second process"
    )
    bench.add_argument("--calls", type=int, default=None, help="calls per block (default 2)")
    bench.add_argument("--turns", type=int, default=None, help="questions per call (default 6)")
    bench.add_argument(
        "--rounds", type=int, default=None, help="ABBA rounds, two blocks each (default 2)"
    )
    bench.add_argument("--rps", type=float, default=None, help="API requests/s (default 20)")
    bench.add_argument("--pipeline", default="assistant", help="MindBot's pipeline")
    bench.add_argument("--json", help="write the results to this file")
    bench.add_argument(
        "--short", action="store_true", help="CI: four one-call blocks at 5 requests/s"
    )
    bench.set_defaults(handler=_bench_api_load)


def _bench_api_load(args: argparse.Namespace) -> None:
    from mindbot.bench import record_json
    from mindbot.logs import configure_logging

    configure_logging("WARNING")
    given = {
        name: value
        for name in ("calls", "turns", "rounds", "rps")
        if (value := getattr(args, name)) is not None
    }
    common = {"pipeline": args.pipeline, **given}
    options = ApiLoadOptions.short(**common) if args.short else ApiLoadOptions(**common)
    print(HEADER, flush=True)
    data = asyncio.run(run_api_load_bench(options)).as_dict()
    print(format_api_load_summary(data))
    if args.json:
        record_json(Path(args.json), **data)
        print(f"wrote {args.json}")


# -- The load process (python -m mindbot.api_load_bench load ...) --


def _helper_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindbot.api_load_bench")
    helpers = parser.add_subparsers(dest="helper", required=True)
    load = helpers.add_parser("load", help="send the API load until --duration or SIGTERM")
    load.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    load.add_argument("--key", required=True, help="an API key with the write scope")
    load.add_argument("--rps", type=float, required=True, help="requests per second")
    load.add_argument("--duration", type=float, required=True, help="seconds at most")
    load.add_argument("--user-id", type=int, required=True, help="whose preferences to edit")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--report", help="write the report (JSON) to this file")
    _load_main(parser.parse_args(argv))


if __name__ == "__main__":
    _helper_main(sys.argv[1:])
