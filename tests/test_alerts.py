"""Alert rules: the sliding windows' arithmetic, the cooldown, and alerts queued as webhook
events after a real phone call whose replies are slow and whose LLM fails."""

from __future__ import annotations

import asyncio

import pytest
from api_helpers import api_client
from pydantic import ValidationError

from mindbot.alerts import AlertMonitor, AlertRule
from mindbot.config import Settings
from mindbot.harness import simulated_call, ws_url
from mindbot.session import Call, ErrorReport, LatencyReport, TurnReport
from mindbot.standins import HttpError, Text

from conftest import wait_until

CALL = Call(transport="twilio", from_number="+15550109191")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def monitor(*rules: AlertRule, cooldown: float = 0.0) -> tuple[AlertMonitor, Clock]:
    clock = Clock()
    return AlertMonitor(rules, cooldown_secs=cooldown, clock=clock), clock


def latencies(alerts: AlertMonitor, *seconds: float) -> None:
    for value in seconds:
        alerts.on_latency(CALL, LatencyReport(value, {"LLM inference": value / 2}))


def replies(alerts: AlertMonitor, n: int) -> None:
    for _ in range(n):
        alerts.on_turn(CALL, TurnReport("user", "hello"))  # not a reply: not counted
        alerts.on_turn(CALL, TurnReport("assistant", "hi"))


def errors(alerts: AlertMonitor, n: int) -> None:
    for _ in range(n):
        alerts.on_error(CALL, ErrorReport("llm", "OpenAILLMService#0", "HTTP 500"))


def test_p95_latency_fires_above_its_threshold_and_resolves_when_the_window_empties():
    slow = AlertRule(
        name="slow", metric="latency_p95", threshold=1.0, window_secs=60, min_samples=5
    )
    alerts, clock = monitor(slow)

    latencies(alerts, 2.0, 2.0, 2.0, 2.0)
    assert alerts.check() == []  # 4 samples: too few to judge

    alerts, clock = monitor(slow)
    latencies(alerts, *[0.5] * 19, 3.0)
    assert alerts.check() == []  # one outlier in 20 is above the 95th percentile (rank 19)
    latencies(alerts, 3.0)
    (fired,) = alerts.check()  # 21 samples: rank 20 is a slow one
    assert (fired.state, fired.value, fired.samples) == ("firing", 3.0, 21)
    payload = fired.payload()
    assert payload["rule"] == "slow" and payload["metric"] == "latency_p95"
    assert (payload["threshold"], payload["window_secs"], payload["value"]) == (1.0, 60, 3.0)
    assert payload["at"].endswith("+00:00")
    assert alerts.check() == [] and alerts.check() == []  # still firing: no storm

    clock.now += 61  # every sample is now older than the window
    (resolved,) = alerts.check()
    assert (resolved.state, resolved.value, resolved.samples) == ("resolved", None, 0)


def test_the_window_slides_and_keeps_only_recent_latencies():
    alerts, clock = monitor(
        AlertRule(name="slow", metric="latency_p95", threshold=1.0, window_secs=10, min_samples=1)
    )
    latencies(alerts, 4.0)
    clock.now += 6
    latencies(alerts, 0.2, 0.3)
    (fired,) = alerts.check()
    assert fired.value == 4.0 and fired.samples == 3
    clock.now += 5  # the 4 s reply left the window; the fast ones remain
    (resolved,) = alerts.check()
    assert (resolved.state, resolved.value, resolved.samples) == ("resolved", 0.3, 2)


def test_error_rate_counts_errors_against_replies_in_the_window():
    failing = AlertRule(
        name="failing", metric="error_rate", threshold=0.25, window_secs=60, min_samples=4
    )
    alerts, clock = monitor(failing)
    replies(alerts, 3)
    errors(alerts, 1)
    assert alerts.check() == []  # 1 / 4 = 0.25: not above the threshold
    errors(alerts, 1)
    (fired,) = alerts.check()
    assert fired.state == "firing" and fired.value == pytest.approx(2 / 5) and fired.samples == 5

    clock.now += 30
    replies(alerts, 6)
    (resolved,) = alerts.check()
    assert resolved.state == "resolved" and resolved.value == pytest.approx(2 / 11)

    clock.now += 31  # the errors left the window: only the 6 later replies count
    errors(alerts, 1)
    assert alerts.check() == []  # 1 / 7 ≈ 0.14
    errors(alerts, 2)
    (again,) = alerts.check()
    assert again.state == "firing" and again.value == pytest.approx(3 / 9)


