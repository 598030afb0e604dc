"""``/api/v1/webhooks``: subscriptions to MindBot's events, their delivery log, and a ping.

Creating, deleting and pinging a subscription needs the ``admin`` scope; listing subscriptions
and reading their delivery attempts needs ``read``. A subscription's signing secret is shown
once, in the answer that creates it. The router also runs the ``WebhookDispatcher`` with the
server (``Api.on_startup`` / ``Api.on_shutdown``).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the routes' annotations, and
# the scope aliases (``Reader``, ``Admin``) are local to the router function.

import asyncio
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mindbot.api.auth import Principal
from mindbot.storage import WebhookSubscription
from mindbot.webhooks import (
    EventType,
    OutboxNudge,
    WebhookDispatcher,
    new_secret,
    ping_payload,
)

if TYPE_CHECKING:
    from mindbot.api.app import Api

NOT_FOUND = {404: {"description": "No such subscription"}}
MAX_URL_CHARS = 2048


class WebhookIn(BaseModel):
    """A new subscription: where to send which events."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(
        max_length=MAX_URL_CHARS,
        description="The receiver: an http(s) URL without credentials in it (verify the "
        "MindBot-Signature header instead).",
        examples=["https://crm.example.com/hooks/mindbot"],
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=16,
        description="The event types it receives.",
        examples=[["session.started", "session.ended"]],
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if any(c.isspace() or ord(c) < 32 for c in url):
            raise ValueError("the URL may not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as e:
            raise ValueError(f"not a valid URL: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the URL must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("put no credentials in the URL; the signature authenticates MindBot")
        return url

    @field_validator("events")
    @classmethod
    def _once_each(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    """A subscription (never its secret)."""

    id: int
    url: str
    events: list[str]
    active: bool = Field(description="Whether new events are queued for it.")
    created_at: str

    @classmethod
    def of(cls, subscription: WebhookSubscription) -> "WebhookOut":
        """From a stored subscription."""
        return cls(
            id=subscription.id,
            url=subscription.url,
            events=list(subscription.event_types),
            active=subscription.active,
            created_at=subscription.created_at,
        )


class WebhookCreated(WebhookOut):
    """A new subscription, with its signing secret: shown this once, it cannot be read again."""

    secret: str = Field(
        description="Verifies MindBot-Signature: HMAC-SHA256 over '<t>.<raw body>' (hex, v1)."
    )


class DeliveryOut(BaseModel):
    """One delivery attempt."""

    id: int
    outbox_id: int = Field(description="The event's delivery id (the MindBot-Delivery header).")
    event_type: str
    at: str = Field(description="When the attempt started.")
    ok: bool = Field(description="Whether the receiver accepted it (a 2xx answer).")
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered.")
    error: str | None = Field(description="Why the attempt failed, if it did.")
    duration_ms: float | None


class DeliveryPage(BaseModel):
    """A page of a subscription's delivery attempts, newest first."""

    items: list[DeliveryOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page, if there may be one.")


class PingOut(BaseModel):
    """A queued test event."""

    outbox_id: int = Field(description="Its delivery id (the MindBot-Delivery header).")
    event: Literal["ping"] = "ping"


def webhooks_router(api: "Api") -> APIRouter:
    """The webhooks routes; also starts and stops the dispatcher with the server."""
    router = APIRouter(tags=["webhooks"])
    Reader = Annotated[Principal, Depends(api.auth.require("read"))]
    Admin = Annotated[Principal, Depends(api.auth.require("admin"))]
    settings = api.bot.settings.webhooks
    dispatcher = WebhookDispatcher(lambda: api.bot.storage, settings)
    nudge = OutboxNudge(dispatcher)

    async def start() -> None:
        if settings.enabled:
            await dispatcher.start()
        if dispatcher.running:
            api.bot.listeners.append(nudge)  # type: ignore[arg-type] - the events it needs

    async def stop() -> None:
        if nudge in api.bot.listeners:
            api.bot.listeners.remove(nudge)  # type: ignore[arg-type]
        await dispatcher.stop()

    api.on_startup.append(start)
    api.on_shutdown.append(stop)

    async def subscription(subscription_id: int) -> WebhookSubscription:
        found = await asyncio.to_thread(api.storage().webhook_subscription, subscription_id)
        if found is None:
            raise HTTPException(404, "No such subscription")
        return found

    @router.post("/webhooks", response_model=WebhookCreated, status_code=201)
    async def create_webhook(body: WebhookIn, who: Admin):
        """Subscribe a URL to event types; the answer holds the signing secret, once."""
        secret = new_secret()
        created = await asyncio.to_thread(
            api.storage().add_webhook_subscription, body.url, body.events, secret
        )
        return WebhookCreated(**WebhookOut.of(created).model_dump(), secret=secret)

    @router.get("/webhooks", response_model=list[WebhookOut])
    async def list_webhooks(who: Reader):
        """Every subscription, oldest first (without secrets)."""
        found = await asyncio.to_thread(api.storage().webhook_subscriptions)
        return [WebhookOut.of(s) for s in found]

    @router.delete("/webhooks/{subscription_id}", status_code=204, responses=NOT_FOUND)
    async def delete_webhook(subscription_id: int, who: Admin):
        """Delete a subscription with its pending events and delivery log."""
        deleted = await asyncio.to_thread(
            api.storage().delete_webhook_subscription, subscription_id
        )
        if not deleted:
            raise HTTPException(404, "No such subscription")
        return Response(status_code=204)

    @router.get(
        "/webhooks/{subscription_id}/deliveries", response_model=DeliveryPage, responses=NOT_FOUND
    )
    async def list_deliveries(
        subscription_id: int,
        who: Reader,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ):
        """The subscription's delivery attempts, newest first: status code or error, duration."""
        await subscription(subscription_id)
        found = await asyncio.to_thread(
            api.storage().subscription_deliveries, subscription_id, limit=limit, offset=offset
        )
        items = [
            DeliveryOut(
                id=d.id,
                outbox_id=d.outbox_id,
                event_type=event_type,
                at=d.at,
                ok=d.status_code is not None and 200 <= d.status_code < 300,
                status_code=d.status_code,
                error=d.error,
                duration_ms=d.duration_ms,
            )
            for d, event_type in found
        ]
        next_offset = offset + limit if len(items) == limit else None
        return DeliveryPage(items=items, limit=limit, offset=offset, next_offset=next_offset)

    @router.post(
        "/webhooks/{subscription_id}/ping",
        response_model=PingOut,
        status_code=202,
        responses=NOT_FOUND,
    )
    async def ping_webhook(subscription_id: int, who: Admin):
        """Queue a ``ping`` event to this subscription, to test the receiver."""
        await subscription(subscription_id)
        outbox_id = await asyncio.to_thread(
            api.storage().add_outbox_row, subscription_id, "ping", ping_payload(subscription_id)
        )
        dispatcher.nudge()
        return PingOut(outbox_id=outbox_id)

    return router
