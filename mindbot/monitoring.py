"""Prometheus metrics, OpenTelemetry tracing and the settings of both (and of alert rules).

Settings live under ``Settings.monitoring`` (``MINDBOT_MONITORING__*`` or the ``monitoring:``
section of the YAML settings file)::

    monitoring:
      metrics: true                 # GET /metrics (Prometheus text format)
      metrics_public: false         # true: no API key needed to scrape
      otlp_endpoint: http://otel-collector:4318/v1/traces   # OTLP/HTTP; unset: no tracing
      alerts:
        - {name: slow-replies, metric: latency_p95, threshold: 2.0, window_secs: 300}
        - {name: failing, metric: error_rate, threshold: 0.1, window_secs: 600, min_samples: 20}

``SessionMetrics`` is a ``SessionListener`` that counts what sessions report into its own
``CollectorRegistry`` (one per server, so several servers can share a process, as in the tests).
Its labels are operator-chosen names only (transport, provider, model, tool, stage, command):
never a user id, phone number, session id or words.

Tracing uses Pipecat's (``setup_tracing`` and ``PipelineWorker(enable_tracing=True)``, the
conversation id being the session id). OpenTelemetry allows one global tracer provider per
process, so ``start_tracing`` sets it up once, on first use, and later calls only say whether
it is on: the first endpoint configured in a process is the one spans go to. Pipecat's spans
carry the caller's transcript and the LLM's messages; unless ``trace_content`` is on they are
replaced by ``[redacted]`` before they leave the process.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindbot.alerts import AlertRule

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from mindbot.session import (
        Call,
        ErrorReport,
        LatencyReport,
        ToolCallReport,
        TurnReport,
        UsageReport,
    )

VOICE_TO_VOICE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5)
"""Seconds: fine where a conversation feels natural (under a second), coarse up to 5 s."""

STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""Seconds: one stage of a reply (transcription, LLM inference, speech synthesis...)."""

LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0)
"""Seconds: around 0.1 s, where a stall becomes a gap in the callers' audio."""

REDACTED = "[redacted]"
"""What replaces the content of a span attribute that carries words."""

CONTENT_ATTRIBUTES = frozenset(
    {
        "input",  # the LLM's messages: system prompt, memories, the caller's words
        "output",  # the LLM's reply
        "text",  # what the TTS spoke
        "text_output",
        "transcript",  # what the STT heard
        "gen_ai.system_instructions",
        "user_id",
    }
)
"""The attributes of Pipecat's spans that carry personal data (pipecat/utils/tracing)."""


class MonitoringSettings(BaseModel):
    """Prometheus metrics, OpenTelemetry tracing and alert rules."""

    model_config = ConfigDict(extra="forbid")

    metrics: bool = Field(default=True, description="Serve Prometheus metrics at GET /metrics.")
    metrics_public: bool = Field(
        default=False,
        description="Let anyone scrape /metrics; by default it needs an API key with the 'read' "
        "scope (Prometheus: authorization: {credentials: <key>}).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="An OTLP/HTTP collector's traces URL (e.g. http://localhost:4318/v1/traces; "
        "a URL without a path gets /v1/traces). Set: sessions are traced with Pipecat's "
        "tracing. Headers come from OTEL_EXPORTER_OTLP_TRACES_HEADERS.",
    )
    service_name: str = Field(
        default="mindbot", min_length=1, description="The traces' service.name."
    )
    trace_content: bool = Field(
        default=False,
        description="Keep transcripts and LLM messages in the spans (personal data); by default "
        "they are replaced by '[redacted]'.",
    )
    alerts: list[AlertRule] = Field(
        default_factory=list,
        description="Alert rules: when one crosses its threshold an 'alert' webhook event is "
        "queued (see mindbot/alerts.py).",
    )
    alert_cooldown_secs: float = Field(
        default=900.0,
        ge=0,
        description="A rule that fired does not fire again for this long, however it flaps.",
    )
    alert_check_secs: float = Field(
        default=5.0, gt=0, description="How often the alert rules are checked."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _traces_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        if parts.path in ("", "/"):
            return value.rstrip("/") + "/v1/traces"
        return value

    @field_validator("alerts")
    @classmethod
    def _unique_names(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [rule.name for rule in rules]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"alert rule names must be unique: {', '.join(duplicates)}")
        return rules

    def tracing_enabled(self) -> bool:
        """Whether sessions are traced; sets up the process's tracing on first use.

        Returns:
            True when an endpoint is configured and tracing is set up in this process.
        """
        return start_tracing(self) if self.otlp_endpoint else False


# --- Prometheus ---------------------------------------------------------------------------------


class _Label:
    """Keeps a label's values few and harmless: names only, at most ``limit`` of them.

    A value that is not a plain name (or one past the limit) is counted as ``other``, so
    whatever a provider or an LLM makes up never becomes a new time series per request.
    """

    _NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:/+-]{0,63}$")

    def __init__(self, limit: int):
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit or not self._NAME.match(value):
            return "other"
        self._seen.add(value)
        return value


