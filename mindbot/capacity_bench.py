"""``mindbot bench capacity``: how many concurrent phone calls one server holds (sessions per core).

The ramp: for each level n = start, start + step, ... the bench places n concurrent simulated
phone calls (``mindbot.callsim.PhoneCall``: the Twilio Media Streams websocket on loopback,
Piper-synthesized questions from ``mindbot.bench.QUESTIONS`` paced in real time) against ONE
server process that holds all the sessions, then measures:

- from the caller's side: voice-to-voice p50/p95 (end of the caller's speech to the first
  non-silent bot audio), replies missing (a greeting or an answer that never came), and audio
  underruns (below);
- from the server's side (``/proc/<pid>``, the server and any process it started): CPU seconds
  (utime + stime, children included) per session and as a share of the machine's cores over
  the level, peak RSS (VmRSS sampled every 0.1 s) and its growth per session beyond the idle
  server (measured after the first, unmeasured call).

**Underrun.** Twilio plays the bot's audio as it arrives. The caller keeps a playout clock per
bot utterance (the greeting, each answer): a chunk that arrives when the audio before it has
already played out starts late, and the silence the caller hears is ``arrival - played_until``.
An underrun is such a gap longer than ``UNDERRUN_SECS`` inside one utterance, i.e. the bot's
output fell behind real time. Pipecat's output transport paces audio at real time, one 40 ms
chunk ahead of playback (measured on an idle server), so a server stall of more than about
140 ms in the middle of an utterance is an underrun. A stall longer than the silence that
ends an utterance (``QUIET_SECS``) splits it instead; such a server has shorter stalls too,
which count.

**Stop rule** (``level_verdict``): a level is good when no reply is missing, no underrun
occurred, and its p95 is at most 20% over the first level's. A system's ramp stops at its
first bad level (or at ``--max-sessions``); its capacity is the last good level, and "sessions
per core" is that divided by ``os.cpu_count()``.

**Processes.** Each system's server (MindBot's app, or the bare Pipecat bot from
``mindbot.bench.bare_pipecat_app`` with the same services) runs as its own process
(``python -m mindbot.capacity_bench serve``), so its CPU seconds and RSS are its own. The cloud
profile's stand-ins (Deepgram, OpenAI, Cartesia with the providers' published latencies
injected, ``mindbot.bench.cloud_profile``) run in a third process (``python -m
mindbot.capacity_bench standins``): their work grows with the sessions too (the Deepgram
stand-in reads every 20 ms of every call), and in the bench process it would delay the
callers' clocks, which are the instrument. The callers stay in the bench process; its CPU and
event-loop lag are reported per level, so a saturated load generator shows. Levels alternate
between the systems (MindBot at n, bare at n, then n + step), so slow drift in the machine's
load hits both. The bench's and the stand-ins' processes freeze their heaps (``gc.freeze``)
before each level: a full collection of the bench's heap stopped the callers' event loop for
about 80 ms, which stamped the bot's audio late and read as underruns the server did not cause.

**Question mix.** Caller ``slot`` asks ``turns`` questions from ``slot * turns`` on, round the
8 of ``QUESTIONS``; smart-turn waits out one of them (3 s), so a level's p95 depends on how often
it is asked. With ``turns=4`` (the default) and even levels, every level asks each question
equally often, and the p95 rule compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from websockets.exceptions import WebSocketException

from mindbot.bench import QUESTIONS, _pct, record_json
from mindbot.callsim import RATE, PhoneCall
from mindbot.harness import DEFAULT_VOICE_CACHE, free_port

UNDERRUN_SECS = 0.1
"""A gap in the bot's audio inside one utterance longer than this is an underrun."""
DEGRADATION = 1.2
"""A level whose p95 exceeds the first level's by more than this factor is not good."""
QUIET_SECS = 1.0
"""Silence after which a stretch of bot speech (an utterance) is over (0.5 s in --short)."""
SPREAD_SECS = 2.0
"""A level's calls start spread over this long, as calls arrive rather than all at once."""
SETTLE_SECS = 0.5
"""After a level's last hang-up, its sessions' teardown still counts to the level."""
SAMPLE_SECS = 0.1
"""How often the server's RSS is sampled during a level."""
SHORT_REPLY = "Here is a short answer."
"""The LLM stand-in's answer in ``--short`` mode (a short call)."""
SYSTEMS = ("mindbot", "bare")


