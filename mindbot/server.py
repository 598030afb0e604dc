"""MindBot's voice server: one FastAPI app for WebRTC, Daily and Twilio sessions, and its API.

Routes:
    ``GET /``                         redirects to Pipecat's prebuilt browser client
    ``POST /start``                   the prebuilt client's session start (WebRTC or Daily)
    ``POST|PATCH /api/offer``         SmallWebRTC offer and ICE candidates
    ``/sessions/{id}/api/offer``      the same, for the prebuilt client's session-scoped calls
    ``POST /twilio``                  Twilio's voice webhook: TwiML that connects a Media Stream
    ``WS /ws``                        the Twilio Media Streams websocket
    ``GET /healthz``                  liveness and the number of active sessions
    ``GET /readyz``                   readiness: database, models, local LLM, providers (503 if not)
    ``/api/v1/...``                   the REST API (``mindbot.api``; OpenAPI at ``/docs``):
        ``POST /webrtc/token``                        a short-lived token for /start, /api/offer
        ``GET /sessions``, ``GET /sessions/{id}``     sessions (filters), one with its turns
        ``POST /sessions/{id}/end``                   end a live session
        ``GET /conversations/export``                 a date range as JSON lines or CSV, streamed
        ``GET /users/{id}``, ``POST /users/lookup``   a user, by id or by identity
        ``PATCH /users/{id}/preferences``             change preferences
        ``GET /users/{id}/export``, ``DELETE /users/{id}``   GDPR export (json|md|csv), erasure
        ``GET /audit``                                who accessed personal data
        ``GET /personas``, ``GET /tools``             what the bot can be and do
        ``GET|POST /kb/{c}/documents``, ``POST /kb/{c}/uploads``,
        ``DELETE /kb/{c}/documents/{doc}``, ``POST /kb/{c}/jobs``    the knowledge base
        ``POST /jobs/questions``, ``GET /jobs``, ``GET /jobs/{id}``  background jobs
        ``POST /calls/daily``, ``POST /calls/twilio`` the bot joins a Daily room, or phones out

Every HTTP route refuses bodies over ``api.max_body_bytes`` (413). ``/api/v1`` needs an API key
(``mindbot keys create``) with the route's scope. With a Twilio auth token configured, ``POST
/twilio`` needs a valid ``X-Twilio-Signature`` (403 otherwise). ``/start`` and ``/api/offer``
need a WebRTC token when ``api.webrtc_token`` says so (by default: once an API key exists).

Each session runs in its own task; a session that fails is logged and ends alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import uuid
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import RedirectResponse, Response
from loguru import logger
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData

from mindbot.api.app import install_api
from mindbot.api.twilio import stream_twiml, valid_twilio_signature
from mindbot.config import Settings
from mindbot.runtime import MindBot, PipelineRun
from mindbot.session import Call
from mindbot.transports import accept_twilio_call, daily_transport, twilio_transport

MAX_PENDING_WEBRTC_SESSIONS = 1000


def server_config(app: FastAPI, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for MindBot's app.

    WebSocket messages are capped at ``max_ws_message_bytes``, and per-message compression is
    off: a phone call's audio is base64 μ-law, which deflate barely shrinks, and compressing
    fifty messages a second for every call is CPU on the event loop that paces every caller's
    audio.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ws_max_size=settings.max_ws_message_bytes,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's sight; call it once the
    server is built, before it takes calls.

    A started server holds about 330,000 objects (Pipecat, the provider SDKs, FastAPI, the
    models' wrappers) that live as long as the process. Each full collection walks them all:
    about 155 ms on this machine, a stop of the event loop that paces every caller's audio,
    and under many calls a full collection comes every few seconds. Frozen (``gc.freeze``),
    they are left out; a collection walks the calls' own objects only. Garbage is collected
    first, so nothing unreachable is kept.
    """
    gc.collect()
    gc.freeze()


