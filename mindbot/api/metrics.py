"""``GET /metrics`` (Prometheus), and starting the server's monitoring: metrics, tracing, alerts.

``/metrics`` answers in Prometheus' text format. It needs an API key with the ``read`` scope
(Prometheus sends it with ``authorization: {type: Bearer, credentials: <key>}``) unless
``monitoring.metrics_public`` is on; with ``monitoring.metrics: false`` there is no such route
(404). A Prometheus scrape config::

    scrape_configs:
      - job_name: mindbot
        authorization: {credentials_file: /etc/prometheus/mindbot.key}
        static_configs: [{targets: ["mindbot:7860"]}]

The metrics and alert listeners join the runtime's listeners when the server starts and leave
when it stops; tracing is set up (once per process) at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from mindbot.alerts import AlertMonitor
from mindbot.monitoring import LoopLagProbe, SessionMetrics, start_tracing

if TYPE_CHECKING:
    from mindbot.api.app import Api
    from mindbot.session import SessionListener


def metrics_router(api: Api) -> APIRouter:
    """The ``/metrics`` route; also registers the monitoring's start-up and shutdown.

    Args:
        api: What the API's routes share.
    """
    bot = api.bot
    settings = bot.settings.monitoring
    router = APIRouter(tags=["monitoring"])
    if settings.otlp_endpoint:

        async def _start_tracing() -> None:
            start_tracing(settings)

        api.on_startup.append(_start_tracing)
    if settings.alerts:
        alerts = AlertMonitor(
            settings.alerts,
            cooldown_secs=settings.alert_cooldown_secs,
            check_secs=settings.alert_check_secs,
            storage=lambda: bot.storage,
        )
        _listen(api, alerts)
        api.on_startup.append(alerts.start)
        api.on_shutdown.append(alerts.stop)
    if not settings.metrics:
        return router

    pricing = bot.settings.pricing
    metrics = SessionMetrics(pricing.cost, pricing.currency)
    _listen(api, metrics)
    probe = LoopLagProbe(metrics.loop_lag)
    api.on_startup.append(probe.start)
    api.on_shutdown.append(probe.stop)
    guard = [] if settings.metrics_public else [Depends(api.auth.require("read"))]

    @router.get(
        "/metrics",
        dependencies=guard,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    async def prometheus_metrics() -> Response:
        """Sessions, turns, latency, errors, tool calls, usage, cost and event-loop lag, for
        Prometheus."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def _listen(api: Api, listener: SessionListener) -> None:
    """Have ``listener`` hear the runtime's sessions while the server runs.

    A runtime can outlive its server (tests serve one runtime many times): the listener leaves
    with the server, or every later server would count twice.
    """
    listeners = api.bot.listeners

    async def join() -> None:
        listeners.append(listener)

    async def leave() -> None:
        if listener in listeners:
            listeners.remove(listener)

    api.on_startup.append(join)
    api.on_shutdown.append(leave)