# -- The server's figures, from /proc --


def _stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from its third field on (the command name may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and every living process it started, directly or not."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # it ended while we looked
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, with reaped children) the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except (OSError, ValueError):
            continue
        # utime, stime, cutime, cstime: fields 14-17, i.e. 11-14 from the third on.
        total += sum(int(v) for v in fields[11:15])
    return total / ticks


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """A ``/proc/<pid>/status`` memory figure (``VmRSS``, ``VmHWM``) in MiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def tree_rss_mb(pids: list[int]) -> float:
    """The summed resident memory of the processes, in MiB."""
    return sum(memory_mb(pid) for pid in pids)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


# -- The caller's figures --


def underruns(arrivals: list[tuple[float, float]], *, gap: float = UNDERRUN_SECS) -> list[float]:
    """The audible gaps in one bot utterance, as a caller that plays audio on arrival hears it.

    Args:
        arrivals: ``(arrival time, seconds of audio)`` of the utterance's chunks, in order.
        gap: Gaps up to this long (seconds) are not counted.

    Returns:
        Each gap longer than ``gap``: how long the caller heard nothing before a chunk.
    """
    gaps: list[float] = []
    played_until: float | None = None
    for at, secs in arrivals:
        if played_until is not None and at - played_until > gap:
            gaps.append(at - played_until)
        played_until = max(at, played_until if played_until is not None else at) + secs
    return gaps


class _TimedCall(PhoneCall):
    """A ``PhoneCall`` that also tells when each piece of the bot's audio arrived."""

    def arrivals(self, start: float, end: float) -> list[tuple[float, float]]:
        """``(arrival, seconds)`` of the bot audio playing from ``start`` to ``end``."""
        return [
            (chunk.at, secs)
            for chunk in self._bot
            if chunk.at <= end and chunk.at + (secs := len(chunk.pcm) / 2 / RATE) >= start
        ]


@dataclass
class CallOutcome:
    """What one simulated call heard."""

    expected: int
    """Bot utterances the call waited for: the greeting and one answer per question."""
    heard: int = 0
    latencies: list[float] = field(default_factory=list)
    greeting: float | None = None
    gaps: list[float] = field(default_factory=list)
    greeting_gaps: int = 0
    audio_secs: float = 0.0
    """Seconds of bot audio the underrun check went through."""

    def check(self, arrivals: list[tuple[float, float]], *, greeting: bool = False) -> None:
        """Add one utterance's gaps and audio."""
        gaps = underruns(arrivals)
        self.gaps += gaps
        self.greeting_gaps += len(gaps) if greeting else 0
        self.audio_secs += sum(secs for _, secs in arrivals)


async def place_call(
    url: str,
    utterances: list[tuple[bytes, int]],
    *,
    from_number: str,
    reply_timeout: float,
    quiet: float = QUIET_SECS,
) -> CallOutcome:
    """One call: wait for the greeting, ask each question, note every answer and its gaps.

    A missing answer is counted and the call goes on with the next question; a missing
    greeting, or a call that cannot connect, counts every utterance it waited for as missing.
    """
    outcome = CallOutcome(expected=1 + len(utterances))
    call = _TimedCall(url, from_number=from_number)
    try:
        await call.connect()
        speech = await call.wait_for_bot_speech(timeout=reply_timeout, quiet=quiet)
    except (OSError, TimeoutError, WebSocketException) as e:
        logger.warning(f"bench capacity: a call got no greeting: {e}")
        await call.hangup()
        return outcome
    try:
        outcome.heard, outcome.greeting = 1, speech.start
        outcome.check(call.arrivals(speech.start, speech.end), greeting=True)
        for pcm, rate in utterances:
            if call.closed.is_set():
                break  # the server ended the call: the answers left are missing
            spoken_at = await call.say(pcm, rate)
            try:
                speech = await call.wait_for_bot_speech(
                    after=spoken_at, timeout=reply_timeout, quiet=quiet
                )
            except TimeoutError as e:
                logger.warning(f"bench capacity: an answer is missing: {e}")
                continue
            outcome.heard += 1
            outcome.latencies.append(speech.latency or 0.0)
            outcome.check(call.arrivals(speech.start, speech.end))
    finally:
        await call.hangup()
    return outcome