def create_app(bot: MindBot, run: PipelineRun, *, join_daily: bool = False) -> FastAPI:
    """The voice server for one pipeline.

    Args:
        bot: The started MindBot runtime.
        run: The pipeline's entry point, run once per session.
        join_daily: Create (or take) a Daily room at start-up and have the bot join it.
    """
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.request_handler import (
        SmallWebRTCPatchRequest,
        SmallWebRTCRequest,
        SmallWebRTCRequestHandler,
    )

    settings = bot.settings
    webrtc = SmallWebRTCRequestHandler()
    tasks: set[asyncio.Task] = set()
    live: dict[str, asyncio.Task] = {}  # session id → the task running it, every transport
    pending_bodies: dict[str, dict[str, Any]] = {}

    def start_session(transport, call: Call) -> None:
        task = asyncio.create_task(bot.run_session(run, transport, call), name=str(call))
        tasks.add(task)
        live[call.session_id] = task
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _: live.pop(call.session_id, None))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await api.startup()
        watcher = asyncio.create_task(bot.watch_knowledge(), name="knowledge watcher")
        watcher.add_done_callback(_log_failure)
        if join_daily:
            room_url, token = await create_daily_room(bot)
            logger.info(f"MindBot is joining the Daily room {room_url}")
            print(f"Join the conversation: {room_url}", flush=True)
            start_session(daily_transport(room_url, token, settings.audio), Call(transport="daily"))
        yield
        watcher.cancel()
        await api.shutdown()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await webrtc.close()

    app = FastAPI(title="MindBot", lifespan=lifespan)
    app.state.bot = bot
    app.state.session_tasks = tasks
    api = install_api(app, bot, live=live, start_session=start_session)

    try:
        # The package prints where it looks for its files; keep the console for MindBot.
        with contextlib.redirect_stdout(io.StringIO()):
            from pipecat_ai_prebuilt.frontend import PipecatPrebuiltUI

        app.mount("/client", PipecatPrebuiltUI)
    except ImportError:
        logger.warning("The prebuilt browser client is not installed; / will not serve a page")

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse(url="/client/")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "active_sessions": len(bot.active_sessions)}

    @app.post("/start")
    async def start(request: Request):
        await api.check_webrtc_token(request)
        data = await _json_object(request)
        transport = data.get("transport") or ("daily" if data.get("createDailyRoom") else "webrtc")
        body = data.get("body") if isinstance(data.get("body"), dict) else {}
        if transport == "webrtc":
            if len(pending_bodies) >= MAX_PENDING_WEBRTC_SESSIONS:
                pending_bodies.pop(next(iter(pending_bodies)))
            session_id = uuid.uuid4().hex
            pending_bodies[session_id] = body
            return {"sessionId": session_id}
        if transport == "daily":
            room_url, token = await create_daily_room(bot)
            call = Call(transport="daily", user_id=_user_id(body), body=body)
            start_session(daily_transport(room_url, token, settings.audio), call)
            return {"dailyRoom": room_url, "dailyToken": token, "sessionId": call.session_id}
        raise HTTPException(400, f"Unsupported transport {str(transport)[:40]!r}")

    async def handle_offer(request: SmallWebRTCRequest, body: dict[str, Any]):
        async def on_connection(connection: SmallWebRTCConnection):
            from mindbot.transports import webrtc_transport

            call = Call(transport="webrtc", user_id=_user_id(body), body=body)
            start_session(webrtc_transport(connection, settings.audio), call)

        return await webrtc.handle_web_request(
            request=request, webrtc_connection_callback=on_connection
        )

    @app.post("/api/offer")
    async def offer(request: Request):
        await api.check_webrtc_token(request)
        data = await _json_object(request)
        offer_request = _webrtc_request(SmallWebRTCRequest, data)
        body = offer_request.request_data if isinstance(offer_request.request_data, dict) else {}
        return await handle_offer(offer_request, body)

    @app.patch("/api/offer")
    async def ice_candidate(request: Request):
        await api.check_webrtc_token(request)
        patch = _webrtc_request(SmallWebRTCPatchRequest, await _json_object(request))
        await webrtc.handle_patch_request(patch)
        return {"status": "success"}

    @app.api_route(
        "/sessions/{session_id}/api/offer", methods=["POST", "PATCH"], include_in_schema=False
    )
    async def session_offer(session_id: str, request: Request):
        if session_id not in pending_bodies:
            raise HTTPException(404, "Unknown or expired session")
        data = await _json_object(request)
        if request.method == "PATCH":
            patch = _webrtc_request(SmallWebRTCPatchRequest, data)
            await webrtc.handle_patch_request(patch)
            return {"status": "success"}
        return await handle_offer(
            _webrtc_request(SmallWebRTCRequest, data), pending_bodies.pop(session_id)
        )

    @app.post("/twilio")
    async def twilio_webhook(request: Request):
        form = await request.form()
        _check_twilio_signature(request, form, settings)
        stream_url = _stream_url(request, settings.public_url)
        params = {"from_number": form.get("From"), "to_number": form.get("To")}
        twiml = stream_twiml(stream_url, {k: str(v) if v else None for k, v in params.items()})
        return Response(content=twiml, media_type="application/xml")

    @app.websocket("/ws")
    async def twilio_stream(websocket: WebSocket):
        await websocket.accept()
        call = await accept_twilio_call(websocket)
        if call is None:
            await websocket.close(code=1008)
            return
        try:
            transport = twilio_transport(websocket, call, settings)
        except ValueError as e:
            logger.error(f"{call}: cannot build the Twilio transport: {e}")
            await websocket.close(code=1011)
            return
        task = asyncio.current_task()
        if task is not None:
            live[call.session_id] = task
        try:
            await bot.run_session(run, transport, call)
        finally:
            live.pop(call.session_id, None)

    return app


