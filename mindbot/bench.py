"""``mindbot bench latency``: voice-to-voice latency over simulated phone calls, with a baseline.

Each call goes over the Twilio Media Streams websocket on loopback with real-time paced caller
audio (Piper-synthesized questions). Two figures per reply:

- caller side: from the end of the caller's speech (last voiced sample sent) to the first
  non-silent bot audio received, measured by the call simulator;
- pipeline side: Pipecat's ``UserBotLatencyObserver`` (from the caller's actual silence to the
  bot starting to speak) with its per-stage breakdown.

Calls alternate between MindBot's pipeline and a bare Pipecat bot built from the same
services and the same LLM server, so every figure also has a ratio that holds on a noisy
machine. Each server runs on its own event loop in its own thread, apart from the caller's.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket
from loguru import logger

from mindbot.config import Settings
from mindbot.harness import free_port, simulated_call
from mindbot.runtime import MindBot, PipelineRun, latency_observer
from mindbot.session import Call, LatencyReport

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "Why is the sky blue?",
    "Tell me a fun fact about cats.",
    "How do I make a cup of tea?",
    "What time zone is London in?",
    "What should I cook for dinner tonight?",
]


@dataclass(frozen=True)
class CloudLatencies:
    """The service latencies the cloud profile's stand-ins inject, in seconds.

    Taken from the providers' published figures, so that the profile measures what MindBot adds
    around realistic services rather than the services themselves:

    - ``stt_final``: Deepgram's final transcript after the end of speech (Deepgram quotes
      sub-300 ms streaming latency for Nova-3; about 150 ms after a ``Finalize`` is typical);
    - ``llm_first_token``: an OpenAI chat model's time to first token (about 350 ms for
      gpt-4o-mini class models in published measurements);
    - ``tts_first_byte``: Cartesia Sonic's time to first audio (Cartesia quotes 90 ms; 100 ms
      here).
    """

    stt_final: float = 0.15
    llm_first_token: float = 0.35
    tts_first_byte: float = 0.10

    @property
    def total(self) -> float:
        return self.stt_final + self.llm_first_token + self.tts_first_byte


CLOUD_REPLY = "Here is a short answer to your question, and I hope it helps."


@dataclass
class CloudProfile:
    """The running stand-ins of the cloud profile and the settings that point at them."""

    latencies: CloudLatencies
    settings: dict[str, Any]
    deepgram: Any

    def expect(self, utterances: list[str]) -> None:
        """Have the Deepgram stand-in transcribe the next utterances as these words.

        The bench knows what its caller says, so the stand-in need not run Whisper (whose CPU
        time would add to the injected latency); Whisper stays the fallback.
        """
        self.deepgram.add_transcripts(*utterances)


@asynccontextmanager
async def cloud_profile(
    latencies: CloudLatencies | None = None, *, reply: str = CLOUD_REPLY
) -> AsyncIterator[CloudProfile]:
    """Deepgram, OpenAI and Cartesia stand-ins on loopback, injecting ``latencies``.

    Args:
        latencies: The injected service latencies.
        reply: What the LLM stand-in answers every request with.
    """
    from mindbot.speech import transcribe
    from mindbot.standins import CartesiaStandIn, DeepgramStandIn, ScriptedLLMServer, Text

    latencies = latencies or CloudLatencies()
    key = "bench-key"
    async with (
        DeepgramStandIn(transcriber=transcribe, final_delay=latencies.stt_final, api_key=key) as dg,
        ScriptedLLMServer(
            default_reply=Text(reply),
            first_token_delay=latencies.llm_first_token,
            token_delay=0.01,
            api_key=key,
        ) as llm,
        CartesiaStandIn(first_chunk_delay=latencies.tts_first_byte, api_key=key) as cartesia,
    ):
        settings = {
            "deepgram_api_key": key,
            "deepgram_base_url": dg.url,
            "openai_api_key": key,
            "llm_base_url": llm.base_url,
            "llm_model": "gpt-bench",
            "cartesia_api_key": key,
            "cartesia_url": cartesia.url,
        }
        yield CloudProfile(latencies, settings, dg)


@dataclass
class Reply:
    """One measured reply."""

    system: str
    question: str
    caller_latency: float
    pipeline_latency: float | None
    stages: dict[str, float] = field(default_factory=dict)
    recorded_latency: float | None = None
    """The same reply's latency measured again from the call's recording (the check)."""


@dataclass
class BenchResult:
    """Everything one latency run measured."""

    profile: str
    injected: float | None = None
    """Seconds of service latency the stand-ins inject per reply (cloud profile), plus the VAD's
    stop time; what is left of a reply's latency is MindBot's (or bare Pipecat's) own time."""
    replies: list[Reply] = field(default_factory=list)
    greetings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def summary(self) -> dict[str, Any]:
        """Percentiles per system and the MindBot/bare ratios."""
        out: dict[str, Any] = {"profile": self.profile, "injected": self.injected, "systems": {}}
        names = list(dict.fromkeys(["mindbot", "bare", *(r.system for r in self.replies)]))
        for system in names:
            caller = [r.caller_latency for r in self.replies if r.system == system]
            pipeline = [
                r.pipeline_latency
                for r in self.replies
                if r.system == system and r.pipeline_latency is not None
            ]
            stages: dict[str, list[float]] = defaultdict(list)
            for r in self.replies:
                if r.system == system:
                    for label, secs in r.stages.items():
                        stages[label].append(secs)
            out["systems"][system] = {
                "replies": len(caller),
                "failures": self.failures.get(system, 0),
                "caller_p50": _pct(caller, 50),
                "caller_p95": _pct(caller, 95),
                "pipeline_p50": _pct(pipeline, 50),
                "pipeline_p95": _pct(pipeline, 95),
                "greeting_p50": _pct(self.greetings.get(system, []), 50),
                "greeting_max": max(self.greetings.get(system, []), default=None),
                "instrument_max_diff_ms": max(
                    (
                        round(abs(r.caller_latency - r.recorded_latency) * 1000, 1)
                        for r in self.replies
                        if r.system == system and r.recorded_latency is not None
                    ),
                    default=None,
                ),
                "own_p50": _minus(_pct(caller, 50), self.injected),
                "own_p95": _minus(_pct(caller, 95), self.injected),
                "stages_median": {k: statistics.median(v) for k, v in stages.items()},
            }
        keys = ("caller_p50", "caller_p95", "pipeline_p50", "pipeline_p95", "greeting_p50")
        mindbot = out["systems"]["mindbot"]
        out["ratios"] = _ratios(mindbot, out["systems"]["bare"], keys)
        out["variants"] = {}
        for name in VARIANTS:
            if name in out["systems"]:
                variant = out["systems"][name]
                out["variants"][name] = {
                    "ratios": _ratios(mindbot, variant, keys),
                    "added_ms": {
                        key: round((mindbot[key] - variant[key]) * 1000, 1)
                        if mindbot[key] is not None and variant[key] is not None
                        else None
                        for key in keys
                    },
                }
        return out


STORAGE_OFF = "mindbot-storage-off"
"""The name of the optional system that is MindBot with storage turned off."""
KB_OFF = "mindbot-kb-off"
"""The name of the optional system that is MindBot without a knowledge base."""
VARIANTS = {STORAGE_OFF: "storage off", KB_OFF: "retrieval off"}
"""MindBot twins that differ in one feature, compared with MindBot in the same run."""


def latencies_from_recording(wav: bytes, *, gap: float = 0.6, level: int = 500) -> list[float]:
    """Voice-to-voice latencies measured again, from a call's two-channel recording alone.

    A check of the call simulator's own figures that shares none of its code: sample by sample
    rather than over 10 ms RMS windows, from the recording (``PhoneCall.recording``) rather
    than from the arrival times. The caller's speech is every sample louder than ``level``,
    grouped into utterances split by ``gap`` seconds of quiet; each latency runs from the end of
    an utterance to the bot's first sample louder than ``level`` after it.

    Args:
        wav: A two-channel 16-bit WAV: the caller left, the bot right.
        gap: Quiet (seconds) that separates two caller utterances.
        level: The amplitude (16-bit) above which a sample is sound.

    Returns:
        One latency (seconds) per caller utterance that the bot answered.
    """
    import io
    import wave

    import numpy as np

    with wave.open(io.BytesIO(wav), "rb") as reader:
        rate = reader.getframerate()
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    stereo = frames.reshape(-1, 2).astype(np.int32)
    caller = np.nonzero(np.abs(stereo[:, 0]) > level)[0]
    bot = np.nonzero(np.abs(stereo[:, 1]) > level)[0]
    if len(caller) == 0:
        return []
    breaks = np.nonzero(np.diff(caller) > gap * rate)[0]
    ends = [*caller[breaks], caller[-1]]
    latencies = []
    for end in ends:
        after = bot[bot > end]
        if len(after):
            latencies.append(float(after[0] - end) / rate)
    return latencies


def _minus(value: float | None, injected: float | None) -> float | None:
    return value - injected if value is not None and injected is not None else None


def _ratios(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: (a[key] / b[key]) if a[key] and b[key] else None for key in keys}


class _LatencyLog:
    """Collects each session's latency reports, keyed by the caller's number."""

    def __init__(self):
        self.by_caller: dict[str, list[LatencyReport]] = defaultdict(list)

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        self.by_caller[call.from_number or ""].append(latency)


def bare_server_config(app: FastAPI, settings: Settings, *, port: int) -> uvicorn.Config:
    """How the bare baseline is served: uvicorn's defaults, as Pipecat's runner serves it,
    with MindBot's message cap. MindBot's own apps get ``mindbot.server.server_config``."""
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_max_size=settings.max_ws_message_bytes,
        timeout_graceful_shutdown=5,
    )