class SessionMetrics:
    """Counts what sessions report as Prometheus metrics, in its own registry.

    A ``SessionListener``: each event is a few counter increments (constant time, thread-safe),
    so it never holds up the audio path.

    Args:
        cost: Prices a usage report (``PricingSettings.cost``).
        currency: The currency of ``cost`` (ISO 4217 code), a label of the cost counter.
    """

    def __init__(self, cost: Callable[[UsageReport], float], currency: str):
        self.registry = CollectorRegistry()
        self._cost = cost
        self._currency = currency
        self._tool = _Label(100)
        self._stage = _Label(32)
        self._model = _Label(32)
        self._action = _Label(64)
        self._define()

    def _define(self) -> None:
        r = self.registry
        self.active = Gauge(
            "mindbot_active_sessions", "Sessions in progress.", ["transport"], registry=r
        )
        self.sessions = Counter(
            "mindbot_sessions", "Sessions ended, by how.", ["transport", "reason"], registry=r
        )
        self.turns = Counter("mindbot_turns", "Completed turns.", ["role"], registry=r)
        self.interruptions = Counter(
            "mindbot_interruptions", "Bot replies cut off by the caller.", registry=r
        )
        self.latency = Histogram(
            "mindbot_voice_to_voice_seconds",
            "From the caller's end of speech to the bot's first audio.",
            buckets=VOICE_TO_VOICE_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "mindbot_stage_latency_seconds",
            "One stage's share of a reply's latency.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "mindbot_errors", "Pipeline failures, by where.", ["kind", "fatal"], registry=r
        )
        self.tool_calls = Counter(
            "mindbot_tool_calls", "LLM tool calls.", ["tool", "status"], registry=r
        )
        self.tool_seconds = Histogram(
            "mindbot_tool_call_seconds", "Tool call durations.", ["tool"], registry=r
        )
        self.tokens = Counter(
            "mindbot_llm_tokens",
            "LLM tokens.",
            ["provider", "model", "direction"],
            registry=r,
        )
        self.characters = Counter(
            "mindbot_tts_characters", "Characters sent to the TTS.", ["provider"], registry=r
        )
        self.audio = Counter(
            "mindbot_stt_audio_seconds",
            "Seconds of audio sent to the STT.",
            ["provider"],
            registry=r,
        )
        self.cost = Counter(
            "mindbot_cost",
            "What the providers charge, from the price table (pricing).",
            ["service", "provider", "currency"],
            registry=r,
        )
        self.commands = Counter(
            "mindbot_voice_commands", "Voice commands carried out.", ["action"], registry=r
        )
        self.overruled = Counter(
            "mindbot_end_of_turn_overruled",
            "Smart-turn's end of turn overruled by the caller's words (mindbot.turn_text): "
            "held (a half-sentence held open), hold_expired (the caller had stopped after all), "
            "ended (a finished sentence answered without smart-turn's wait).",
            ["decision"],
            registry=r,
        )
        self.barge_in_pauses = Counter(
            "mindbot_barge_in_pauses",
            "Times the bot's audio was held because the caller may have been talking over it "
            "(mindbot.barge_in), by how the pause ended: interrupted (the caller's turn "
            "started), resumed (they were quiet again: a false alarm, the bot went on), expired "
            "(a voice the VAD never took for the caller's).",
            ["outcome"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "mindbot_event_loop_lag_seconds",
            "How late the server's event loop woke a timer (LoopLagProbe).",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )

    def __repr__(self) -> str:
        return "SessionMetrics()"

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)

    def on_session_started(self, call: Call) -> None:
        """Count the session as active."""
        self.active.labels(call.transport).inc()

    def on_session_ended(self, call: Call, reason: str) -> None:
        """Count the session as ended."""
        self.active.labels(call.transport).dec()
        self.sessions.labels(call.transport, reason).inc()

    def on_turn(self, call: Call, turn: TurnReport) -> None:
        """Count the turn; a user turn without words was a voice command, counted as such."""
        if turn.role == "user" and not turn.text.strip():
            return
        self.turns.labels(turn.role).inc()
        if turn.interrupted:
            self.interruptions.inc()

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        """Observe the reply's latency and each stage's share of it."""
        self.latency.observe(latency.seconds)
        for stage, seconds in latency.stages.items():
            self.stages.labels(self._stage(stage)).observe(seconds)

    def on_tool_call(self, call: Call, report: ToolCallReport) -> None:
        """Count the tool call by tool and outcome."""
        tool = self._tool(report.name)
        self.tool_calls.labels(tool, report.status).inc()
        self.tool_seconds.labels(tool).observe(report.duration_secs)

    def on_usage(self, call: Call, usage: UsageReport) -> None:
        """Count tokens, characters or audio seconds, and what they cost."""
        if usage.service == "llm":
            model = self._model(usage.model)
            self.tokens.labels(usage.provider, model, "prompt").inc(usage.prompt_tokens)
            self.tokens.labels(usage.provider, model, "completion").inc(usage.completion_tokens)
        elif usage.service == "tts":
            self.characters.labels(usage.provider).inc(usage.characters)
        elif usage.service == "stt":
            self.audio.labels(usage.provider).inc(usage.audio_secs)
        cost = self._cost(usage)
        self.cost.labels(usage.service, usage.provider, self._currency).inc(max(cost, 0.0))

    def on_error(self, call: Call, error: ErrorReport) -> None:
        """Count the failure by kind."""
        self.errors.labels(error.kind, "true" if error.fatal else "false").inc()

    def on_command(self, call: Call, action: str) -> None:
        """Count the voice command."""
        self.commands.labels(self._action(action)).inc()

    def on_end_of_turn_overruled(self, call: Call, decision: str) -> None:
        """Count the text check's decision against smart-turn."""
        self.overruled.labels(decision).inc()

    def on_barge_in_pause(self, call: Call, outcome: str) -> None:
        """Count how a barge-in pause ended."""
        self.barge_in_pauses.labels(outcome).inc()


