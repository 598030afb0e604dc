"""Outbound webhooks: signing, verification, and the dispatcher that delivers the outbox.

Events reach the ``outbox`` table in the same transaction as the change they describe (a
session started or ended, a turn's tool calls: see ``mindbot.storage``), one row per active
subscription. ``WebhookDispatcher`` runs in the server: it claims due rows with a lease (so two
servers on one database never send the same row at once), POSTs each as JSON, logs every
attempt in ``webhook_deliveries``, and reschedules failures with exponential backoff and jitter
until ``max_attempts``. Rows live in SQLite, so a restarted server delivers what was pending.

Every request is signed like Stripe's::

    MindBot-Signature: t=1718000000,v1=<hex HMAC-SHA256(secret, "1718000000." + raw body)>
    MindBot-Event: session.ended
    MindBot-Delivery: 42

A receiver checks it with ``verify_signature(secret, header, body)`` and drops a delivery id it
has already processed: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import httpx
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mindbot.errors import StorageError
from mindbot.storage import OutboxRecord, Storage, WebhookSubscription, utc_now

EventType = Literal["session.started", "session.ended", "tool.called", "alert"]
"""The events a subscription may choose (``ping`` is sent only on request)."""

EVENT_TYPES: tuple[str, ...] = get_args(EventType)

SIGNATURE_HEADER = "MindBot-Signature"
EVENT_HEADER = "MindBot-Event"
DELIVERY_HEADER = "MindBot-Delivery"
SECRET_PREFIX = "whsec_"

SHUTDOWN_GRACE_SECS = 2.0
"""How long a stopping dispatcher lets deliveries in flight finish before cutting them off."""

EAGER_SECS = 1.0
EAGER_POLL_SECS = 0.05
"""After an eager nudge, the outbox is checked this often for that long: the recorder's writes
land on their own thread moments after the session event that nudged."""

MIN_WAIT_SECS = 0.02
"""The shortest wait between two claims that found nothing (no spinning on a race)."""


class WebhookSettings(BaseModel):
    """Outbound webhooks: delivery, retries and signing (``MINDBOT_WEBHOOKS__<FIELD>``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Run the dispatcher in the server.")
    timeout_secs: float = Field(
        10.0, gt=0, description="The most one delivery attempt may take, answer included."
    )
    max_attempts: int = Field(
        10, ge=1, description="Attempts before a delivery is given up (its last error is kept)."
    )
    base_delay_secs: float = Field(10.0, gt=0, description="The wait after the first failure.")
    backoff_factor: float = Field(2.0, ge=1, description="Each further wait is this much longer.")
    max_delay_secs: float = Field(3600.0, gt=0, description="No wait is longer than this.")
    jitter: float = Field(
        0.2, ge=0, le=1, description="Each wait is shortened by a random share up to this."
    )
    poll_interval_secs: float = Field(
        1.0, gt=0, description="How often the outbox is checked for rows other processes wrote."
    )
    max_concurrent: int = Field(8, ge=1, description="Deliveries in flight at once.")
    max_per_subscription: int = Field(
        2, ge=1, description="Deliveries in flight to one receiver, so a slow one cannot hog."
    )
    lease_secs: float = Field(
        60.0,
        gt=0,
        description="How long a claimed row is hidden from other dispatchers (> timeout_secs).",
    )

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> WebhookSettings:
        if self.lease_secs <= self.timeout_secs:
            raise ValueError("lease_secs must be longer than timeout_secs")
        return self

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt, jitter included."""
        exponent = max(0, attempts - 1)
        # min() before the power's overflow: a factor of 2 at attempt 2000 is not a float.
        raw = self.base_delay_secs * self.backoff_factor ** min(exponent, 512)
        return min(self.max_delay_secs, raw) * (1.0 - self.jitter * rand())


# ----------------------------------------------------------------------------------------------
# Signing


def new_secret() -> str:
    """A new signing secret: ``whsec_`` and 32 random bytes in base64url."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``MindBot-Signature`` header value for ``body``.

    Args:
        secret: The subscription's secret.
        body: The exact bytes sent.
        timestamp: Unix seconds (default: now).
    """
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_digest(secret, t, body)}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance_secs: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is MindBot's, unchanged and recent: for receivers.

    Compute over the raw body as received, before parsing JSON. A timestamp further than
    ``tolerance_secs`` from now (either way) is refused, so a captured request cannot be
    replayed later; within that window, drop a ``MindBot-Delivery`` id already processed.

    Args:
        secret: The subscription's secret (``whsec_…``).
        header: The ``MindBot-Signature`` header: ``t=<unix seconds>,v1=<hex>``; several
            ``v1`` entries are allowed, and any one matching is enough.
        body: The request's raw body.
        tolerance_secs: How old (or how far ahead) the timestamp may be.
        now: The current Unix time (default: now).

    Returns:
        True when a signature matches and the timestamp is within the tolerance.
    """
    if not header or not secret:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_secs:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = _digest(secret, timestamp, raw)
    return any(hmac.compare_digest(expected, given) for given in signatures)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def event_body(row: OutboxRecord) -> bytes:
    """The JSON a delivery sends: the same bytes on every attempt of a row."""
    event = {"id": row.id, "type": row.event_type, "created_at": row.created_at}
    event["data"] = row.payload
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------------
# Delivery


class WebhookDispatcher:
    """Delivers the outbox in the background, in the server's event loop.

    Args:
        storage: Returns the storage, or None when it is off (nothing is delivered then).
        settings: Timeouts, backoff and concurrency.
        client: The HTTP client (default: one of its own, closed by ``stop``).
    """

    def __init__(
        self,
        storage: Callable[[], Storage | None],
        settings: WebhookSettings,
        *,
        client: httpx.AsyncClient | None = None,
    ):
        self._storage = storage
        self.settings = settings
        self._client = client
        self._own_client = client is None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eager_until = 0.0
        self._stopping = False
        self._inflight: dict[asyncio.Task, OutboxRecord] = {}
        self._interrupted: list[OutboxRecord] = []
        self._recording: set[asyncio.Future] = set()

    def __str__(self) -> str:
        return "Webhooks"

    @property
    def running(self) -> bool:
        """Whether the delivery loop is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start delivering (no-op without storage or when already running)."""
        if self.running:
            return
        if self._storage() is None:
            logger.info(f"{self}: storage is off; no webhooks are delivered")
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        if self._client is None:
            limits = httpx.Limits(max_connections=self.settings.max_concurrent)
            self._client = httpx.AsyncClient(limits=limits, follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="webhook dispatcher")
        logger.info(f"{self}: delivering the outbox")

    async def stop(self) -> None:
        """Stop: deliveries in flight get a moment to finish; those cut off are due again now
        (the attempt counts), so the next dispatcher on this database sends them at once."""
        if self._task is not None:
            # Let the loop finish its step: cut off inside a claim, it would leave rows leased.
            self._stopping = True
            self.nudge()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_GRACE_SECS)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=SHUTDOWN_GRACE_SECS)
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await asyncio.gather(*self._recording, return_exceptions=True)
        await self._release_interrupted()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def nudge(self, *, eager: bool = False) -> None:
        """Check the outbox now (from any thread).

        Args:
            eager: Keep checking briefly, for a write that is about to land.
        """
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        if eager:
            self._eager_until = time.monotonic() + EAGER_SECS
        loop.call_soon_threadsafe(wake.set)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        failing = False  # log a failing database once, not on every poll
        while not self._stopping:
            try:
                claimed = await self._claim()
                if failing:
                    logger.info(f"{self}: the outbox can be read again")
                failing = False
            except StorageError as e:
                (logger.debug if failing else logger.error)(f"{self}: reading the outbox: {e}")
                failing, claimed = True, None
            except Exception:
                logger.exception(f"{self}: the delivery loop failed; it goes on")
                claimed = None
            if not claimed and not self._stopping:  # after a claim, more may be due
                await self._sleep(claimed)

    async def _claim(self) -> list[OutboxRecord]:
        """Start deliveries for the due rows there are free slots for; returns those rows."""
        storage = self._storage()
        free = self.settings.max_concurrent - len(self._inflight)
        if storage is None or free <= 0:
            return []
        due = await asyncio.to_thread(
            storage.next_outbox_due, exclude_subscriptions=self._full_subscriptions()
        )
        if due is None or due > utc_now():
            return []
        rows = await asyncio.to_thread(
            storage.claim_webhook_outbox,
            limit=free,
            lease_secs=self.settings.lease_secs,
            per_subscription=self.settings.max_per_subscription,
            in_flight=self._in_flight_counts(),
        )
        if not rows:
            return []
        subscriptions = {s.id: s for s in await asyncio.to_thread(storage.webhook_subscriptions)}
        for row in rows:
            subscription = subscriptions.get(row.subscription_id)
            if subscription is None:  # deleted meanwhile: its rows went with it
                continue
            task = asyncio.create_task(self._deliver(storage, subscription, row))
            self._inflight[task] = row
            task.add_done_callback(self._finished)
        return rows

    async def _sleep(self, claimed: list[OutboxRecord] | None) -> None:
        """Wait for a nudge, a finished delivery, the next due row or the poll interval."""
        assert self._wake is not None
        self._wake.clear()
        timeout = self.settings.poll_interval_secs
        if time.monotonic() < self._eager_until:
            timeout = min(timeout, EAGER_POLL_SECS)
        storage = self._storage()
        free = len(self._inflight) < self.settings.max_concurrent
        if claimed is not None and storage is not None and free:
            try:
                due = await asyncio.to_thread(
                    storage.next_outbox_due, exclude_subscriptions=self._full_subscriptions()
                )
            except StorageError:
                due = None
            if due is not None:
                # Not below a floor: a row due now that another dispatcher just claimed.
                timeout = min(timeout, max(MIN_WAIT_SECS, _seconds_until(due)))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    def _finished(self, task: asyncio.Task) -> None:
        self._inflight.pop(task, None)
        if self._wake is not None:
            self._wake.set()  # a slot is free

    def _in_flight_counts(self) -> dict[int, int]:
        return dict(Counter(row.subscription_id for row in self._inflight.values()))

    def _full_subscriptions(self) -> list[int]:
        cap = self.settings.max_per_subscription
        return sorted(s for s, n in self._in_flight_counts().items() if n >= cap)

    # -- one delivery --------------------------------------------------------------------------

    async def _deliver(
        self, storage: Storage, subscription: WebhookSubscription, row: OutboxRecord
    ) -> None:
        """One attempt: POST, then record it (see ``_record``)."""
        status, error = None, None
        started_at = utc_now()
        began = time.perf_counter()
        try:
            status = await self._post(subscription, row)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except asyncio.CancelledError:
            self._interrupted.append(row)
            raise
        except TimeoutError:
            error = f"timed out after {self.settings.timeout_secs:g} s"
        except Exception as e:  # a bad URL, a refused connection, a broken answer
            error = _describe(e, subscription.url)
        duration_ms = round((time.perf_counter() - began) * 1000, 1)
        # Once sent, the outcome is recorded even if the server is stopping meanwhile.
        recording = asyncio.ensure_future(
            self._record(storage, row, status, error, duration_ms, started_at)
        )
        self._recording.add(recording)
        recording.add_done_callback(self._recording.discard)
        await asyncio.shield(recording)

    async def _record(
        self,
        storage: Storage,
        row: OutboxRecord,
        status: int | None,
        error: str | None,
        duration_ms: float,
        started_at: str,
    ) -> None:
        """Log the attempt, then mark the row delivered or schedule its retry (or give up)."""
        try:
            await asyncio.to_thread(
                storage.add_webhook_delivery,
                row.id,
                status_code=status,
                error=error,
                duration_ms=duration_ms,
                at=started_at,
            )
            if error is None:
                await asyncio.to_thread(storage.mark_outbox_delivered, row.id)
                logger.debug(f"{self}: delivered {row.event_type} #{row.id} ({status})")
            else:
                await self._failed(storage, row, error)
        except StorageError as e:
            # The lease runs out and the row is tried again: at least once, never lost.
            logger.error(f"{self}: recording the delivery of #{row.id} failed: {e}")

    async def _post(self, subscription: WebhookSubscription, row: OutboxRecord) -> int:
        """Send the row; returns the HTTP status (the answer's body is not read)."""
        assert self._client is not None
        body = event_body(row)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "MindBot-Webhooks/1",
            SIGNATURE_HEADER: sign(subscription.secret, body),
            EVENT_HEADER: row.event_type,
            DELIVERY_HEADER: str(row.id),
        }
        timeout = self.settings.timeout_secs
        # httpx's timeout bounds each phase; the outer one bounds the whole attempt.
        async with asyncio.timeout(timeout):
            request = self._client.build_request(
                "POST", subscription.url, content=body, headers=headers, timeout=timeout
            )
            response = await self._client.send(request, stream=True)
            await response.aclose()
            return response.status_code

    async def _failed(self, storage: Storage, row: OutboxRecord, error: str) -> None:
        if row.attempts >= self.settings.max_attempts:
            await asyncio.to_thread(storage.mark_outbox_failed, row.id, error, None)
            logger.warning(
                f"{self}: gave up on {row.event_type} #{row.id} to subscription "
                f"{row.subscription_id} after {row.attempts} attempts: {error}"
            )
            return
        delay = self.settings.delay(row.attempts)
        retry_at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat()
        await asyncio.to_thread(storage.mark_outbox_failed, row.id, error, retry_at)
        logger.info(
            f"{self}: {row.event_type} #{row.id} to subscription {row.subscription_id} failed "
            f"({error}), attempt {row.attempts}/{self.settings.max_attempts}; "
            f"retrying in {delay:.1f} s"
        )

    async def _release_interrupted(self) -> None:
        """Make deliveries cut off by ``stop`` due again at once."""
        rows, self._interrupted = self._interrupted, []
        storage = self._storage()
        if storage is None:
            return
        for row in rows:
            try:
                await asyncio.to_thread(
                    storage.add_webhook_delivery, row.id, error="interrupted: the server stopped"
                )
                await asyncio.to_thread(
                    storage.mark_outbox_failed, row.id, "interrupted: the server stopped", utc_now()
                )
            except StorageError as e:
                logger.error(f"{self}: releasing #{row.id} failed (its lease frees it): {e}")