async def create_daily_room(bot: MindBot) -> tuple[str, str | None]:
    """The Daily room to join: ``MINDBOT_DAILY_ROOM_URL``, or a new one made through Daily's API.

    Returns:
        The room URL and a meeting token for the bot (``None`` without an API key).

    Raises:
        ConfigError: Neither a room URL nor an API key is configured.
    """
    import aiohttp
    from pipecat.transports.daily.utils import DailyRESTHelper, DailyRoomParams

    from mindbot.errors import ConfigError

    s = bot.settings
    if not s.daily_api_key:
        if s.daily_room_url:
            return s.daily_room_url, None
        raise ConfigError("MINDBOT_DAILY_API_KEY is not set, but the daily transport needs it.")
    async with aiohttp.ClientSession() as session:
        helper = DailyRESTHelper(
            daily_api_key=s.daily_api_key.get_secret_value(),
            daily_api_url=s.daily_api_url,
            aiohttp_session=session,
        )
        room_url = s.daily_room_url
        if not room_url:
            room = await helper.create_room(DailyRoomParams())
            room_url = room.url
        token = await helper.get_token(room_url)
    return room_url, token


def _check_twilio_signature(request: Request, form: FormData, settings: Settings) -> None:
    """Refuse (403) a webhook request that Twilio did not sign with the account's auth token.

    Twilio signs the URL it requested: behind a proxy or tunnel that is ``public_url`` with
    this path, not the URL this server sees, so both are tried.
    """
    if settings.twilio_auth_token is None:
        return
    token = settings.twilio_auth_token.get_secret_value()
    urls = [str(request.url)]
    if settings.public_url:
        query = f"?{request.url.query}" if request.url.query else ""
        urls.insert(0, settings.public_url.rstrip("/") + request.url.path + query)
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    if not valid_twilio_signature(token, request.headers.get("x-twilio-signature"), urls, params):
        logger.warning("Refused a Twilio webhook request without a valid X-Twilio-Signature")
        raise HTTPException(403, "Invalid or missing X-Twilio-Signature")


def _stream_url(request: Request, public_url: str | None) -> str:
    if public_url:
        base = public_url.rstrip("/")
        return base.replace("https://", "wss://").replace("http://", "ws://") + "/ws"
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}/ws"


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except HTTPException:
        raise  # e.g. 413: the body is too large
    except Exception:
        raise HTTPException(400, "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "The request body must be a JSON object")
    return data


def _webrtc_request(cls, data: dict[str, Any]):
    data = dict(data)
    if "requestData" in data:
        data.setdefault("request_data", data.pop("requestData"))
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise HTTPException(400, f"Invalid WebRTC request ({e.error_count()} errors)") from None


def _user_id(body: dict[str, Any]) -> str | None:
    value = body.get("user_id") or body.get("userId")
    return value if isinstance(value, str) and value else None


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error(f"{task.get_name()} stopped: {type(error).__name__}: {error}")
