"""Alert rules: p95 latency or error rate over a sliding window, sent as ``alert`` webhook events.

Rules are configured in ``monitoring.alerts`` (see mindbot/monitoring.py)::

    monitoring:
      alert_cooldown_secs: 900
      alerts:
        - {name: slow-replies, metric: latency_p95, threshold: 2.0, window_secs: 300,
           min_samples: 10}
        - {name: failing, metric: error_rate, threshold: 0.1, window_secs: 600}

- ``latency_p95``: the 95th percentile (nearest rank) of the voice-to-voice latencies, in
  seconds, measured in the last ``window_secs``.
- ``error_rate``: the pipeline errors (``on_error``) divided by the errors plus the bot's
  completed replies in the window: 0.1 means one attempt to answer in ten failed.

A rule is checked only once its window holds ``min_samples`` samples. When its value goes
above the threshold it *fires*: a WARNING is logged and an ``alert`` event with
``state: "firing"`` is queued in the webhook outbox; when the value is back at or under the
threshold (or the window has too few samples left) it is *resolved*: an ``alert`` event with
``state: "resolved"``. A rule that fired does not fire again within ``alert_cooldown_secs``,
however often it flaps. The payload: ``rule, metric, state, value, threshold, window_secs,
samples, at`` (numbers only, no personal data).

``AlertMonitor`` is a ``SessionListener``: a report is one append to a bounded window
(constant time, on the event loop); the rules are checked by a background task every
``alert_check_secs``, and the outbox write runs on a thread.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from mindbot.session import Call, ErrorReport, LatencyReport, TurnReport
    from mindbot.storage import Storage

MAX_SAMPLES = 10_000
"""Samples kept per rule: beyond it the window is the most recent ones (memory stays bounded)."""

ALERT_EVENT = "alert"
"""The webhook event type of alerts."""


class AlertRule(BaseModel):
    """One alert rule: a metric over a sliding window against a threshold."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The rule's name, as the alert events carry it.",
    )
    metric: Literal["latency_p95", "error_rate"] = Field(
        description="latency_p95: seconds; error_rate: errors / (errors + replies), 0 to 1."
    )
    threshold: float = Field(ge=0, description="The rule fires when the value goes above it.")
    window_secs: float = Field(default=300.0, gt=0, description="The sliding window.")
    min_samples: int = Field(
        default=5, ge=1, description="Samples the window needs before the rule is checked."
    )


@dataclass
class Alert:
    """A rule changing state, as sent in an ``alert`` webhook event.

    Args:
        rule: The rule.
        state: ``firing`` or ``resolved``.
        value: The metric's value over the window (None: too few samples to tell).
        samples: How many samples the window held.
        at: When (ISO 8601, UTC).
    """

    rule: AlertRule
    state: Literal["firing", "resolved"]
    value: float | None
    samples: int
    at: str

    def payload(self) -> dict[str, Any]:
        """The webhook event's JSON data."""
        return {
            "rule": self.rule.name,
            "metric": self.rule.metric,
            "state": self.state,
            "value": None if self.value is None else round(self.value, 6),
            "threshold": self.rule.threshold,
            "window_secs": self.rule.window_secs,
            "samples": self.samples,
            "at": self.at,
        }

    def describe(self) -> str:
        """One log line's worth."""
        value = "n/a" if self.value is None else f"{self.value:.3f}"
        return (
            f"Alert {self.rule.name} {self.state}: {self.rule.metric} {value} over the last "
            f"{self.rule.window_secs:g}s (threshold {self.rule.threshold:g}, "
            f"{self.samples} samples)"
        )


class RuleWindow:
    """The samples of one rule within its sliding window.

    A latency sample's value is its seconds; an error-rate sample's is 1 for an error and 0
    for a completed reply.

    Args:
        rule: The rule.
    """

    def __init__(self, rule: AlertRule):
        self.rule = rule
        self.firing = False
        self.fired_at = -math.inf
        self._samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)
        self._sum = 0.0  # of the values in the deque: an error-rate window's error count

    def add(self, at: float, value: float) -> None:
        """Record a sample (constant time)."""
        if len(self._samples) == self._samples.maxlen:
            self._sum -= self._samples[0][1]
        self._samples.append((at, value))
        self._sum += value

    def value(self, now: float) -> tuple[float | None, int]:
        """The metric over the window ending ``now``, and the samples it holds.

        Returns:
            ``(None, n)`` when the window holds fewer than ``min_samples``.
        """
        horizon = now - self.rule.window_secs
        while self._samples and self._samples[0][0] < horizon:
            self._sum -= self._samples.popleft()[1]
        n = len(self._samples)
        if n < self.rule.min_samples or n == 0:
            return None, n
        if self.rule.metric == "error_rate":
            return self._sum / n, n
        ordered = sorted(value for _, value in self._samples)
        return ordered[math.ceil(0.95 * n) - 1], n