# --- Tracing ------------------------------------------------------------------------------------

_tracing_lock = threading.Lock()
_tracing_endpoint: str | None = None
_tracing_failed = False


def start_tracing(settings: MonitoringSettings) -> bool:
    """Send Pipecat's spans to ``settings.otlp_endpoint``, set up once per process.

    OpenTelemetry has one global tracer provider per process, and it can be set only once:
    the first call sets it up (``pipecat.utils.tracing.setup.setup_tracing`` with an OTLP/HTTP
    exporter); later calls return whether that worked. A later call with another endpoint logs
    a warning: spans keep going to the first one. If the host application already installed an
    SDK tracer provider, the exporter is added to it instead of replacing it.

    Args:
        settings: The monitoring settings (``otlp_endpoint`` set).

    Returns:
        Whether sessions in this process can be traced.
    """
    global _tracing_endpoint, _tracing_failed
    endpoint = settings.otlp_endpoint
    if not endpoint:
        return False
    with _tracing_lock:
        if _tracing_endpoint is not None:
            if endpoint != _tracing_endpoint:
                logger.warning(
                    f"Tracing: this process already sends spans to {_tracing_endpoint}; "
                    f"{endpoint} is ignored (one tracer provider per process)"
                )
            return True
        if _tracing_failed:
            return False
        try:
            _set_up(settings, endpoint)
        except Exception as e:
            _tracing_failed = True
            logger.error(f"Tracing: setting up the exporter failed; sessions are not traced: {e}")
            return False
        _tracing_endpoint = endpoint
        logger.info(f"Tracing: sessions are traced to {endpoint} as {settings.service_name!r}")
        return True