class _ThreadedServer:
    """A uvicorn server on its own event loop in a daemon thread: MindBot's apps served as
    ``mindbot serve`` serves them, the bare baseline as Pipecat's runner does."""

    def __init__(self, app: FastAPI, port: int, settings: Settings, *, bare: bool = False):
        from mindbot.server import server_config

        if bare:
            config = bare_server_config(app, settings, port=port)
        else:
            config = server_config(app, settings, host="127.0.0.1", port=port)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"ws://127.0.0.1:{port}/ws"

    def __enter__(self) -> _ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def bare_pipecat_app(bot: MindBot, log: _LatencyLog, system_instruction: str) -> FastAPI:
    """A bare Pipecat bot: the same services and LLM server, Pipecat's classes as they come.

    Whisper, Piper and smart-turn are Pipecat's own services (each loads its model per call),
    Silero VAD and the default turn strategies sit on the user aggregator, and there are no
    MindBot processors or settings beyond the model paths.
    """
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.runner.utils import parse_telephony_websocket
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )
    from pipecat.workers.runner import WorkerRunner

    app = FastAPI()
    endpoint = bot.services.llm_endpoint
    settings = bot.settings
    greeting = bot.personas.get(settings.persona).greeting_for(None)

    @app.websocket("/ws")
    async def twilio(websocket: WebSocket):
        await websocket.accept()
        _, data = await parse_telephony_websocket(websocket)
        caller = (data.get("body") or {}).get("from_number", "")
        transport = FastAPIWebsocketTransport(
            websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=TwilioFrameSerializer(
                    stream_sid=data["stream_id"],
                    params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
                ),
            ),
        )
        stt = _bare_stt(bot)
        llm = OpenAILLMService(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            settings=OpenAILLMService.Settings(
                model=endpoint.model,
                system_instruction=system_instruction,
                temperature=settings.llm_temperature,
                max_tokens=settings.llm_max_tokens,
            ),
        )
        llm.supports_developer_role = False
        tts = _bare_tts(bot)
        context = LLMContext()
        user, assistant = LLMContextAggregatorPair(
            context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
        )
        pipeline = Pipeline([transport.input(), stt, user, llm, tts, transport.output(), assistant])
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=16000, audio_out_sample_rate=8000, enable_metrics=True
            ),
            observers=[latency_observer(log.by_caller[caller].append)],
            enable_rtvi=False,
        )

        @transport.event_handler("on_client_connected")
        async def _connected(_t, _c):
            await worker.queue_frames([TTSSpeakFrame(greeting)])

        @transport.event_handler("on_client_disconnected")
        async def _disconnected(_t, _c):
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def _bare_stt(bot: MindBot):
    """Pipecat's own STT service for the bot's provider, configured as Pipecat's docs show."""
    from pipecat.transcriptions.language import Language

    settings = bot.settings
    if bot.providers.stt == "deepgram":
        from pipecat.services.deepgram.stt import DeepgramSTTService

        assert settings.deepgram_api_key is not None
        return DeepgramSTTService(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_base_url,
            settings=DeepgramSTTService.Settings(model=settings.deepgram_model),
        )
    from pipecat.services.whisper.stt import WhisperSTTService

    from mindbot.services import _packaged_whisper_path

    return WhisperSTTService(
        device="cpu",
        compute_type="int8",
        settings=WhisperSTTService.Settings(
            model=str(_packaged_whisper_path()), language=Language.EN
        ),
    )