# -- A level and the stop rule --


@dataclass
class Level:
    """The figures of one system at one level of concurrent calls."""

    system: str
    sessions: int
    """Concurrent calls."""
    calls: int
    """Calls placed in all (``sessions`` x calls per level)."""
    expected: int
    heard: int
    missing: int
    underruns: int
    greeting_underruns: int
    """Of ``underruns``, those in greetings (a session starting while others talk)."""
    longest_gap_ms: float | None
    bot_audio_secs: float
    """Seconds of bot audio checked for underruns."""
    latencies: list[float]
    """Caller-side voice-to-voice latency of every answer heard, seconds."""
    p50: float | None
    p95: float | None
    greeting_p50: float | None
    wall_secs: float
    server_cpu_secs: float
    cpu_secs_per_session: float
    """Server CPU seconds over the level divided by the calls placed."""
    core_share_per_session: float
    """Server CPU seconds per wall second per concurrent call: the share of one core a call
    keeps busy."""
    server_utilisation: float
    """Server CPU seconds per wall second over all the machine's cores (0-1)."""
    machine_utilisation: float
    """Every process on the machine, same measure: what else was running shows here."""
    standins_cpu_secs: float
    caller_cpu_secs: float
    caller_lag_max_ms: float
    """The bench process's worst event-loop delay: the instrument's own lateness."""
    idle_rss_mb: float
    peak_rss_mb: float
    rss_per_session_mb: float
    """(peak RSS - idle RSS) / concurrent calls."""
    verdict: str | None = None
    """Why the level is not good; ``None`` when it is."""


def level_verdict(level: Level, first: Level, *, degradation: float = DEGRADATION) -> str | None:
    """Why ``level`` stops the ramp, or ``None`` when it is good.

    Args:
        level: The level just measured.
        first: The system's first level, whose p95 is the reference.
        degradation: How much higher than the first level's p95 may go.
    """
    if level.missing:
        return f"{level.missing} of {level.expected} replies missing"
    if level.underruns:
        return f"{level.underruns} audio underruns (longest {level.longest_gap_ms:.0f} ms)"
    if level.p95 is None:
        return "no answer measured"
    if first.p95 is not None and level.p95 > first.p95 * degradation:
        return (
            f"p95 {level.p95:.3f} s is more than {round((degradation - 1) * 100)}% over the "
            f"first level's {first.p95:.3f} s"
        )
    return None


@dataclass
class Ramp:
    """One system's levels and where it stopped."""

    system: str
    levels: list[Level] = field(default_factory=list)
    stopped_because: str = ""

    @property
    def last_good(self) -> int:
        """The largest level before the first bad one (0 when the first is bad)."""
        good = 0
        for level in self.levels:
            if level.verdict is not None:
                break
            good = level.sessions
        return good

    def summary(self, cores: int) -> dict[str, Any]:
        """The capacity figures: last good level, sessions per core, and at that level."""
        at = next((lv for lv in self.levels if lv.sessions == self.last_good), None)
        return {
            "last_good": self.last_good,
            "sessions_per_core": self.last_good / cores,
            "stopped_because": self.stopped_because,
            "cpu_bound_sessions_per_core": (
                1 / at.core_share_per_session if at and at.core_share_per_session else None
            ),
            "rss_per_session_mb": at.rss_per_session_mb if at else None,
            "cpu_secs_per_session": at.cpu_secs_per_session if at else None,
        }


# -- The processes --


class _Process:
    """A helper process of the bench, with its output in a log file, stopped by its PID."""

    def __init__(self, args: list[str], log: Path, module: str = "mindbot.capacity_bench"):
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE if args[0] == "standins" else self._log_file,
            stderr=self._log_file,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def died(self) -> str | None:
        """The log's tail if the process has ended."""
        if self.popen.poll() is None:
            return None
        return f"exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}"

    async def wait_port(self, port: int, timeout: float = 120.0) -> None:
        """Wait until the process accepts connections on ``port``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if error := self.died():
                raise RuntimeError(f"the bench server {error}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the bench server did not listen on {port}:\n{self.log.read_text()}")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s, by PID (without blocking the event loop)."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                await asyncio.to_thread(self.popen.wait, timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait, timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log_file.close()


class _Helpers:
    """The bench's helper processes: started in one folder, all stopped together."""

    def __init__(self, folder: Path, started: list[subprocess.Popen] | None):
        self.folder = folder
        self.processes: list[_Process] = []
        self._started = started

    def start(self, args: list[str], name: str, module: str = "mindbot.capacity_bench") -> _Process:
        """Start ``python -m MODULE ARGS`` (this module's helpers), logging to ``name``.log."""
        process = _Process(args, self.folder / f"{name}.log", module)
        self.processes.append(process)
        if self._started is not None:
            self._started.append(process.popen)
        return process

    async def stop(self) -> None:
        """Stop every process, by its PID."""
        await asyncio.gather(*(process.stop() for process in self.processes))


