"""A Twilio REST stand-in for call updates (the hang-up ``TwilioFrameSerializer`` sends) and
outbound call creation (``POST …/Calls.json`` with ``To``, ``From`` and ``Url`` or ``Twiml``).

PROTOCOLS.md section 4: ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` with HTTP Basic
auth and the form body ``Status=completed``::

    async with TwilioRESTStandIn(account_sid="AC1", auth_token="t") as twilio:
        serializer = TwilioFrameSerializer(
            stream_sid="MZ1", call_sid="CA1", account_sid="AC1", auth_token="t",
            base_url=twilio.base_url,
        )
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from aiohttp import web
from loguru import logger

from mindbot.standins._server import HttpStandIn

_VALID_STATUSES = {"completed", "canceled"}


class TwilioRESTStandIn(HttpStandIn):
    """Twilio's Call-update endpoint on loopback.

    Records ``requests`` (``(call_sid, form)`` for every authenticated update),
    ``hangups`` (``(call_sid, form)`` for each accepted ``Status=completed``) and ``created``
    (``(call_sid, form)`` for each outbound call placed). A call hung up once, or marked with
    ``mark_ended``, answers later updates with 404 (code 20404).
    """

    def __init__(self, *, account_sid: str, auth_token: str) -> None:
        """Initialize the stand-in (call ``start()`` or use ``async with``).

        Args:
            account_sid: The account SID (``AC…``) accepted as Basic-auth user and in the path.
            auth_token: The auth token accepted as Basic-auth password.
        """
        super().__init__()
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._ended: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.hangups: list[tuple[str, dict[str, str]]] = []
        self.created: list[tuple[str, dict[str, str]]] = []

    @property
    def base_url(self) -> str:
        """The ``base_url`` for ``TwilioFrameSerializer`` (scheme and host, no path)."""
        return f"http://127.0.0.1:{self.port}"

    def mark_ended(self, call_sid: str) -> None:
        """Treat ``call_sid`` as already over: updates to it get 404 (code 20404).

        Args:
            call_sid: The call SID (``CA…``).
        """
        self._ended.add(call_sid)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post(
            "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", self._update_call
        )
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Calls.json", self._create_call)

    def _error_response(self, status: int, message: str) -> web.Response:
        codes = {401: 20003, 404: 20404}
        return web.json_response(
            {"code": codes.get(status, 20001), "message": message, "status": status},
            status=status,
        )

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and login == self._account_sid and password == self._auth_token

    async def _update_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            logger.warning(f"{self}: refused call update with bad credentials")
            return self._error_response(401, "Authenticate")
        account_sid = request.match_info["account_sid"]
        call_sid = request.match_info["call_sid"]
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error_response(400, f"unsupported content type {request.content_type}")
        try:
            form = {k: str(v) for k, v in (await request.post()).items()}
        except ValueError as e:
            return self._error_response(400, f"malformed form body: {e}")
        if account_sid != self._account_sid or call_sid in self._ended:
            return self._error_response(404, "not found")
        self.requests.append((call_sid, form))
        status = form.get("Status")
        if status is not None and status not in _VALID_STATUSES:
            return self._error_response(400, f"invalid Status {status!r}")
        if status == "completed":
            self.hangups.append((call_sid, form))
            self._ended.add(call_sid)
            logger.debug(f"{self}: call {call_sid} hung up")
        body: dict[str, Any] = {
            "sid": call_sid,
            "account_sid": account_sid,
            "status": status or "in-progress",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
        }
        return web.json_response(body)

    async def _create_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            logger.warning(f"{self}: refused call creation with bad credentials")
            return self._error_response(401, "Authenticate")
        account_sid = request.match_info["account_sid"]
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error_response(400, f"unsupported content type {request.content_type}")
        try:
            form = {k: str(v) for k, v in (await request.post()).items()}
        except ValueError as e:
            return self._error_response(400, f"malformed form body: {e}")
        if account_sid != self._account_sid:
            return self._error_response(404, "not found")
        for name in ("To", "From"):
            if not form.get(name):
                return self._error_response(400, f"Required parameter {name} is missing.")
        if not (form.get("Url") or form.get("Twiml")):
            return self._error_response(400, "Either Url or Twiml is required.")
        call_sid = "CA" + uuid.uuid4().hex
        self.created.append((call_sid, form))
        body: dict[str, Any] = {
            "sid": call_sid,
            "account_sid": account_sid,
            "to": form["To"],
            "from": form["From"],
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
        }
        return web.json_response(body, status=201)