def _bare_tts(bot: MindBot):
    """Pipecat's own TTS service for the bot's provider."""
    settings = bot.settings
    if bot.providers.tts == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        assert settings.cartesia_api_key is not None
        return CartesiaTTSService(
            api_key=settings.cartesia_api_key.get_secret_value(),
            url=settings.cartesia_url,
            settings=CartesiaTTSService.Settings(
                voice=settings.cartesia_voice, model=settings.cartesia_model
            ),
        )
    from pipecat.services.piper.tts import PiperTTSService

    from mindbot.services import _packaged_piper_dir

    return PiperTTSService(
        download_dir=_packaged_piper_dir(),
        settings=PiperTTSService.Settings(voice=settings.piper_voice),
    )


async def run_latency_bench(
    bot: MindBot,
    run: PipelineRun,
    *,
    system_instruction: str,
    calls: int,
    turns_per_call: int = 2,
    baseline: bool = True,
    warmup_calls: int = 1,
    cache_dir: Path | None = None,
    variants: dict[str, MindBot] | None = None,
    questions: list[str] | None = None,
    cloud: CloudProfile | None = None,
) -> BenchResult:
    """Place ``calls`` simulated calls to each system, alternating, and measure every reply.

    ``warmup_calls`` unmeasured calls per system come first, so that neither system pays
    for first use (the LLM server's prompt cache, lazy imports) inside the figures.

    Args:
        variants: Started MindBot twins of ``bot`` that differ in one feature, by name
            (``STORAGE_OFF``, ``KB_OFF``); their calls run as more systems, so the feature on
            and off are compared in the same run.
        questions: What the callers ask (default: ``QUESTIONS``, general knowledge).
        cloud: The running cloud profile, when ``bot`` (and its twins) use its stand-ins.
    """
    questions = questions or QUESTIONS
    variants = variants or {}
    from mindbot.server import create_app

    log = _LatencyLog()
    bot.listeners.append(log)
    result = BenchResult(profile=f"{bot.providers.stt}/{bot.providers.llm}/{bot.providers.tts}")
    if cloud is not None:
        result.profile = f"cloud stand-ins ({result.profile})"
        result.injected = cloud.latencies.total + bot.settings.audio.vad_stop_secs

    def expect(utterances: list[str]) -> None:
        if cloud is not None:
            cloud.expect(utterances)

    systems = {"mindbot": create_app(bot, run)}
    if baseline:
        systems["bare"] = bare_pipecat_app(bot, log, system_instruction)
    for name, twin in variants.items():
        twin.listeners.append(log)
        systems[name] = create_app(twin, run)
    servers = {
        name: _ThreadedServer(app, free_port(), bot.settings, bare=name == "bare")
        for name, app in systems.items()
    }
    for server in servers.values():
        server.__enter__()
    try:
        for n in range(warmup_calls):
            for name, server in servers.items():
                caller = f"+1555999{n:02d}{len(name):02d}"
                expect(questions[:1])
                await simulated_call(
                    server.url,
                    questions[:1],
                    from_number=caller,
                    cache_dir=cache_dir,
                    transcribe_replies=False,
                )
                log.by_caller.pop(caller, None)
        question = 0
        for n in range(calls):
            for name, server in servers.items():
                caller = f"+1555{n:03d}{len(name):04d}"
                asked = [questions[(question + i) % len(questions)] for i in range(turns_per_call)]
                expect(asked)
                try:
                    report = await simulated_call(
                        server.url,
                        asked,
                        from_number=caller,
                        cache_dir=cache_dir,
                        transcribe_replies=False,
                        keep_recording=True,
                    )
                except TimeoutError as e:
                    logger.warning(f"bench: a {name} call failed: {e}")
                    result.failures[name] += 1
                    continue
                await asyncio.sleep(0.5)  # let the session report its last latency
                result.greetings[name].append(report.greeting.latency or 0.0)
                reports = log.by_caller.pop(caller, [])
                recorded = latencies_from_recording(report.recording or b"")
                if len(recorded) != len(report.turns):
                    recorded = []  # utterances not told apart: no check rather than a wrong one
                for i, turn in enumerate(report.turns):
                    pipeline = reports[i] if i < len(reports) else None
                    result.replies.append(
                        Reply(
                            system=name,
                            question=turn.said,
                            caller_latency=turn.latency or 0.0,
                            pipeline_latency=pipeline.seconds if pipeline else None,
                            stages=pipeline.stages if pipeline else {},
                            recorded_latency=recorded[i] if recorded else None,
                        )
                    )
                print(
                    f"  call {n + 1}/{calls} {name:8s} "
                    + " ".join(f"{t.latency:.2f}s" for t in report.turns),
                    flush=True,
                )
            question += turns_per_call
    finally:
        for server in servers.values():
            server.__exit__()
        bot.listeners.remove(log)
        for twin in variants.values():
            twin.listeners.remove(log)
    return result


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a latency summary."""
    m, b = summary["systems"]["mindbot"], summary["systems"].get("bare", {})
    ratios = summary["ratios"]

    def cell(value: float | None) -> str:
        return f"{value:.3f} s" if value is not None else "-"

    rows = [
        ("voice-to-voice p50 (caller side)", "caller_p50"),
        ("voice-to-voice p95 (caller side)", "caller_p95"),
        ("silence to bot speech p50 (pipeline)", "pipeline_p50"),
        ("silence to bot speech p95 (pipeline)", "pipeline_p95"),
        ("greeting after start p50", "greeting_p50"),
    ]
    lines = [
        f"profile {summary['profile']}: {m['replies']} MindBot replies, "
        f"{b.get('replies', 0)} bare Pipecat replies",
        f"{'':40s}{'MindBot':>12s}{'bare':>12s}{'ratio':>8s}",
    ]
    for label, key in rows:
        ratio = ratios.get(key)
        lines.append(
            f"{label:40s}{cell(m[key]):>12s}{cell(b.get(key)):>12s}"
            f"{(f'{ratio:.2f}' if ratio else '-'):>8s}"
        )
    lines.append(
        "the instrument, checked against the call recordings: largest difference "
        + ", ".join(
            f"{name} {v['instrument_max_diff_ms']} ms"
            for name, v in summary["systems"].items()
            if v.get("instrument_max_diff_ms") is not None
        )
    )
    if injected := summary.get("injected"):
        lines.append(
            f"injected by the stand-ins, plus the VAD's stop time: {injected:.3f} s a reply; "
            "what is left is each system's own time:"
        )
        for label, key in (("own time p50", "own_p50"), ("own time p95", "own_p95")):
            lines.append(f"  {label:38s}{cell(m[key]):>12s}{cell(b.get(key)):>12s}")
    for name, compared in summary.get("variants", {}).items():
        off = summary["systems"][name]
        lines.append(f"MindBot with {VARIANTS[name]} ({off['replies']} replies), same run:")
        for label, key in rows[:4]:
            ratio = compared["ratios"].get(key)
            added = compared["added_ms"].get(key)
            lines.append(
                f"  {label:38s}{cell(off[key]):>12s}  on/off {(f'{ratio:.2f}' if ratio else '-')}"
                f"  on-off {(f'{added:+.0f} ms' if added is not None else '-')}"
            )
    lines.append("median stages (pipeline side):")
    labels = list(dict.fromkeys([*m["stages_median"], *b.get("stages_median", {})]))
    for label in labels:
        lines.append(
            f"  {label:38s}{cell(m['stages_median'].get(label)):>12s}"
            f"{cell(b.get('stages_median', {}).get(label)):>12s}"
        )
    return "\n".join(lines)


def write_json(result: BenchResult, path: Path) -> None:
    """Write the raw replies, the summary and the machine to ``path``."""
    record_json(path, summary=result.summary(), replies=[asdict(r) for r in result.replies])


def record_json(path: Path, **results: Any) -> None:
    """Write a benchmark's ``results`` to ``path`` with the command, machine, commit and date.

    A ``headline`` list (``{"measure", "mindbot", "bare", "target"}`` rows of formatted
    figures) is what ``mindbot bench table`` puts in BENCHMARKS.md's summary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **results,
        "command": _command(),
        "machine": machine_description(),
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    path.write_text(json.dumps(payload, indent=2, default=str))