async def _start_standins(helpers: _Helpers, reply: str) -> tuple[_Process, dict[str, Any]]:
    """The cloud stand-ins' process and the settings that point at its services."""
    process = helpers.start(["standins", "--reply", reply], "standins")
    assert process.popen.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.popen.stdout.readline), 120)
    if not line:
        raise RuntimeError(f"the stand-ins did not start: {process.died()}")
    return process, json.loads(line)


@dataclass
class _Server:
    """One system's server process."""

    system: str
    process: _Process
    url: str
    idle_rss_mb: float = 0.0


async def _start_server(
    helpers: _Helpers, system: str, settings: dict[str, Any], pipeline: str
) -> _Server:
    port = free_port()
    data_dir = str(helpers.folder / f"{system}-data")
    args = ["serve", system, "--port", str(port), "--pipeline", pipeline]
    process = helpers.start(
        [*args, "--settings", json.dumps(settings | {"data_dir": data_dir})], system
    )
    await process.wait_port(port)
    return _Server(system, process, f"ws://127.0.0.1:{port}/ws")


# -- The ramp --


@dataclass
class CapacityOptions:
    """What ``mindbot bench capacity`` runs.

    Args:
        profile: ``cloud`` (stand-ins with injected latencies) or ``offline`` (the configured
            offline stack: Whisper, the local LLM server, Piper).
        start: The first level (concurrent calls).
        step: How many calls each level adds.
        max_sessions: The last level at most.
        calls_per_level: Calls each concurrent caller places one after another in a level.
        turns: Questions per call.
        systems: Which systems ramp (``mindbot``, ``bare``).
        warmup: Place one unmeasured call per system first (lazy imports, first-use costs),
            after which the idle RSS is read.
        reply: The cloud LLM stand-in's answer.
        reply_timeout: How long a caller waits for each reply.
        quiet: Silence that ends a bot utterance.
        pipeline: MindBot's pipeline.
        cache_dir: Where the synthesized questions are kept.
    """

    profile: str = "cloud"
    start: int = 1
    step: int = 2
    max_sessions: int = 40
    calls_per_level: int = 1
    turns: int = 4
    systems: tuple[str, ...] = SYSTEMS
    warmup: bool = True
    reply: str | None = None
    reply_timeout: float = 20.0
    quiet: float = QUIET_SECS
    pipeline: str = "assistant"
    cache_dir: Path | None = DEFAULT_VOICE_CACHE

    @classmethod
    def short(cls, **overrides: Any) -> CapacityOptions:
        """CI's mode: levels 1 and 2, one one-question call each, no warm-up call."""
        values: dict[str, Any] = {
            "start": 1,
            "step": 1,
            "max_sessions": 2,
            "calls_per_level": 1,
            "turns": 1,
            "warmup": False,
            "reply": SHORT_REPLY,
            "quiet": 0.5,
        }
        return cls(**(values | overrides))

    def levels(self) -> list[int]:
        """The levels to ramp through."""
        return list(range(self.start, self.max_sessions + 1, max(1, self.step)))


