"""Request body size limits for every HTTP route of the server (413 above them).

A declared ``Content-Length`` over the limit is refused before the body reaches the endpoint. A
body without one (chunked) is counted as it arrives, and reading stops with 413 at the limit, so
an endpoint never buffers more than the limit. The rest of a refused body is read and dropped (up
to ``DRAIN_BYTES``) so that an ordinary client, still sending, gets to read the 413; a bigger
one is cut off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_BYTES = 8 * 1024 * 1024
"""The most of a refused body read and dropped before answering 413."""


class BodyTooLarge(HTTPException):
    """A request body went past its route's limit."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes")


class BodySizeLimit:
    """ASGI middleware refusing request bodies over a size limit.

    Args:
        app: The wrapped application.
        max_bytes: The limit for every route not listed in ``overrides``.
        overrides: (method, path regular expression, limit) for routes with another limit
            (uploads); the first that matches the whole path wins.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: Sequence[tuple[str, str, int]] = ()
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = tuple(
            (method, re.compile(pattern), limit) for method, pattern, limit in overrides
        )

    def limit_for(self, method: str, path: str) -> int:
        """The limit of a request."""
        for override_method, pattern, limit in self.overrides:
            if method == override_method and pattern.fullmatch(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            if int(declared) <= DRAIN_BYTES:
                await _drain(receive)
            await _reply_413(send, limit)
            return
        received = 0
        more = True
        started = False

        async def counting_receive() -> Message:
            nonlocal received, more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # An endpoint that reads the body itself may let the error escape; answer here.
            if not started:
                if more:
                    await _drain(receive, DRAIN_BYTES - received)
                await _reply_413(send, limit)


async def _drain(receive: Receive, most: int = DRAIN_BYTES) -> None:
    """Read and drop the rest of a request body, up to ``most`` bytes."""
    drained = 0
    while drained <= most:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _reply_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": BodyTooLarge(limit).detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
