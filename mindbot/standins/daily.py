"""A Daily REST API stand-in: rooms and meeting tokens.

It answers the calls Pipecat's ``DailyRESTHelper`` and ``pipecat.runner.daily.configure`` make
(PROTOCOLS.md section 5)::

    async with DailyRESTStandIn() as daily:
        helper = DailyRESTHelper(
            daily_api_key="k", daily_api_url=daily.api_url, aiohttp_session=session
        )
        room = await helper.create_room(DailyRoomParams())

Only REST is stood in: ``DailyTransport`` joins rooms over WebRTC, which this cannot fake.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web
from loguru import logger

from mindbot.standins._server import HttpStandIn, read_json_object

ROOM_DOMAIN = "https://mindbot-test.daily.co"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DailyRESTStandIn(HttpStandIn):
    """Daily's ``/v1/rooms`` and ``/v1/meeting-tokens`` on loopback.

    Records ``rooms`` (every room created, as returned), ``tokens`` (the token properties
    received) and ``requests`` (``(method, path, JSON body or {})`` for every request).
    """

    def __init__(self, *, api_key: str | None = None) -> None:
        """Initialize the stand-in (call ``start()`` or use ``async with``).

        Args:
            api_key: If set, requests need ``Authorization: Bearer <api_key>``; otherwise any
                non-empty bearer token is accepted.
        """
        super().__init__()
        self._api_key = api_key
        self._live: dict[str, dict[str, Any]] = {}
        self.rooms: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []

    @property
    def api_url(self) -> str:
        """The ``daily_api_url`` / ``DAILY_API_URL`` value (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/rooms", self._create_room)
        app.router.add_get("/v1/rooms/{name}", self._get_room)
        app.router.add_delete("/v1/rooms/{name}", self._delete_room)
        app.router.add_post("/v1/meeting-tokens", self._create_token)

    def _error_response(self, status: int, message: str) -> web.Response:
        kind = {401: "authorization-error", 404: "not-found"}.get(status, "invalid-request-error")
        if status >= 500:
            kind = "server-error"
        return web.json_response({"error": kind, "info": message}, status=status)

    async def _begin(
        self, request: web.Request, *, has_body: bool
    ) -> dict[str, Any] | web.Response:
        """Record the request, check auth and parse the body."""
        body: dict[str, Any] = {}
        problem = None
        if has_body:
            try:
                body = await read_json_object(request)
            except ValueError as e:
                problem = str(e)
        self.requests.append((request.method, request.path, body))
        auth = request.headers.get("Authorization", "")
        expected = f"Bearer {self._api_key}" if self._api_key else None
        if not auth.startswith("Bearer ") or not auth[7:] or (expected and auth != expected):
            return self._error_response(401, "authorization header missing or invalid")
        if problem is not None:
            logger.warning(f"{self}: malformed body on {request.path}: {problem}")
            return self._error_response(400, problem)
        return body

    async def _create_room(self, request: web.Request) -> web.Response:
        body = await self._begin(request, has_body=True)
        if isinstance(body, web.Response):
            return body
        name = body.get("name") or f"mindbot-{secrets.token_hex(4)}"
        privacy = body.get("privacy", "public")
        properties = body.get("properties", {})
        if not isinstance(name, str) or not _NAME_RE.match(name):
            return self._error_response(400, f"invalid room name {name!r}")
        if privacy not in ("public", "private"):
            return self._error_response(400, f"invalid privacy {privacy!r}")
        if not isinstance(properties, dict):
            return self._error_response(400, "properties must be an object")
        if name in self._live:
            return self._error_response(400, f"a room named {name} already exists")
        config = dict(properties)
        if isinstance(properties.get("sip"), dict):
            config["sip_uri"] = {"endpoint": f"{name}@sip.mindbot-test.daily.co"}
        room = {
            "id": f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}",
            "name": name,
            "api_created": True,
            "privacy": privacy,
            "url": f"{ROOM_DOMAIN}/{name}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "config": config,
        }
        self._live[name] = room
        self.rooms.append(room)
        logger.debug(f"{self}: created room {name}")
        return web.json_response(room)

    async def _get_room(self, request: web.Request) -> web.Response:
        body = await self._begin(request, has_body=False)
        if isinstance(body, web.Response):
            return body
        name = request.match_info["name"]
        if (room := self._live.get(name)) is None:
            return self._error_response(404, f"room {name} was not found")
        return web.json_response(room)

    async def _delete_room(self, request: web.Request) -> web.Response:
        body = await self._begin(request, has_body=False)
        if isinstance(body, web.Response):
            return body
        name = request.match_info["name"]
        if self._live.pop(name, None) is None:
            return self._error_response(404, f"room {name} was not found")
        return web.json_response({"deleted": True, "name": name})

    async def _create_token(self, request: web.Request) -> web.Response:
        body = await self._begin(request, has_body=True)
        if isinstance(body, web.Response):
            return body
        properties = body.get("properties")
        if not isinstance(properties, dict) or not properties.get("room_name"):
            return self._error_response(400, "properties.room_name is required")
        self.tokens.append(properties)
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"r": properties["room_name"], "o": bool(properties.get("is_owner", False))}
        if "exp" in properties:
            claims["exp"] = properties["exp"]
        token = f"{header}.{_b64url(json.dumps(claims).encode())}.{secrets.token_hex(16)}"
        return web.json_response({"token": token})