@dataclass
class CapacityResult:
    """Every level of every system, and the settings of the run."""

    options: CapacityOptions
    cores: int
    injected: float | None
    ramps: dict[str, Ramp]

    def as_dict(self) -> dict[str, Any]:
        """The results for ``record_json``: options, per-system summary and levels, headline."""
        systems = {
            name: {**ramp.summary(self.cores), "levels": [asdict(lv) for lv in ramp.levels]}
            for name, ramp in self.ramps.items()
        }
        mindbot, bare = systems.get("mindbot"), systems.get("bare")
        ratio = None
        if mindbot and bare and bare["sessions_per_core"]:
            ratio = mindbot["sessions_per_core"] / bare["sessions_per_core"]
        options = asdict(self.options) | {"cache_dir": str(self.options.cache_dir)}
        return {
            "benchmark": "capacity",
            "profile": self.options.profile,
            "cores": self.cores,
            "injected": self.injected,
            "options": options,
            "underrun_gap_ms": UNDERRUN_SECS * 1000,
            "degradation": DEGRADATION,
            "systems": systems,
            "ratio_sessions_per_core": ratio,
            "headline": self._headline(systems),
        }

    def _headline(self, systems: dict[str, Any]) -> list[dict[str, str]]:
        def cell(system: str, key: str, fmt: str) -> str:
            value = systems.get(system, {}).get(key)
            return "" if value is None else fmt.format(value)

        profile = self.options.profile
        target = {"cloud": "≥ 10", "offline": "≥ 2 (4 calls on 2 cores)"}.get(profile, "")
        return [
            {
                "measure": f"sessions per core, {profile} profile (no underrun, p95 within 20%)",
                "mindbot": cell("mindbot", "sessions_per_core", "{:.1f}"),
                "bare": cell("bare", "sessions_per_core", "{:.1f}"),
                "target": target,
            },
            {
                "measure": f"server RSS growth per concurrent call, {profile} profile",
                "mindbot": cell("mindbot", "rss_per_session_mb", "{:.1f} MB"),
                "bare": cell("bare", "rss_per_session_mb", "{:.1f} MB"),
                "target": "< 50 MB",
            },
            {
                "measure": f"server CPU seconds per call, {profile} profile",
                "mindbot": cell("mindbot", "cpu_secs_per_session", "{:.2f} s"),
                "bare": cell("bare", "cpu_secs_per_session", "{:.2f} s"),
                "target": "",
            },
        ]


async def run_capacity_bench(
    options: CapacityOptions, *, started: list[subprocess.Popen] | None = None
) -> CapacityResult:
    """Ramp concurrent calls against each system's server until it degrades.

    Args:
        options: What to run.
        started: Every process the bench starts is appended here (so a caller can make sure
            they end); the bench stops them itself before it returns.
    """
    from mindbot.bench import CloudLatencies
    from mindbot.config import Settings
    from mindbot.speech import synthesize

    questions = [
        await asyncio.to_thread(synthesize, text, cache_dir=options.cache_dir) for text in QUESTIONS
    ]
    settings: dict[str, Any] = {
        "user_idle_secs": 0,
        "memory": False,
        "llm_temperature": 0,
        "llm_max_tokens": 48,
    }
    injected = None
    standins = None
    with tempfile.TemporaryDirectory(prefix="mindbot-capacity-") as folder:
        helpers = _Helpers(Path(folder), started)
        try:
            if options.profile == "cloud":
                standins, cloud = await _start_standins(helpers, options.reply or "")
                settings |= cloud | {"stt": "deepgram", "tts": "cartesia"}
                injected = CloudLatencies().total + Settings.load(**settings).audio.vad_stop_secs
            servers = await asyncio.gather(
                *(
                    _start_server(helpers, name, settings, options.pipeline)
                    for name in options.systems
                )
            )
            ramps = await _ramp(options, servers, questions, standins)
        finally:
            await helpers.stop()
    return CapacityResult(options, os.cpu_count() or 1, injected, ramps)


async def _ramp(
    options: CapacityOptions,
    servers: list[_Server],
    questions: list[tuple[bytes, int]],
    standins: _Process | None,
) -> dict[str, Ramp]:
    for server in servers:
        if options.warmup:
            await _level(server, 1, options, questions, standins, number=9000)
        server.idle_rss_mb = tree_rss_mb(process_tree(server.process.pid))
    ramps = {server.system: Ramp(server.system) for server in servers}
    active = list(servers)
    for n in options.levels():
        for server in list(active):
            ramp = ramps[server.system]
            level = await _level(server, n, options, questions, standins)
            level.verdict = level_verdict(level, ramp.levels[0] if ramp.levels else level)
            ramp.levels.append(level)
            print(_level_line(level), flush=True)
            if level.verdict is not None:
                ramp.stopped_because = f"level {n}: {level.verdict}"
                active.remove(server)
    for server in active:
        ramps[server.system].stopped_because = f"reached --max-sessions {options.max_sessions}"
    return ramps