class AlertMonitor:
    """Checks the alert rules over what sessions report, and queues ``alert`` webhook events.

    A ``SessionListener``. ``check()`` is the state machine (callable with any clock);
    ``start()`` runs it in the background and queues each state change in the outbox.

    Args:
        rules: The alert rules.
        cooldown_secs: A rule that fired does not fire again for this long.
        check_secs: How often the background task checks the rules.
        storage: Returns the storage whose outbox gets the events (None: only logged).
        clock: Monotonic seconds (the windows' time).
    """

    def __init__(
        self,
        rules: Iterable[AlertRule],
        *,
        cooldown_secs: float,
        check_secs: float = 5.0,
        storage: Callable[[], Storage | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.windows = [RuleWindow(rule) for rule in rules]
        self._latency = [w for w in self.windows if w.rule.metric == "latency_p95"]
        self._errors = [w for w in self.windows if w.rule.metric == "error_rate"]
        self._cooldown = cooldown_secs
        self._check_secs = check_secs
        self._storage = storage
        self._clock = clock
        self._task: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"AlertMonitor({', '.join(w.rule.name for w in self.windows)})"

    # -- SessionListener: one append per rule of the metric, nothing else ---------------------

    def on_latency(self, call: Call, latency: LatencyReport) -> None:
        """Add the reply's latency to the latency rules' windows."""
        now = self._clock()
        for window in self._latency:
            window.add(now, latency.seconds)

    def on_turn(self, call: Call, turn: TurnReport) -> None:
        """Add a completed reply (a success) to the error-rate rules' windows."""
        if turn.role != "assistant":
            return
        now = self._clock()
        for window in self._errors:
            window.add(now, 0.0)

    def on_error(self, call: Call, error: ErrorReport) -> None:
        """Add a failure to the error-rate rules' windows."""
        now = self._clock()
        for window in self._errors:
            window.add(now, 1.0)

    # -- checking --------------------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[Alert]:
        """Check every rule at ``now`` and return the state changes (already applied).

        Args:
            now: The clock's time (default: now).
        """
        now = self._clock() if now is None else now
        at = datetime.now(UTC).isoformat(timespec="seconds")
        changes = []
        for window in self.windows:
            value, samples = window.value(now)
            above = value is not None and value > window.rule.threshold
            if above and not window.firing and now - window.fired_at >= self._cooldown:
                window.firing, window.fired_at = True, now
                changes.append(Alert(window.rule, "firing", value, samples, at))
            elif not above and window.firing:
                window.firing = False
                changes.append(Alert(window.rule, "resolved", value, samples, at))
        return changes

    async def publish(self, alerts: list[Alert]) -> None:
        """Log each state change and queue it as an ``alert`` webhook event (on a thread)."""
        for alert in alerts:
            if alert.state == "firing":
                logger.warning(alert.describe())
            else:
                logger.info(alert.describe())
        storage = self._storage()
        if storage is None or not alerts:
            return
        try:
            await asyncio.to_thread(_enqueue, storage, [a.payload() for a in alerts])
        except Exception as e:
            logger.error(f"{self!r}: queueing {len(alerts)} alert event(s) failed: {e}")

    async def run(self) -> None:
        """Check the rules every ``check_secs`` until cancelled."""
        while True:
            await asyncio.sleep(self._check_secs)
            try:
                await self.publish(self.check())
            except Exception:
                logger.exception(f"{self!r}: checking the alert rules failed")

    async def start(self) -> None:
        """Start checking in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="alert rules")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None


def _enqueue(storage: Storage, payloads: list[dict[str, Any]]) -> None:
    for payload in payloads:
        storage.add_outbox_event(ALERT_EVENT, payload)