def _command() -> str:
    """The ``mindbot ...`` command line running now, or "" when it is not the CLI (a test)."""
    program = Path(sys.argv[0])
    if program.name != "mindbot" and program.parent.name != "mindbot":
        return ""
    # Audio settings from the environment change what is measured: they belong to the command.
    audio = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MINDBOT_AUDIO__")]
    return " ".join([*audio, "mindbot", *sys.argv[1:]])


def machine_description() -> str:
    """CPU model, cores and Python, for the benchmark record."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ from it."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _pct(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def run_memory_bench(
    path: Path, *, turns: int, memories: int, recalls: int = 200
) -> dict[str, Any]:
    """Time a session start's memory load with a large database.

    Builds ``path`` with ``turns`` turns (spread over many callers' sessions) and ``memories``
    memories for one caller, then times what a new call from that caller does before its
    greeting: find the user by phone number, then ``MemoryService.recall``.

    Returns:
        Build time and the p50/p95/max of the load in milliseconds.
    """
    from mindbot.memory import MemoryService
    from mindbot.storage import MemoryRecord, SessionRecord, SQLiteStorage, TurnRecord

    storage = SQLiteStorage(path)
    memory = MemoryService(storage)
    built = time.perf_counter()
    caller = storage.user_for_identity("phone", "+15550100001")
    per_session = 20
    sessions = max(1, turns // per_session)
    for n in range(sessions):
        user = caller if n % 10 == 0 else storage.user_for_identity("phone", f"+1555{n:07d}")
        storage.start_session(SessionRecord(f"s{n}", user.id, "twilio", "assistant", "mindbot"))
    for first in range(0, sessions, 500):
        storage.add_turns(
            TurnRecord(
                f"s{n}",
                i,
                "user" if i % 2 else "assistant",
                f"Turn {i} of a conversation about hiking, cooking and travel plans.",
            )
            for n in range(first, min(sessions, first + 500))
            for i in range(per_session)
        )
    topics = ["hiking", "cooking", "travel", "music", "books", "gardening", "football", "chess"]
    for i in range(memories):
        storage.add_memory(
            MemoryRecord(
                caller.id,
                f"Likes {topics[i % len(topics)]} and mentioned detail number {i}.",
                "fact" if i % 5 else "summary",
                0.8,
                source_session_id="s0",
                source_turn_idx=i % per_session,
            )
        )
    built = time.perf_counter() - built
    timings = []
    for i in range(recalls):
        start = time.perf_counter()
        user = storage.find_user("+15550100001")
        assert user is not None
        context = memory.recall(user.id, query=f"What about {topics[i % len(topics)]}?")
        timings.append((time.perf_counter() - start) * 1000)
    storage.close()
    return {
        "turns": sessions * per_session,
        "memories": memories,
        "recalled": len(context.memories),
        "build_secs": built,
        "load_ms_p50": _pct(timings, 50),
        "load_ms_p95": _pct(timings, 95),
        "load_ms_max": max(timings),
    }