class _Watch:
    """Samples, during a level, the server's RSS and the bench's own event-loop delay."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.peak_rss_mb = tree_rss_mb(pids)
        self.lag_max = 0.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(SAMPLE_SECS)
            self.lag_max = max(self.lag_max, loop.time() - before - SAMPLE_SECS)
            self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb(self.pids))

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _level(
    server: _Server,
    n: int,
    options: CapacityOptions,
    questions: list[tuple[bytes, int]],
    standins: _Process | None,
    *,
    number: int = 0,
) -> Level:
    """Place ``n`` concurrent callers' calls and read every figure of the level."""
    if error := server.process.died():
        raise RuntimeError(f"the {server.system} server {error}")
    pids = process_tree(server.process.pid)
    # The callers' own clock must not stall: a full collection of this process's heap (Pipecat,
    # numpy, earlier levels' calls) stops its event loop for about 80 ms, which stamps the bot's
    # audio late and reads as underruns. Frozen, a collection walks this level's calls only.
    gc.collect()
    gc.freeze()
    before = _Clocks.read(pids, standins)
    watch = _Watch(pids)

    async def caller(slot: int) -> list[CallOutcome]:
        await asyncio.sleep(slot * SPREAD_SECS / n)
        outcomes = []
        for k in range(options.calls_per_level):
            first = (slot * options.calls_per_level + k) * options.turns
            asked = [questions[(first + i) % len(questions)] for i in range(options.turns)]
            outcomes.append(
                await place_call(
                    server.url,
                    asked,
                    from_number=f"+1555{number + n:04d}{slot:03d}{k:02d}",
                    reply_timeout=options.reply_timeout,
                    quiet=options.quiet,
                )
            )
        return outcomes

    try:
        outcomes = [o for slot in await asyncio.gather(*map(caller, range(n))) for o in slot]
        await asyncio.sleep(SETTLE_SECS)
    finally:
        await watch.stop()
        gc.unfreeze()
    used = _Clocks.read(pids, standins).minus(before)
    return _level_figures(server, n, outcomes, used, watch)


@dataclass
class _Clocks:
    """CPU seconds of the server (its process tree), the bench, the stand-ins, and wall time;
    busy and total jiffies of the whole machine."""

    server: float
    caller: float
    standins: float
    wall: float
    machine_busy: int
    machine_total: int

    @classmethod
    def read(cls, server: list[int], standins: _Process | None) -> _Clocks:
        return cls(
            cpu_seconds(server),
            cpu_seconds([os.getpid()]),
            cpu_seconds([standins.pid]) if standins else 0.0,
            time.monotonic(),
            *machine_jiffies(),
        )

    def minus(self, before: _Clocks) -> _Clocks:
        return _Clocks(*(getattr(self, f) - getattr(before, f) for f in self.__dataclass_fields__))


def _level_figures(
    server: _Server, n: int, outcomes: list[CallOutcome], used: _Clocks, watch: _Watch
) -> Level:
    cores = os.cpu_count() or 1
    latencies = [lat for o in outcomes for lat in o.latencies]
    gaps = [gap for o in outcomes for gap in o.gaps]
    expected = sum(o.expected for o in outcomes)
    heard = sum(o.heard for o in outcomes)
    greetings = [o.greeting for o in outcomes if o.greeting is not None]
    return Level(
        system=server.system,
        sessions=n,
        calls=len(outcomes),
        expected=expected,
        heard=heard,
        missing=expected - heard,
        underruns=len(gaps),
        greeting_underruns=sum(o.greeting_gaps for o in outcomes),
        longest_gap_ms=round(max(gaps) * 1000, 1) if gaps else None,
        bot_audio_secs=sum(o.audio_secs for o in outcomes),
        latencies=latencies,
        p50=_pct(latencies, 50),
        p95=_pct(latencies, 95),
        greeting_p50=_pct(greetings, 50),
        wall_secs=used.wall,
        server_cpu_secs=used.server,
        cpu_secs_per_session=used.server / max(1, len(outcomes)),
        core_share_per_session=used.server / used.wall / n,
        server_utilisation=used.server / used.wall / cores,
        machine_utilisation=used.machine_busy / max(1, used.machine_total),
        standins_cpu_secs=used.standins,
        caller_cpu_secs=used.caller,
        caller_lag_max_ms=round(watch.lag_max * 1000, 1),
        idle_rss_mb=server.idle_rss_mb,
        peak_rss_mb=watch.peak_rss_mb,
        rss_per_session_mb=max(0.0, watch.peak_rss_mb - server.idle_rss_mb) / n,
    )