def _set_up(settings: MonitoringSettings, endpoint: str) -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from pipecat.utils.tracing.setup import setup_tracing

    exporter: SpanExporter = OTLPSpanExporter(endpoint=endpoint)
    if not settings.trace_content:
        exporter = redacting_exporter(exporter)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(BatchSpanProcessor(exporter))
        return
    if not setup_tracing(settings.service_name, exporter=exporter):
        raise RuntimeError("Pipecat's setup_tracing failed (is opentelemetry-sdk installed?)")


def redacting_exporter(exporter: SpanExporter) -> SpanExporter:
    """Wrap ``exporter`` so that spans leave without the words said (``CONTENT_ATTRIBUTES``)."""
    from opentelemetry.sdk.trace.export import SpanExporter

    class RedactingSpanExporter(SpanExporter):
        """Replaces the content attributes of each span, then hands it to the real exporter."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return exporter.export([_redacted(span) for span in spans])

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return RedactingSpanExporter()


def _redacted(span: ReadableSpan) -> ReadableSpan:
    from opentelemetry.sdk.trace import ReadableSpan

    attributes: dict[str, Any] = dict(span.attributes or {})
    if not CONTENT_ATTRIBUTES & attributes.keys():
        return span
    for key in CONTENT_ATTRIBUTES & attributes.keys():
        attributes[key] = REDACTED
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class LoopLagProbe:
    """Measures how late the event loop runs a timer, into ``mindbot_event_loop_lag_seconds``.

    Every call's audio is paced by one event loop, so anything that holds it (a blocking call, a
    long garbage collection) delays every caller's audio at once; a stall over about 0.1 s is a
    gap the callers hear (``mindbot bench capacity``). The probe sleeps ``interval`` seconds
    and records by how much the wake-up came late. A stall of ``warn_secs`` or more is logged
    as a warning, at most once a minute.

    Args:
        histogram: Where each lag is observed.
        interval: Seconds between wake-ups.
        warn_secs: The stall that is worth a warning.
    """

    WARN_EVERY_SECS = 60.0

    def __init__(self, histogram: Histogram, *, interval: float = 0.1, warn_secs: float = 0.25):
        self._histogram = histogram
        self._interval = interval
        self._warn_secs = warn_secs
        self._task: asyncio.Task | None = None
        self._warned_at = -self.WARN_EVERY_SECS

    async def start(self) -> None:
        """Start probing on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event loop lag probe")

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - due)
            self._histogram.observe(lag)
            if lag >= self._warn_secs and loop.time() - self._warned_at >= self.WARN_EVERY_SECS:
                self._warned_at = loop.time()
                logger.warning(
                    f"The event loop stalled {lag * 1000:.0f} ms: every call's audio waited "
                    "(see mindbot_event_loop_lag_seconds)"
                )