def _seconds_until(moment: str) -> float:
    return (datetime.fromisoformat(moment) - datetime.now(UTC)).total_seconds()


def _describe(error: Exception, url: str) -> str:
    """An attempt's error for the log: its kind and message, without the URL (it may hold a
    token in its path or query)."""
    message = str(error).replace(url, "<url>") if url else str(error)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text[:300]


def ping_payload(subscription_id: int) -> dict[str, Any]:
    """The data of a ``ping`` event, queued by ``POST /api/v1/webhooks/{id}/ping``."""
    return {"subscription_id": subscription_id, "message": "A test event from MindBot."}


class OutboxNudge:
    """A session listener that nudges the dispatcher when a session event queues rows.

    Args:
        dispatcher: The dispatcher to wake.
    """

    def __init__(self, dispatcher: WebhookDispatcher):
        self._dispatcher = dispatcher

    def on_session_started(self, call: object) -> None:
        """``session.started`` rows are being written."""
        self._dispatcher.nudge(eager=True)

    def on_turn(self, call: object, turn: object) -> None:
        """A reply's ``tool.called`` rows may be being written."""
        self._dispatcher.nudge(eager=True)

    def on_session_ended(self, call: object, reason: str) -> None:
        """``session.ended`` rows are being written."""
        self._dispatcher.nudge(eager=True)