# -- Output --


def _level_line(level: Level) -> str:
    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return (
        f"{level.system:8s}{level.sessions:>5d}{level.calls:>6d}{level.heard:>6d}"
        f"{level.missing:>5d}{level.underruns:>5d}{secs(level.p50):>8s}{secs(level.p95):>8s}"
        f"{level.cpu_secs_per_session:>8.2f}{level.core_share_per_session * 100:>7.1f}%"
        f"{level.server_utilisation * 100:>7.1f}%{level.machine_utilisation * 100:>7.1f}%"
        f"{level.peak_rss_mb:>8.0f}{level.rss_per_session_mb:>7.1f}"
        f"{level.caller_lag_max_ms:>7.0f}  {level.verdict or 'good'}"
    )


HEADER = (
    f"{'system':8s}{'n':>5s}{'calls':>6s}{'heard':>6s}{'miss':>5s}{'undr':>5s}{'p50 s':>8s}"
    f"{'p95 s':>8s}{'cpu s':>8s}{'core/n':>8s}{'server':>8s}{'machine':>8s}{'RSS MB':>8s}"
    f"{'MB/n':>7s}{'lag ms':>7s}  verdict"
)
"""Columns: concurrent calls, calls placed, bot utterances heard, missing, underruns, caller-side
voice-to-voice p50/p95, server CPU s per call, share of a core per concurrent call, the server's
and the whole machine's use of all cores, peak server RSS, RSS growth per concurrent call, the
bench's worst event-loop delay."""


def format_capacity_summary(data: dict[str, Any]) -> str:
    """The run's table (as ``CapacityResult.as_dict`` gives it) and its capacity figures."""
    lines = [
        f"capacity, {data['profile']} profile, {data['cores']} cores; an underrun is a gap over "
        f"{data['underrun_gap_ms']:.0f} ms inside a bot utterance; a level is good with no reply "
        f"missing, no underrun and p95 within {round((data['degradation'] - 1) * 100)}% of the "
        "first level's",
        HEADER,
    ]
    for ramp in data["systems"].values():
        lines += [_level_line(Level(**level)) for level in ramp["levels"]]
    for name, ramp in data["systems"].items():
        cpu_bound = ramp["cpu_bound_sessions_per_core"]
        lines.append(
            f"{name}: {ramp['sessions_per_core']:.2f} sessions per core (last good level "
            f"{ramp['last_good']} on {data['cores']} cores; stopped: {ramp['stopped_because']})"
            + (
                f"; at the server's CPU per call, one core would hold {cpu_bound:.1f}"
                if cpu_bound
                else ""
            )
        )
    if data.get("ratio_sessions_per_core") is not None:
        lines.append(f"MindBot/bare sessions per core: {data['ratio_sessions_per_core']:.2f}")
    return "\n".join(lines)


