"""``/api/v1/webrtc/token`` and ``/api/v1/calls``: starting conversations from the API.

- A WebRTC token lets a browser start a session through ``/start`` or ``/api/offer`` when those
  require one (``api.webrtc_token``), without the browser ever holding an API key.
- ``POST /calls/daily`` creates (or takes) a Daily room the way ``mindbot run --transport daily``
  does, and the bot joins it.
- ``POST /calls/twilio`` has Twilio phone someone: the answered call is connected to this
  server's Media Streams websocket, with the callee as the caller of the session.
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Writer``...) are local to each router function.

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException
from loguru import logger

from mindbot.api.auth import Principal
from mindbot.api.models import (
    DailyCallIn,
    DailyCallOut,
    TokenOut,
    TwilioCallIn,
    TwilioCallOut,
)
from mindbot.api.twilio import TwilioError, create_call, stream_twiml
from mindbot.errors import ConfigError
from mindbot.session import Call

if TYPE_CHECKING:
    from mindbot.api.app import Api


def calls_router(api: "Api") -> APIRouter:
    """The token and call routes."""
    router = APIRouter(tags=["calls"])
    Writer = Annotated[Principal, Depends(api.auth.require("write"))]
    bot = api.bot

    def check_persona(name: str | None) -> None:
        if name is not None and name not in bot.personas.names():
            known = ", ".join(bot.personas.names())
            raise HTTPException(422, f"Unknown persona {name!r}; known: {known}")

    @router.post("/webrtc/token", response_model=TokenOut, status_code=201)
    async def webrtc_token(who: Writer):
        """A short-lived token for ``/start`` and ``/api/offer`` (for a browser client)."""
        token, expires = api.tokens.issue(who.key.id)
        return TokenOut(
            token=token,
            expires_at=datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds"),
        )

    @router.post(
        "/calls/daily",
        response_model=DailyCallOut,
        status_code=201,
        responses={502: {"description": "Daily's API failed"}, 503: {"description": "No Daily"}},
    )
    async def daily_call(body: DailyCallIn, who: Writer):
        """Have the bot join a Daily room (``MINDBOT_DAILY_ROOM_URL``, or a new one)."""
        from mindbot.server import create_daily_room
        from mindbot.transports import daily_transport

        check_persona(body.persona)
        try:
            room_url, token = await create_daily_room(bot)
        except ConfigError as e:
            raise HTTPException(503, str(e)) from None
        except Exception as e:
            logger.warning(f"API: creating a Daily room failed ({type(e).__name__})")
            raise HTTPException(502, f"Daily's API failed ({type(e).__name__})") from None
        call = Call(
            transport="daily",
            user_id=body.user_id,
            body={"persona": body.persona} if body.persona else {},
        )
        api.start_session(daily_transport(room_url, token, bot.settings.audio), call)
        logger.info(f"API: key {who.key.id} started {call} in a Daily room")
        return DailyCallOut(session_id=call.session_id, room_url=room_url)

    @router.post(
        "/calls/twilio",
        response_model=TwilioCallOut,
        status_code=201,
        responses={502: {"description": "Twilio refused"}, 503: {"description": "No Twilio"}},
    )
    async def twilio_call(body: TwilioCallIn, who: Writer):
        """Have the bot phone a number through Twilio; the callee is the session's caller."""
        s = bot.settings
        if not (s.twilio_account_sid and s.twilio_auth_token):
            raise HTTPException(
                503, "Placing calls needs MINDBOT_TWILIO_ACCOUNT_SID and MINDBOT_TWILIO_AUTH_TOKEN"
            )
        if not s.public_url:
            raise HTTPException(
                503, "Placing calls needs MINDBOT_PUBLIC_URL: Twilio must reach this server"
            )
        from_number = body.from_number or api.settings.twilio_from_number
        if not from_number:
            raise HTTPException(422, "Give from_number, or set MINDBOT_API__TWILIO_FROM_NUMBER")
        check_persona(body.persona)
        base = s.public_url.rstrip("/")
        stream_url = base.replace("https://", "wss://").replace("http://", "ws://") + "/ws"
        # The callee is who the bot talks to: the session's caller, as on an inbound call.
        twiml = stream_twiml(
            stream_url,
            {
                "from_number": body.to,
                "to_number": from_number,
                "direction": "outbound",
                "persona": body.persona,
            },
        )
        await api.audit(who, "call.placed", detail={"persona": body.persona})
        try:
            created = await create_call(
                account_sid=s.twilio_account_sid,
                auth_token=s.twilio_auth_token.get_secret_value(),
                to=body.to,
                from_number=from_number,
                twiml=twiml,
                base_url=s.twilio_api_base_url,
            )
        except TwilioError as e:
            logger.warning("API: Twilio refused an outbound call")
            logger.debug(f"API: Twilio refused an outbound call: {e}")
            raise HTTPException(502, str(e)) from None
        logger.info(f"API: key {who.key.id} placed Twilio call {created['sid']}")
        return TwilioCallOut(call_sid=str(created["sid"]), status=created.get("status"))

    return router