def test_a_flapping_rule_fires_again_only_after_the_cooldown():
    alerts, clock = monitor(
        AlertRule(name="slow", metric="latency_p95", threshold=1.0, window_secs=5, min_samples=1),
        cooldown=100,
    )
    latencies(alerts, 3.0)
    assert [a.state for a in alerts.check()] == ["firing"]
    clock.now += 10
    latencies(alerts, 0.4)
    assert [a.state for a in alerts.check()] == ["resolved"]
    clock.now += 10
    latencies(alerts, 3.0)
    assert alerts.check() == []  # above again, 20 s after firing: held back
    clock.now += 50
    latencies(alerts, 3.0)
    assert alerts.check() == []
    clock.now += 31  # 101 s after it fired, and still above
    latencies(alerts, 3.0)
    (again,) = alerts.check()
    assert again.state == "firing" and again.value == 3.0


def test_alert_rules_are_validated_in_the_settings():
    with pytest.raises(ValidationError, match="latency_p95"):
        Settings(
            _env_file=None,
            monitoring={"alerts": [{"name": "x", "metric": "latency_p50", "threshold": 1}]},
        )
    with pytest.raises(ValidationError, match="unique"):
        rule = {"name": "x", "metric": "error_rate", "threshold": 0.1}
        Settings(_env_file=None, monitoring={"alerts": [rule, rule]})


async def test_a_call_with_slow_replies_and_a_failing_llm_queues_one_alert_per_rule(
    cloud_services, voice_cache, warnings_logged
):
    cloud_services.llm.script(
        Text("Paris is the capital of France."),
        HttpError(500, "the model is down", type="server_error", should_retry=False),
    )
    bot = cloud_services.bot(
        monitoring={
            "alert_check_secs": 0.2,
            "alert_cooldown_secs": 3600,
            "alerts": [
                # Any real reply is slower than a millisecond.
                {"name": "slow", "metric": "latency_p95", "threshold": 0.001, "min_samples": 1},
                {"name": "failing", "metric": "error_rate", "threshold": 0.1, "min_samples": 3},
            ],
        }
    )
    try:
        assert bot.storage is not None
        # Nothing listens on port 9: the dispatcher's deliveries fail, the rows stay.
        bot.storage.add_webhook_subscription("http://127.0.0.1:9/alerts", ["alert"], "whsec_t")
        async with api_client(bot) as client:
            await simulated_call(
                ws_url(str(client.base_url).rstrip("/")),
                ["What is the capital of France?", "What is the weather like?"],
                from_number=CALL.from_number,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
            await wait_until(lambda: not bot.active_sessions, timeout=15)

            def firing(rule: str) -> list[dict]:
                rows = bot.storage.outbox(event_type="alert")  # type: ignore[union-attr]
                return [r.payload for r in rows if r.payload["rule"] == rule]

            await wait_until(lambda: firing("slow") and firing("failing"), timeout=10)
            await asyncio.sleep(1.0)  # five more checks, each free to queue a second event
            checks_later = [firing("slow"), firing("failing")]
    finally:
        bot.stop()
    slow, failing = checks_later
    # Still above the threshold after many checks and a second slow reply: one event each.
    assert [p["state"] for p in slow] == ["firing"] and slow[0]["value"] > 0.001
    assert slow[0]["samples"] >= 1 and slow[0]["threshold"] == 0.001
    assert [p["state"] for p in failing] == ["firing"]
    assert 0.1 < failing[0]["value"] <= 0.5 and failing[0]["samples"] >= 3
    warnings = [m for level, m in warnings_logged if m.startswith("Alert ")]
    assert any(m.startswith("Alert slow firing: latency_p95") for m in warnings)
    assert any(m.startswith("Alert failing firing: error_rate") for m in warnings)
    everything = repr(checks_later) + repr(warnings)
    assert CALL.from_number not in everything and "France" not in everything
