"""Mounting the REST API on the voice server, and what its routes share (``Api``).

``install_api(app, bot, ...)`` adds to the server's FastAPI app:

- the request body limit (413) on every HTTP route, and CORS when origins are configured;
- ``GET /readyz``;
- the ``/api/v1`` routers: sessions, users, catalog (personas, tools, knowledge base), jobs and
  calls, each route guarded by an API key with the scope it needs.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from loguru import logger

from mindbot.api.auth import Authenticator, Principal, RateLimiter, WebRTCTokens
from mindbot.api.health import readiness
from mindbot.api.jobs import JobRunner
from mindbot.api.limits import BodySizeLimit
from mindbot.errors import StorageError
from mindbot.session import Call
from mindbot.storage import Storage

if TYPE_CHECKING:
    from pipecat.transports.base_transport import BaseTransport

    from mindbot.runtime import MindBot

API_PREFIX = "/api/v1"

StartSession = Callable[["BaseTransport", Call], None]
"""Runs a session on a connected transport in the background (the server's own)."""


class Api:
    """What the API's routes share: the runtime, the key checks, tokens, jobs, live sessions.

    Args:
        bot: The started runtime.
        live: Session id → the task running it, kept by the server for every transport.
        start_session: Runs a new session in the background.
    """

    def __init__(self, bot: MindBot, *, live: dict[str, asyncio.Task], start_session: StartSession):
        self.bot = bot
        self.settings = bot.settings.api
        limiter = RateLimiter(self.settings.rate_limit_per_minute)
        self.auth = Authenticator(lambda: bot.storage, limiter)
        secret = self.settings.token_secret
        self.tokens = WebRTCTokens(
            secret.get_secret_value().encode() if secret else secrets.token_bytes(32),
            self.settings.webrtc_token_ttl_secs,
        )
        self.jobs = JobRunner(lambda: bot.storage, self.settings.max_concurrent_jobs)
        self.live = live
        self.start_session = start_session
        # Background work of the parts mounted on the API (webhook delivery, alert checks):
        # each adds its start and stop here, and the server's lifespan runs them.
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    def __str__(self) -> str:
        return "API"

    def storage(self) -> Storage:
        """The storage, or 503 when it is off."""
        if self.bot.storage is None:
            raise HTTPException(503, "This endpoint needs storage (MINDBOT_STORAGE=true)")
        return self.bot.storage

    def is_live(self, session_id: str) -> bool:
        """Whether the session is in progress in this server."""
        return any(call.session_id == session_id for call in self.bot.active_sessions)

    async def audit(
        self,
        who: Principal,
        action: str,
        *,
        user_id: int | None = None,
        session_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record an access to personal data (the data itself never goes in ``detail``).

        Raises:
            HTTPException: 503 when the row cannot be written: no access goes unrecorded.
        """
        try:
            await asyncio.to_thread(
                self.storage().add_access_audit,
                who.actor,
                action,
                key_id=who.key.id,
                user_id=user_id,
                session_id=session_id,
                detail=detail,
            )
        except StorageError as e:
            logger.error(f"{self}: the access audit row for {action} could not be written: {e}")
            raise HTTPException(503, "The access could not be audited; try again") from None

    async def webrtc_token_required(self) -> bool:
        """Whether ``/start`` and ``/api/offer`` need a token now (``api.webrtc_token``)."""
        mode = self.settings.webrtc_token
        if mode != "auto":
            return mode == "required"
        storage = self.bot.storage
        if storage is None:
            return False
        return bool(await asyncio.to_thread(storage.api_keys, include_revoked=False))

    async def check_webrtc_token(self, request: Request) -> None:
        """Let a WebRTC start through only with a valid token, when tokens are required.

        The token comes as ``Authorization: Bearer <token>`` or as the ``token`` query
        parameter.

        Raises:
            HTTPException: 401 without a valid, unexpired token.
        """
        if not await self.webrtc_token_required():
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.query_params.get("token", "")
        if not token:
            raise HTTPException(
                401,
                "A WebRTC token is required: get one from POST /api/v1/webrtc/token and send it "
                "as 'Authorization: Bearer <token>' or ?token=",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not self.tokens.verify(token.strip()):
            raise HTTPException(
                401, "Invalid or expired WebRTC token", headers={"WWW-Authenticate": "Bearer"}
            )

    async def startup(self) -> None:
        """Mark jobs an earlier run left unfinished as failed, and start the background work."""
        try:
            await asyncio.to_thread(self.jobs.recover)
        except StorageError as e:
            logger.error(f"{self}: checking for unfinished jobs failed: {e}")
        for start in self.on_startup:
            await start()

    async def shutdown(self) -> None:
        """Stop the background work and jobs."""
        for stop in reversed(self.on_shutdown):
            try:
                await stop()
            except Exception:
                logger.exception(f"{self}: stopping {stop!r} failed")
        await self.jobs.close()


def install_api(
    app: FastAPI, bot: MindBot, *, live: dict[str, asyncio.Task], start_session: StartSession
) -> Api:
    """Add the REST API, ``/readyz``, body limits and CORS to the server's app.

    Call ``Api.startup()`` and ``Api.shutdown()`` from the app's lifespan.

    Args:
        app: The voice server's app.
        bot: The started runtime.
        live: Session id → the task running it, for every transport.
        start_session: Runs a new session in the background.
    """
    from mindbot.api.analytics import analytics_router
    from mindbot.api.calls import calls_router
    from mindbot.api.catalog import catalog_router
    from mindbot.api.dashboard import dashboard_router
    from mindbot.api.jobs import jobs_router
    from mindbot.api.metrics import metrics_router
    from mindbot.api.sessions import sessions_router
    from mindbot.api.users import users_router
    from mindbot.api.webhooks import webhooks_router

    api = Api(bot, live=live, start_session=start_session)
    app.state.api = api
    settings = api.settings
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        overrides=[("POST", f"{API_PREFIX}/kb/[^/]+/uploads", settings.max_upload_bytes)],
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )

    @app.exception_handler(StorageError)
    async def storage_failed(_request: Request, error: StorageError) -> JSONResponse:
        logger.error(f"{api}: storage failed: {error}")
        return JSONResponse({"detail": "The database is unavailable; try again"}, status_code=503)

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """Whether this MindBot can take calls: each check's result; 503 when one fails."""
        ready, checks = await readiness(bot, timeout=settings.readiness_timeout_secs)
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    for router in (
        sessions_router(api),
        users_router(api),
        catalog_router(api),
        jobs_router(api),
        calls_router(api),
        webhooks_router(api),
        analytics_router(api),
    ):
        app.include_router(router, prefix=API_PREFIX)
    for router in (metrics_router(api), dashboard_router(api)):
        app.include_router(router)
    return api