def plot_capacity(data: dict[str, Any], path: Path) -> Path:
    """Draw latency (p50, p95) and server CPU against concurrent calls, every system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (latency, cpu) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, ramp in data["systems"].items():
        levels = ramp["levels"]
        sessions = [lv["sessions"] for lv in levels]
        (line,) = latency.plot(sessions, [lv["p95"] for lv in levels], "o-", label=f"{name} p95")
        latency.plot(
            sessions,
            [lv["p50"] for lv in levels],
            "s--",
            color=line.get_color(),
            label=f"{name} p50",
        )
        if levels and levels[0]["p95"]:
            latency.axhline(
                levels[0]["p95"] * data["degradation"], color=line.get_color(), alpha=0.3, lw=1
            )
        for level in levels:
            if level["verdict"] and level["p95"] is not None:
                latency.plot([level["sessions"]], [level["p95"]], "x", color="black", ms=10)
        cpu.plot(
            sessions,
            [lv["server_utilisation"] * 100 for lv in levels],
            "o-",
            color=line.get_color(),
            label=f"{name} server",
        )
    latency.set_xlabel("concurrent calls")
    latency.set_ylabel("voice-to-voice, caller side (s)")
    latency.set_title(
        "latency (faint line: the stop threshold; x: the level that stopped)", fontsize=9
    )
    cpu.set_xlabel("concurrent calls")
    cpu.set_ylabel(f"server CPU, % of {data['cores']} cores")
    for ax in (latency, cpu):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"capacity, {data['profile']} profile · commit {data.get('commit', '?')}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- The command --


def bench_capacity(args: argparse.Namespace) -> None:
    """``mindbot bench capacity``: run the ramp the command line asks for (see ``cli.py``)."""
    from mindbot.logs import configure_logging

    configure_logging("WARNING")
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    if unknown := set(systems) - set(SYSTEMS):
        raise SystemExit(f"mindbot bench capacity: unknown systems {sorted(unknown)}")
    common = {"profile": args.profile, "systems": systems, "pipeline": args.pipeline}
    if args.short:
        options = CapacityOptions.short(**common)
    else:
        options = CapacityOptions(
            start=args.start,
            step=args.step,
            max_sessions=args.max_sessions,
            calls_per_level=args.calls_per_level,
            turns=args.turns,
            **common,
        )
    print(HEADER, flush=True)
    data = asyncio.run(run_capacity_bench(options)).as_dict()
    print(format_capacity_summary(data))
    if args.json:
        record_json(Path(args.json), **data)
        print(f"wrote {args.json}")
        data = json.loads(Path(args.json).read_text())  # with the commit, for the plot
    if args.plot:
        print(f"wrote {plot_capacity(data, Path(args.plot))}")


# -- The helper processes (python -m mindbot.capacity_bench ...) --


def _serve(system: str, port: int, pipeline: str, settings_json: str) -> None:
    """Run one system's server on loopback until SIGTERM."""
    import uvicorn

    from mindbot.bench import _LatencyLog, bare_pipecat_app, bare_server_config
    from mindbot.cli import load_pipeline
    from mindbot.config import Settings
    from mindbot.logs import configure_logging
    from mindbot.runtime import MindBot
    from mindbot.server import create_app, freeze_heap, server_config

    settings = Settings.load(**json.loads(settings_json))
    configure_logging("WARNING")
    bot = MindBot(settings)
    bot.start()
    try:
        if system == "mindbot":
            app = create_app(bot, load_pipeline(pipeline))
            config = server_config(app, settings, host="127.0.0.1", port=port)
            freeze_heap()  # as `mindbot serve` does
        else:
            instruction = bot.personas.get(settings.persona).system_instruction()
            app = bare_pipecat_app(bot, _LatencyLog(), instruction)
            config = bare_server_config(app, settings, port=port)
        uvicorn.Server(config).run()
    finally:
        bot.stop()


async def _standins(reply: str) -> None:
    """Run the cloud profile's stand-ins until SIGTERM; print their settings as one JSON line."""
    from mindbot.bench import CLOUD_REPLY, cloud_profile

    async with cloud_profile(reply=reply or CLOUD_REPLY) as cloud:
        # The callers ask QUESTIONS in turn; the transcripts are handed out in order over all
        # calls (which call gets which does not matter: the LLM stand-in answers alike).
        cloud.expect(QUESTIONS * 10_000)
        gc.collect()
        gc.freeze()  # as the callers do: the stand-ins' full collections must not stall them
        print(json.dumps(cloud.settings), flush=True)
        await asyncio.Event().wait()


def _helper_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m mindbot.capacity_bench")
    helpers = parser.add_subparsers(dest="helper", required=True)
    serve = helpers.add_parser("serve")
    serve.add_argument("system", choices=SYSTEMS)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--pipeline", default="assistant")
    serve.add_argument("--settings", default="{}")
    standins = helpers.add_parser("standins")
    standins.add_argument("--reply", default="")
    args = parser.parse_args(argv)
    if args.helper == "serve":
        _serve(args.system, args.port, args.pipeline, args.settings)
    else:
        asyncio.run(_standins(args.reply))


if __name__ == "__main__":
    _helper_main(sys.argv[1:])
