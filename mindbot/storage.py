"""Persistence: users, sessions, turns, memories, preferences and audit events in one SQLite file.

This is the only module that opens the database or holds SQL. Everything else sees the
``Storage`` protocol and its dataclass records, so another backend (PostgreSQL) can be added
behind the same methods.

The file is opened through sqlite-utils in WAL mode with a busy timeout and foreign keys on. Its
schema is built by ``MIGRATIONS``, applied in order and counted in ``PRAGMA user_version``;
opening an older file upgrades it, and a file from a newer MindBot is refused untouched.

Timestamps are UTC ISO-8601 strings with microseconds and an explicit offset, as ``utc_now()``
returns them (``2025-01-31T09:15:00.123456+00:00``). Every timestamp is normalized to that form
on the way in, so comparing the strings orders them in time.

``AsyncStorageWriter`` runs the writes on a background thread so that the audio event loop never
waits on the disk.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from loguru import logger
from sqlite_utils import Database

from mindbot.errors import StorageError

IdentityKind = Literal["phone", "webrtc", "daily", "slack", "discord"]
Role = Literal["user", "assistant"]

IDENTITY_KINDS: frozenset[str] = frozenset({"phone", "webrtc", "daily", "slack", "discord"})
ROLES: frozenset[str] = frozenset({"user", "assistant"})

_T = TypeVar("_T")

BUSY_TIMEOUT_MS = 5000
# How long a write keeps retrying to take the write lock, busy timeouts included.
_LOCK_WAIT_SECS = 30.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


def utc_now() -> str:
    """The current time as MindBot stores it: a UTC ISO-8601 string with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _utc(value: str) -> str:
    """Normalizes an ISO-8601 timestamp with an offset to ``utc_now()``'s form."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from e
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _utc_or_none(value: str | None) -> str | None:
    return None if value is None else _utc(value)


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# ----------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class User:
    """A person MindBot knows, whatever channel they come through.

    Args:
        id: The user's id in storage.
        created_at: When the user was first seen.
        display_name: What to call them, if known (personal data).
    """

    id: int
    created_at: str
    display_name: str | None = None


@dataclass(frozen=True)
class Identity:
    """One way a user reaches MindBot, e.g. ``kind="phone", value="+15551234567"``.

    Args:
        user_id: The user this identity belongs to.
        kind: One of ``phone``, ``webrtc``, ``daily``, ``slack``, ``discord``.
        value: The phone number or the channel's user id (personal data).
        created_at: When it was first seen.
    """

    user_id: int
    kind: str
    value: str
    created_at: str


@dataclass(frozen=True)
class SessionRecord:
    """One conversation (a call, a WebRTC or Daily session).

    Args:
        id: The session id (``Call.session_id``).
        user_id: The user on the other end, or None for an anonymous caller.
        transport: ``webrtc``, ``daily``, ``twilio``, …
        pipeline: The pipeline's name.
        persona: The persona the bot played.
        started_at: When it started (defaults to now).
        ended_at: When it ended, once it has.
        end_reason: Why it ended, once it has (``completed``, ``cancelled``, ``error``, …).
    """

    id: str
    user_id: int | None
    transport: str
    pipeline: str
    persona: str
    started_at: str = field(default_factory=utc_now)
    ended_at: str | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class TurnRecord:
    """One user or assistant turn of a session.

    Args:
        session_id: The session it belongs to (started with ``start_session`` first).
        idx: Its position in the session, chosen by the caller; unique within the session.
        role: ``user`` or ``assistant``.
        text: What was said (personal data).
        started_at: When it started (defaults to now).
        ended_at: When it ended (defaults to now).
        interrupted: Whether it was cut off.
        latency_secs: For an assistant turn, from the user's end of speech to the first audio.
        stages: Latency contributions, label → seconds.
        emotion: Detected emotion, any JSON object.
        sources: Retrieved sources the answer used, any JSON list.
        tool_calls: Tool calls made during the turn, any JSON list.
        id: The turn's id in storage (None until stored).
    """

    session_id: str
    idx: int
    role: Role
    text: str
    started_at: str = field(default_factory=utc_now)
    ended_at: str = field(default_factory=utc_now)
    interrupted: bool = False
    latency_secs: float | None = None
    stages: dict[str, float] | None = None
    emotion: dict[str, Any] | None = None
    sources: list[Any] | None = None
    tool_calls: list[Any] | None = None
    id: int | None = None


@dataclass(frozen=True)
class MemoryRecord:
    """Something MindBot learned about a user.

    Args:
        user_id: Whom it is about.
        text: The memory itself (personal data).
        kind: What sort of memory, e.g. ``fact`` or ``preference``.
        confidence: How sure MindBot is, from 0 to 1.
        source_session_id: The session it was learned in, if any.
        source_turn_idx: The turn it was learned from, if any.
        created_at: When it was learned (defaults to now).
        expires_at: When to forget it, if ever.
        id: The memory's id in storage (None until stored).
    """

    user_id: int
    text: str
    kind: str
    confidence: float
    source_session_id: str | None = None
    source_turn_idx: int | None = None
    created_at: str = field(default_factory=utc_now)
    expires_at: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class UsageRecord:
    """What one service request used (``usage`` table).

    Args:
        session_id: The session it served (None once its user was erased).
        at: When it was reported (ISO 8601, UTC).
        service: ``llm``, ``tts`` or ``stt``.
        provider: The provider, e.g. ``openai`` or ``piper``.
        model: The model, if known.
        prompt_tokens: LLM input tokens.
        completion_tokens: LLM output tokens.
        characters: Characters spoken by the TTS.
        audio_secs: Seconds of audio transcribed by the STT.
        id: Row id (set by storage).
    """

    session_id: str | None
    at: str
    service: Literal["llm", "tts", "stt"]
    provider: str
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    characters: int = 0
    audio_secs: float = 0.0
    id: int | None = None


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key, as stored: never the key itself, only its SHA-256.

    Args:
        id: The key's id in storage.
        name: What the key is for, e.g. ``crm-sync``.
        prefix: The key's first characters, shown to tell keys apart (``mb_3f9a1c2e``).
        scopes: ``read``, ``write`` and/or ``admin``.
        rate_per_minute: Its own rate limit (None: the API's default).
        created_at: When it was created.
        last_used_at: When it was last used (updated at most once a minute).
        revoked_at: When it was revoked; a revoked key is refused.
    """

    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate_per_minute: int | None
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None


@dataclass(frozen=True)
class AccessAuditRecord:
    """Who read, exported, changed or erased personal data, and when (never the data itself).

    Args:
        id: The row's id.
        at: When.
        actor: Who: an API key's name, or ``cli``.
        action: What, e.g. ``user.exported``, ``user.erased``, ``transcript.read``.
        key_id: The API key used, if any.
        user_id: The user whose data it was, if one (None once the user is erased).
        session_id: The session whose data it was, if one (None once the user is erased).
        erasure_id: Set when the user was later erased: the ``user.erased`` event's id.
        detail: Details without personal data (a format, counts, a date range).
    """

    id: int
    at: str
    actor: str
    action: str
    key_id: int | None = None
    user_id: int | None = None
    session_id: str | None = None
    erasure_id: str | None = None
    detail: dict[str, Any] | None = None


JobStatus = Literal["queued", "running", "done", "failed"]
JOB_STATUSES: frozenset[str] = frozenset({"queued", "running", "done", "failed"})


@dataclass(frozen=True)
class JobRecord:
    """A background job (a batch of questions, a knowledge-base ingestion).

    Args:
        id: The job's id (random hex).
        kind: What it does, e.g. ``questions`` or ``kb.ingest``.
        status: ``queued``, ``running``, ``done`` or ``failed``.
        input: What it was asked to do, any JSON object.
        result: What it produced, once it has.
        error: Why it failed, if it did.
        created_at: When it was submitted.
        updated_at: When its status last changed.
    """

    id: str
    kind: str
    status: str
    input: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class WebhookSubscription:
    """Where to send which events.

    Args:
        id: The subscription's id.
        url: The receiver's URL.
        event_types: The event types it receives (``session.started``…), or ``*`` for all.
        secret: The key its deliveries are signed with (a secret: never logged).
        active: Whether new events are queued for it.
        created_at: When it was added.
    """

    id: int
    url: str
    event_types: tuple[str, ...]
    secret: str = field(repr=False)
    active: bool = True
    created_at: str = ""


@dataclass(frozen=True)
class OutboxRecord:
    """One event waiting for (or done with) delivery to one subscription.

    Args:
        id: The row's id; also the delivery's idempotency key.
        subscription_id: The subscription it goes to.
        event_type: E.g. ``session.ended``.
        payload: The event's JSON data.
        created_at: When the event happened.
        attempts: Delivery attempts so far (counted when a row is claimed).
        next_attempt_at: When it may be tried (again); None once given up.
        delivered_at: When the receiver accepted it.
        last_error: Why the last attempt failed.
    """

    id: int
    subscription_id: int
    event_type: str
    payload: dict[str, Any]
    created_at: str
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    """One delivery attempt of an outbox row.

    Args:
        id: The row's id.
        outbox_id: The outbox row it tried to deliver.
        at: When the attempt started.
        status_code: The receiver's HTTP status, if it answered.
        error: What went wrong, if the attempt failed without (or with a bad) answer.
        duration_ms: How long the attempt took.
    """

    id: int
    outbox_id: int
    at: str
    status_code: int | None
    error: str | None
    duration_ms: float | None


# ----------------------------------------------------------------------------------------------
# Schema

Migration = str | Callable[[Database], None]

_V1_CALLS = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    display_name TEXT
);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    kind TEXT NOT NULL CHECK (kind IN ('phone', 'webrtc', 'daily', 'slack', 'discord')),
    value TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (kind, value)  -- also the index for lookups by (kind, value)
);
CREATE INDEX identities_user ON identities(user_id);
CREATE INDEX identities_value ON identities(value);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER REFERENCES users(id),
    transport TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    persona TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT
);
CREATE INDEX sessions_user_started ON sessions(user_id, started_at);
CREATE TABLE turns (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    idx INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    latency_secs REAL,
    stages TEXT CHECK (stages IS NULL OR json_valid(stages)),
    emotion TEXT CHECK (emotion IS NULL OR json_valid(emotion)),
    sources TEXT CHECK (sources IS NULL OR json_valid(sources)),
    tool_calls TEXT CHECK (tool_calls IS NULL OR json_valid(tool_calls)),
    UNIQUE (session_id, idx)  -- also the index for turns by session
);
"""

_V2_KNOWLEDGE = """
CREATE TABLE memories (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    confidence REAL NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    source_session_id TEXT REFERENCES sessions(id) ON DELETE SET NULL,
    source_turn_idx INTEGER,
    created_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX memories_user_created ON memories(user_id, created_at);
CREATE INDEX memories_source_session ON memories(source_session_id);
CREATE TABLE preferences (
    user_id INTEGER NOT NULL REFERENCES users(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
"""

_V3_EVENTS = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL CHECK (json_valid(data))
);
CREATE INDEX events_kind_at ON events(kind, at);
"""

_V4_SESSION_STATS = """
CREATE TABLE session_stats (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id),
    duration_secs REAL,
    turns INTEGER NOT NULL,
    interruptions INTEGER NOT NULL,
    mean_latency_secs REAL,
    p95_latency_secs REAL,
    end_reason TEXT
);
"""

_V5_SERVER = """
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL UNIQUE,  -- SHA-256 of the key, hex; also the lookup index
    scopes TEXT NOT NULL CHECK (json_valid(scopes)),
    rate_per_minute INTEGER CHECK (rate_per_minute IS NULL OR rate_per_minute > 0),
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE access_audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    key_id INTEGER REFERENCES api_keys(id),
    user_id INTEGER,
    session_id TEXT,
    erasure_id TEXT,
    detail TEXT CHECK (detail IS NULL OR json_valid(detail))
);
CREATE INDEX access_audit_at ON access_audit(at);
CREATE INDEX access_audit_user ON access_audit(user_id);
CREATE INDEX access_audit_session ON access_audit(session_id);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    input TEXT NOT NULL CHECK (json_valid(input)),
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX jobs_created ON jobs(created_at);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE webhook_subscriptions (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL CHECK (json_valid(event_types)),
    secret TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,  -- NULL: delivered, or given up
    delivered_at TEXT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox(next_attempt_at);
CREATE INDEX outbox_subscription ON outbox(subscription_id);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms REAL
);
CREATE INDEX webhook_deliveries_outbox ON webhook_deliveries(outbox_id);
CREATE INDEX sessions_started ON sessions(started_at);
"""

_V6_USAGE = """
CREATE TABLE usage (
    id INTEGER PRIMARY KEY,
    session_id TEXT REFERENCES sessions(id) ON DELETE SET NULL,  -- NULL once its user is erased
    at TEXT NOT NULL,
    service TEXT NOT NULL CHECK (service IN ('llm', 'tts', 'stt')),
    provider TEXT NOT NULL,
    model TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    characters INTEGER NOT NULL DEFAULT 0 CHECK (characters >= 0),
    audio_secs REAL NOT NULL DEFAULT 0 CHECK (audio_secs >= 0)
);
CREATE INDEX usage_session ON usage(session_id);
CREATE INDEX usage_at ON usage(at);
"""

MIGRATIONS: tuple[Migration, ...] = (
    _V1_CALLS,
    _V2_KNOWLEDGE,
    _V3_EVENTS,
    _V4_SESSION_STATS,
    _V5_SERVER,
    _V6_USAGE,
)
"""The schema's history: ``MIGRATIONS[n]`` takes a file from version ``n`` to ``n + 1``.

Append only; never edit a migration that has shipped. An SQL string runs as a script, a
function gets the ``Database``; both run inside the upgrade's transaction.
"""

SCHEMA_VERSION = len(MIGRATIONS)


# ----------------------------------------------------------------------------------------------
# The interface


class Storage(Protocol):
    """What MindBot stores and reads back; ``SQLiteStorage`` implements it.

    Methods raise ``StorageError`` when the database fails or refers to nothing (an unknown
    user or session) and ``ValueError`` for an invalid argument.
    """

    def user_for_identity(self, kind: str, value: str, *, display_name: str | None = None) -> User:
        """The user with this identity, created (with ``display_name``) if new."""
        ...

    def get_user(self, user_id: int) -> User | None:
        """The user with this id, if any."""
        ...

    def find_user(self, identity_value: str) -> User | None:
        """The user with an identity of any kind with this value, if any."""
        ...

    def identities(self, user_id: int) -> list[Identity]:
        """A user's identities, oldest first."""
        ...

    def start_session(self, session: SessionRecord) -> None:
        """Records a new session."""
        ...

    def end_session(self, session_id: str, reason: str, ended_at: str | None = None) -> None:
        """Records that a session ended, and why."""
        ...

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session with this id, if any."""
        ...

    def sessions_for_user(self, user_id: int) -> list[SessionRecord]:
        """A user's sessions, oldest first."""
        ...

    def add_turn(self, turn: TurnRecord) -> None:
        """Records a turn of a started session."""
        ...

    def add_turns(self, turns: Iterable[TurnRecord]) -> int:
        """Records many turns in one transaction."""
        ...

    def turns(self, session_id: str) -> list[TurnRecord]:
        """A session's turns, in ``idx`` order."""
        ...

    def set_preference(self, user_id: int, key: str, value: Any) -> None:
        """Sets one of a user's preferences to a JSON-serializable value."""
        ...

    def preferences(self, user_id: int) -> dict[str, Any]:
        """A user's preferences, key → value."""
        ...

    def add_memory(self, memory: MemoryRecord) -> int:
        """Records a memory and returns its id."""
        ...

    def memories(
        self, user_id: int, *, limit: int | None = None, include_expired: bool = False
    ) -> list[MemoryRecord]:
        """A user's memories, newest first."""
        ...

    def delete_memory(self, memory_id: int) -> None:
        """Forgets one memory."""
        ...

    def add_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """Records an audit event; ``data`` must hold no personal data."""
        ...

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Audit events, oldest first, optionally of one kind."""
        ...

    def add_usage(self, usage: UsageRecord) -> None:
        """Records what one service request used."""
        ...

    def usage(
        self, *, session_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[UsageRecord]:
        """Usage rows, oldest first: of one session, or reported in ``[since, until)``."""
        ...

    def session_summary(self, session_id: str) -> dict[str, Any]:
        """Duration, turn count, interruptions, latency figures and end reason of a session."""
        ...

    def session_stats(self, session_id: str) -> dict[str, Any] | None:
        """The analytics row stored when the session ended."""
        ...

    def list_sessions(
        self,
        *,
        user_id: int | None = None,
        persona: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SessionRecord]:
        """Sessions matching the filters, newest first."""
        ...

    def sessions_with_turns(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[tuple[SessionRecord, list[TurnRecord]]]:
        """One page of the sessions started in a date range, oldest first, with their turns."""
        ...

    def check_writable(self) -> None:
        """Raises ``StorageError`` unless the database takes a write right now."""
        ...

    def add_api_key(
        self,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: Iterable[str],
        rate_per_minute: int | None = None,
    ) -> ApiKeyRecord:
        """Records a new API key by its hash."""
        ...

    def api_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key with this SHA-256 (revoked or not), if any."""
        ...

    def api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Every API key, oldest first."""
        ...

    def revoke_api_key(self, key_id: int) -> ApiKeyRecord | None:
        """Revokes a key (once); None if there is no such key."""
        ...

    def touch_api_key(self, key_id: int, at: str | None = None) -> None:
        """Records that a key was used."""
        ...

    def add_access_audit(
        self,
        actor: str,
        action: str,
        *,
        key_id: int | None = None,
        user_id: int | None = None,
        session_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Records an access to personal data; ``detail`` must hold no personal data."""
        ...

    def access_audit(
        self,
        *,
        user_id: int | None = None,
        session_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AccessAuditRecord]:
        """Audit rows, newest first, optionally filtered."""
        ...

    def add_job(self, kind: str, input: Mapping[str, Any]) -> JobRecord:
        """Records a queued job."""
        ...

    def update_job(
        self,
        job_id: str,
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Sets a job's status (and its result or error)."""
        ...

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id, if any."""
        ...

    def jobs(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Jobs, newest first, optionally filtered."""
        ...

    def fail_unfinished_jobs(self, error: str) -> int:
        """Marks every queued or running job failed (after a restart); returns how many."""
        ...

    def add_webhook_subscription(
        self, url: str, event_types: Iterable[str], secret: str
    ) -> WebhookSubscription:
        """Records a webhook subscription."""
        ...

    def webhook_subscriptions(self, *, active_only: bool = False) -> list[WebhookSubscription]:
        """Webhook subscriptions, oldest first."""
        ...

    def delete_webhook_subscription(self, subscription_id: int) -> bool:
        """Deletes a subscription and its outbox rows; False if there was none."""
        ...

    def add_outbox_event(self, event_type: str, payload: Mapping[str, Any]) -> int:
        """Queues an event for every active subscription to it; returns how many rows."""
        ...

    def claim_outbox(
        self, *, limit: int = 10, lease_secs: float = 60.0, now: str | None = None
    ) -> list[OutboxRecord]:
        """Takes up to ``limit`` due rows for delivery, hiding them for ``lease_secs``."""
        ...

    def mark_outbox_delivered(self, outbox_id: int, at: str | None = None) -> None:
        """Records that a row was delivered."""
        ...

    def mark_outbox_failed(self, outbox_id: int, error: str, next_attempt_at: str | None) -> None:
        """Records a failed attempt and when to try again (None: give up)."""
        ...

    def outbox(
        self, *, event_type: str | None = None, pending_only: bool = False
    ) -> list[OutboxRecord]:
        """Outbox rows, oldest first."""
        ...

    def add_webhook_delivery(
        self,
        outbox_id: int,
        *,
        status_code: int | None = None,
        error: str | None = None,
        duration_ms: float | None = None,
        at: str | None = None,
    ) -> int:
        """Records one delivery attempt."""
        ...

    def webhook_deliveries(self, outbox_id: int | None = None) -> list[WebhookDelivery]:
        """Delivery attempts, oldest first, optionally of one outbox row."""
        ...

    def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about a user, JSON-serializable."""
        ...

    def erase_user(self, user_id: int) -> None:
        """Deletes everything stored about a user, leaving only an anonymous audit event."""
        ...

    # -- analytics ---------------------------------------------------------------------------

    def analytics_facts(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Per-session figures of the sessions started in ``[since, until)`` (or of one session),
        and the usage no session owns any more, in one snapshot (see ``mindbot.analytics``)."""
        ...

    # -- webhook delivery -----------------------------------------------------------------------

    def webhook_subscription(self, subscription_id: int) -> WebhookSubscription | None:
        """One webhook subscription, if it exists."""
        ...

    def add_outbox_row(
        self, subscription_id: int, event_type: str, payload: Mapping[str, Any]
    ) -> int:
        """Queues an event for one subscription, whatever it subscribed to (a ping)."""
        ...

    def next_outbox_due(self, *, exclude_subscriptions: Iterable[int] = ()) -> str | None:
        """When the earliest pending outbox row is due, or None when none is pending."""
        ...

    def claim_webhook_outbox(
        self,
        *,
        limit: int = 10,
        lease_secs: float = 60.0,
        per_subscription: int | None = None,
        in_flight: Mapping[int, int] | None = None,
        now: str | None = None,
    ) -> list[OutboxRecord]:
        """``claim_outbox`` with at most ``per_subscription`` rows in flight per subscription."""
        ...

    def subscription_deliveries(
        self, subscription_id: int, *, limit: int = 50, offset: int = 0
    ) -> list[tuple[WebhookDelivery, str]]:
        """A subscription's delivery attempts with their event types, newest first."""
        ...

    def close(self) -> None:
        """Releases the database."""
        ...


# ----------------------------------------------------------------------------------------------
# SQLite


class SQLiteStorage:
    """``Storage`` in one SQLite file, through sqlite-utils.

    One connection serves every thread, behind a lock; other instances and processes may open
    the same file, and their writers wait for each other (``BEGIN IMMEDIATE`` with a busy
    timeout, retried) instead of failing with "database is locked". WAL with
    ``synchronous=NORMAL``: a committed write survives the process being killed; a power cut
    may lose the last few.
    """

    def __init__(self, path: Path) -> None:
        """Opens (creating or upgrading) the database.

        Args:
            path: The database file; missing parent directories are created.

        Raises:
            StorageError: The file is not a SQLite database, cannot be written, or comes from a
                newer MindBot. The file is left exactly as it was.
        """
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: Database | None = None
        conn = self._connect()
        try:
            self._db = Database(conn, execute_plugins=False)
            self._migrate(self._db)
        except sqlite3.Error as e:
            conn.close()
            raise StorageError(f"{self.path}: cannot open the database: {e}") from e
        except BaseException:
            conn.close()
            raise
        logger.info(f"{self}: opened, schema version {SCHEMA_VERSION}")

    def __str__(self) -> str:
        return f"SQLiteStorage({self.path.name})"

    # -- opening ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{path}: cannot create its directory: {e.strerror}") from e
        if path.exists():
            if not path.is_file():
                raise StorageError(f"{path} is not a file")
            try:
                with path.open("rb") as f:
                    header = f.read(len(_SQLITE_MAGIC))
            except OSError as e:
                raise StorageError(f"{path} cannot be read: {e.strerror}") from e
            if header and header != _SQLITE_MAGIC:
                raise StorageError(f"{path} is not a SQLite database (unrecognized header)")
            if not os.access(path, os.W_OK):
                raise StorageError(f"{path} is read-only")
        if not os.access(path.parent, os.W_OK):
            raise StorageError(f"{path} is in a read-only directory (SQLite needs to write there)")
        try:
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE … COMMIT
                check_same_thread=False,  # shared by threads, behind self._lock
            )
        except sqlite3.Error as e:
            raise StorageError(f"{path} cannot be opened: {e}") from e
        try:
            _retry_while_busy(lambda: self._check(conn))
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StorageError(f"{path} cannot be used as a database: {e}") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuses a newer or unwritable file before anything writes to it, then sets pragmas."""
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._refuse_newer(conn.execute("PRAGMA user_version").fetchone()[0])
        # Probe with a real write, rolled back: BEGIN IMMEDIATE alone succeeds on an immutable
        # file in WAL mode, and os.access() can say yes where writes fail (root, some mounts).
        _begin_immediate(conn)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")
        except sqlite3.OperationalError as e:
            if _code(e) in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
                raise StorageError(f"{self.path} cannot be written: {e}") from e
            raise
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{self.path} cannot use WAL journaling (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros (some builds default to this, not all), and
        # VACUUM's temporary copy of the data stays in memory.
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA temp_store = MEMORY")

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this MindBot's "
                f"{SCHEMA_VERSION}; upgrade MindBot to open it"
            )

    def _migrate(self, db: Database) -> None:
        _begin_immediate(db.conn)
        try:
            version = int(db.conn.execute("PRAGMA user_version").fetchone()[0])
            self._refuse_newer(version)
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                if isinstance(migration, str):
                    db.executescript(migration)
                else:
                    migration(db)
                logger.info(f"{self}: migrated to schema version {number}")
            if version < SCHEMA_VERSION:
                db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def _write(self, action: str) -> Iterator[Database]:
        """One write transaction, committed on success; sqlite errors become StorageError."""
        with self._lock:
            db = self._open_db()
            try:
                _begin_immediate(db.conn)
                try:
                    yield db
                    db.conn.execute("COMMIT")
                except BaseException:
                    if db.conn.in_transaction:
                        db.conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StorageError(f"{self.path}: {action} failed: {e}") from e

    @contextmanager
    def _read(self, action: str) -> Iterator[Database]:
        """One read transaction, so that several queries see the same snapshot."""
        with self._lock:
            db = self._open_db()
            try:
                _begin_read(db.conn)
                try:
                    yield db
                finally:
                    if db.conn.in_transaction:
                        db.conn.execute("COMMIT")
            except sqlite3.Error as e:
                raise StorageError(f"{self.path}: {action} failed: {e}") from e

    def _open_db(self) -> Database:
        if self._db is None:
            raise StorageError(f"{self.path}: the storage is closed")
        return self._db

    # -- users -----------------------------------------------------------------------------

    def user_for_identity(self, kind: str, value: str, *, display_name: str | None = None) -> User:
        """The user with this identity, created if new.

        Args:
            kind: ``phone``, ``webrtc``, ``daily``, ``slack`` or ``discord``.
            value: The phone number or the channel's user id.
            display_name: The name a new user gets; ignored for an existing one.

        Raises:
            ValueError: ``kind`` is unknown or ``value`` is empty.
        """
        if kind not in IDENTITY_KINDS:
            raise ValueError(f"unknown identity kind {kind!r}; one of {sorted(IDENTITY_KINDS)}")
        if not value:
            raise ValueError("an identity needs a value")
        with self._write("user_for_identity") as db:
            rows = list(
                db.query(
                    "SELECT users.* FROM identities JOIN users ON users.id = identities.user_id"
                    " WHERE identities.kind = ? AND identities.value = ?",
                    [kind, value],
                )
            )
            if rows:
                return _user(rows[0])
            now = utc_now()
            users = db["users"].insert({"created_at": now, "display_name": display_name})
            user_id = int(users.last_pk)
            db["identities"].insert(
                {"user_id": user_id, "kind": kind, "value": value, "created_at": now}
            )
        logger.info(f"{self}: new user {user_id} ({kind})")
        return User(id=user_id, created_at=now, display_name=display_name)

    def get_user(self, user_id: int) -> User | None:
        """The user with this id, if any."""
        with self._read("get_user") as db:
            rows = list(db.query("SELECT * FROM users WHERE id = ?", [user_id]))
        return _user(rows[0]) if rows else None

    def find_user(self, identity_value: str) -> User | None:
        """The user with an identity of any kind with this value (the oldest such), if any."""
        with self._read("find_user") as db:
            rows = list(
                db.query(
                    "SELECT users.* FROM identities JOIN users ON users.id = identities.user_id"
                    " WHERE identities.value = ? ORDER BY users.id LIMIT 1",
                    [identity_value],
                )
            )
        return _user(rows[0]) if rows else None

    def identities(self, user_id: int) -> list[Identity]:
        """A user's identities, oldest first."""
        with self._read("identities") as db:
            rows = list(
                db.query("SELECT * FROM identities WHERE user_id = ? ORDER BY id", [user_id])
            )
        return [_identity(row) for row in rows]

    # -- sessions and turns ----------------------------------------------------------------

    def start_session(self, session: SessionRecord) -> None:
        """Records a new session, and queues a ``session.started`` event in the outbox for each
        active webhook subscription to it, in the same transaction.

        Raises:
            StorageError: The id is taken or the user does not exist.
        """
        row = asdict(session)
        row["started_at"] = _utc(session.started_at)
        row["ended_at"] = _utc_or_none(session.ended_at)
        with self._write("start_session") as db:
            db["sessions"].insert(row)
            _enqueue(db, "session.started", {"session": row})

    def end_session(self, session_id: str, reason: str, ended_at: str | None = None) -> None:
        """Records that a session ended.

        Args:
            session_id: The session.
            reason: Why, e.g. ``completed``, ``cancelled`` or ``error``.
            ended_at: When (defaults to now).

        The session's analytics row (``session_stats``) and a ``session.ended`` event with the
        summary, queued in the outbox for each active webhook subscription to it, are written in
        the same transaction.

        Raises:
            StorageError: There is no such session.
        """
        ended = _utc(ended_at) if ended_at is not None else utc_now()
        with self._write("end_session") as db:
            cursor = db.execute(
                "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?",
                [ended, reason, session_id],
            )
            if cursor.rowcount == 0:
                raise StorageError(f"{self.path}: no session {session_id[:8]}… to end")
            stats = self._summarize(db, session_id)
            db["session_stats"].upsert(stats, pk="session_id")
            session = next(db.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
            _enqueue(db, "session.ended", {"session": session, "summary": stats})

    def session_stats(self, session_id: str) -> dict[str, Any] | None:
        """The analytics row stored when the session ended (None before it ends)."""
        with self._read("session_stats") as db:
            rows = list(db.query("SELECT * FROM session_stats WHERE session_id = ?", [session_id]))
        return rows[0] if rows else None

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session with this id, if any."""
        with self._read("get_session") as db:
            rows = list(db.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
        return SessionRecord(**rows[0]) if rows else None

    def sessions_for_user(self, user_id: int) -> list[SessionRecord]:
        """A user's sessions, oldest first."""
        with self._read("sessions_for_user") as db:
            rows = list(
                db.query(
                    "SELECT * FROM sessions WHERE user_id = ? ORDER BY started_at, id", [user_id]
                )
            )
        return [SessionRecord(**row) for row in rows]

    def add_turn(self, turn: TurnRecord) -> None:
        """Records a turn.

        Raises:
            ValueError: ``role`` is not ``user`` or ``assistant``, or a JSON field is not
                JSON-serializable.
            StorageError: The session was not started, or it already has a turn ``idx``.
        """
        self.add_turns([turn])

    def add_turns(self, turns: Iterable[TurnRecord]) -> int:
        """Records many turns in one transaction (imports, benchmarks); returns how many.

        A ``tool.called`` event per tool call of the turns is queued in the outbox for each
        active webhook subscription to it, in the same transaction (without the calls'
        arguments and results: see ``_enqueue_tool_calls``).

        Raises:
            ValueError: A role is not ``user`` or ``assistant``, or a JSON field is not
                JSON-serializable.
            StorageError: A session was not started, or a turn ``idx`` is taken.
        """
        turns = list(turns)
        rows = (_turn_row(turn) for turn in turns)
        with self._write("add_turns") as db:
            before = db["turns"].count
            db["turns"].insert_all(rows, batch_size=5000)
            added = db["turns"].count - before
            self._enqueue_tool_calls(db, turns)
            return added

    def turns(self, session_id: str) -> list[TurnRecord]:
        """A session's turns, in ``idx`` order."""
        with self._read("turns") as db:
            rows = list(
                db.query("SELECT * FROM turns WHERE session_id = ? ORDER BY idx", [session_id])
            )
        return [_turn(row) for row in rows]

    # -- preferences and memories ----------------------------------------------------------

    def set_preference(self, user_id: int, key: str, value: Any) -> None:
        """Sets one of a user's preferences.

        Args:
            user_id: The user.
            key: The preference's name.
            value: Any JSON-serializable value.

        Raises:
            ValueError: ``value`` is not JSON-serializable.
            StorageError: The user does not exist.
        """
        encoded = _json(value)
        with self._write("set_preference") as db:
            db["preferences"].upsert(
                {"user_id": user_id, "key": key, "value": encoded, "updated_at": utc_now()},
                pk=("user_id", "key"),
            )

    def preferences(self, user_id: int) -> dict[str, Any]:
        """A user's preferences, key → value."""
        with self._read("preferences") as db:
            rows = list(db.query("SELECT key, value FROM preferences WHERE user_id = ?", [user_id]))
        return {row["key"]: json.loads(row["value"]) for row in rows}

    def add_memory(self, memory: MemoryRecord) -> int:
        """Records a memory and returns its id.

        Raises:
            StorageError: The user (or the source session) does not exist, or the confidence
                is outside 0..1.
        """
        row = asdict(memory)
        row.pop("id")
        row["created_at"] = _utc(memory.created_at)
        row["expires_at"] = _utc_or_none(memory.expires_at)
        with self._write("add_memory") as db:
            table = db["memories"].insert(row)
            return int(table.last_pk)

    def memories(
        self, user_id: int, *, limit: int | None = None, include_expired: bool = False
    ) -> list[MemoryRecord]:
        """A user's memories, newest first.

        Args:
            user_id: The user.
            limit: At most this many.
            include_expired: Also those whose ``expires_at`` has passed.
        """
        sql = "SELECT * FROM memories WHERE user_id = ?"
        params: list[Any] = [user_id]
        if not include_expired:
            sql += " AND (expires_at IS NULL OR expires_at > ?)"
            params.append(utc_now())
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read("memories") as db:
            rows = list(db.query(sql, params))
        return [MemoryRecord(**row) for row in rows]

    def delete_memory(self, memory_id: int) -> None:
        """Forgets one memory (nothing happens if it does not exist)."""
        with self._write("delete_memory") as db:
            db.execute("DELETE FROM memories WHERE id = ?", [memory_id])

    # -- audit events ----------------------------------------------------------------------

    def add_event(self, kind: str, data: Mapping[str, Any]) -> None:
        """Records an audit event.

        Args:
            kind: What happened, e.g. ``session.started``.
            data: JSON-serializable details with no personal data. A top-level ``user_id`` or
                ``session_id`` ties the event to a user, and ``erase_user`` deletes it.
        """
        encoded = _json(dict(data))
        with self._write("add_event") as db:
            db["events"].insert({"at": utc_now(), "kind": kind, "data": encoded})

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Audit events, oldest first, as ``{"id", "at", "kind", "data"}``."""
        sql = "SELECT * FROM events"
        params: list[Any] = []
        if kind is not None:
            sql += " WHERE kind = ?"
            params.append(kind)
        with self._read("events") as db:
            rows = list(db.query(sql + " ORDER BY id", params))
        return [{**row, "data": json.loads(row["data"])} for row in rows]

    # -- usage -----------------------------------------------------------------------------

    def add_usage(self, usage: UsageRecord) -> None:
        """Records what one service request used (tokens, characters, audio seconds)."""
        row = asdict(usage)
        row.pop("id")
        with self._write("add_usage") as db:
            db["usage"].insert(row)

    def usage(
        self, *, session_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[UsageRecord]:
        """Usage rows, oldest first.

        Args:
            session_id: Only this session's.
            since: Only rows reported at or after this ISO 8601 time.
            until: Only rows reported before this ISO 8601 time.
        """
        where, params = [], []
        filters = (("session_id = ?", session_id), ("at >= ?", since), ("at < ?", until))
        for clause, value in filters:
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM usage" + (" WHERE " + " AND ".join(where) if where else "")
        with self._read("usage") as db:
            rows = list(db.query(sql + " ORDER BY at, id", params))
        return [UsageRecord(**row) for row in rows]

    # -- reports ---------------------------------------------------------------------------

    def session_summary(self, session_id: str) -> dict[str, Any]:
        """A session in figures.

        Returns:
            ``duration_secs`` (None while running), ``turns``, ``interruptions``,
            ``mean_latency_secs`` and ``p95_latency_secs`` (nearest rank) over assistant turns
            with a latency (None without any), and ``end_reason``.

        Raises:
            StorageError: There is no such session.
        """
        with self._read("session_summary") as db:
            return self._summarize(db, session_id)

    def _summarize(self, db: Database, session_id: str) -> dict[str, Any]:
        """``session_summary`` inside an open transaction."""
        rows = list(db.query("SELECT * FROM sessions WHERE id = ?", [session_id]))
        if not rows:
            raise StorageError(f"{self.path}: no session {session_id[:8]}…")
        counts = next(
            db.query(
                "SELECT count(*) AS turns, coalesce(sum(interrupted), 0) AS interruptions"
                " FROM turns WHERE session_id = ?",
                [session_id],
            )
        )
        latencies = [
            row["latency_secs"]
            for row in db.query(
                "SELECT latency_secs FROM turns WHERE session_id = ? AND role = 'assistant'"
                " AND latency_secs IS NOT NULL ORDER BY latency_secs",
                [session_id],
            )
        ]
        session = rows[0]
        ended_at = session["ended_at"]
        return {
            "session_id": session_id,
            "duration_secs": (
                _seconds_between(session["started_at"], ended_at) if ended_at else None
            ),
            "turns": counts["turns"],
            "interruptions": counts["interruptions"],
            "mean_latency_secs": sum(latencies) / len(latencies) if latencies else None,
            "p95_latency_secs": (
                latencies[math.ceil(0.95 * len(latencies)) - 1] if latencies else None
            ),
            "end_reason": session["end_reason"],
        }

    # -- listings for the API --------------------------------------------------------------

    def list_sessions(
        self,
        *,
        user_id: int | None = None,
        persona: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SessionRecord]:
        """Sessions matching every filter given, newest first.

        Args:
            user_id: Only this user's.
            persona: Only those the bot played this persona in.
            since: Only those started at or after this time (ISO-8601 with an offset).
            until: Only those started before this time.
            limit: At most this many (at least 1).
            offset: Skip this many first.

        Raises:
            ValueError: A timestamp has no offset, or ``limit``/``offset`` is out of range.
        """
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset at least 0")
        where, params = _session_filters(user_id=user_id, persona=persona, since=since, until=until)
        sql = f"SELECT * FROM sessions{where} ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
        with self._read("list_sessions") as db:
            rows = list(db.query(sql, [*params, int(limit), int(offset)]))
        return [SessionRecord(**row) for row in rows]

    def sessions_with_turns(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 100,
    ) -> list[tuple[SessionRecord, list[TurnRecord]]]:
        """One page of the sessions started in ``[since, until)``, oldest first, with their turns.

        Read a whole range page by page: pass the last session's ``(started_at, id)`` as
        ``after`` to get the next page; an empty page is the end. Each page is one snapshot.

        Raises:
            ValueError: A timestamp has no offset, or ``limit`` is below 1.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where, params = _session_filters(since=since, until=until)
        if after is not None:
            where += (" AND " if where else " WHERE ") + "(started_at, id) > (?, ?)"
            params += [_utc(after[0]), after[1]]
        with self._read("sessions_with_turns") as db:
            rows = list(
                db.query(
                    f"SELECT * FROM sessions{where} ORDER BY started_at, id LIMIT ?",
                    [*params, int(limit)],
                )
            )
            turns: dict[str, list[TurnRecord]] = {row["id"]: [] for row in rows}
            if turns:
                marks = ", ".join("?" * len(turns))
                for row in db.query(
                    f"SELECT * FROM turns WHERE session_id IN ({marks}) ORDER BY session_id, idx",
                    list(turns),
                ):
                    turns[row["session_id"]].append(_turn(row))
        return [(SessionRecord(**row), turns[row["id"]]) for row in rows]

    def check_writable(self) -> None:
        """Takes the write lock and commits a write (readiness probes).

        Raises:
            StorageError: The database is closed, locked past the timeout, or cannot be written.
        """
        with self._write("check_writable") as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version = {version}")

    # -- API keys ------------------------------------------------------------------------

    def add_api_key(
        self,
        name: str,
        prefix: str,
        secret_hash: str,
        scopes: Iterable[str],
        rate_per_minute: int | None = None,
    ) -> ApiKeyRecord:
        """Records a new API key by the SHA-256 of its secret (the key itself is never stored).

        Args:
            name: What the key is for.
            prefix: Its first characters, shown to tell keys apart.
            secret_hash: The SHA-256 of the whole key, hex.
            scopes: Its scopes.
            rate_per_minute: Its own rate limit (None: the API's default).

        Raises:
            ValueError: The name or the scopes are empty, or the rate is not positive.
            StorageError: The prefix or the hash is taken.
        """
        scopes = tuple(scopes)
        if not name.strip() or not scopes:
            raise ValueError("an API key needs a name and at least one scope")
        if rate_per_minute is not None and rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        row = {
            "name": name.strip(),
            "prefix": prefix,
            "secret_hash": secret_hash,
            "scopes": _json(list(scopes)),
            "rate_per_minute": rate_per_minute,
            "created_at": utc_now(),
        }
        with self._write("add_api_key") as db:
            key_id = int(db["api_keys"].insert(row).last_pk)
        logger.info(f"{self}: API key {key_id} ({prefix}…) created")
        return _api_key({**row, "id": key_id, "last_used_at": None, "revoked_at": None})

    def api_key_by_hash(self, secret_hash: str) -> ApiKeyRecord | None:
        """The key whose secret has this SHA-256, revoked or not, if any."""
        with self._read("api_key_by_hash") as db:
            rows = list(db.query("SELECT * FROM api_keys WHERE secret_hash = ?", [secret_hash]))
        return _api_key(rows[0]) if rows else None

    def api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Every API key, oldest first (only the unrevoked ones with ``include_revoked=False``)."""
        sql = "SELECT * FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with self._read("api_keys") as db:
            rows = list(db.query(sql + " ORDER BY id"))
        return [_api_key(row) for row in rows]

    def revoke_api_key(self, key_id: int) -> ApiKeyRecord | None:
        """Revokes a key; revoking it again keeps the first time. None if there is no such key."""
        with self._write("revoke_api_key") as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                [utc_now(), key_id],
            )
            rows = list(db.query("SELECT * FROM api_keys WHERE id = ?", [key_id]))
        if rows:
            logger.info(f"{self}: API key {key_id} revoked")
        return _api_key(rows[0]) if rows else None

    def touch_api_key(self, key_id: int, at: str | None = None) -> None:
        """Records that a key was used at ``at`` (default now)."""
        when = _utc(at) if at is not None else utc_now()
        with self._write("touch_api_key") as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", [when, key_id])

    # -- access audit ----------------------------------------------------------------------

    def add_access_audit(
        self,
        actor: str,
        action: str,
        *,
        key_id: int | None = None,
        user_id: int | None = None,
        session_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Records an access to personal data and returns the row's id.

        Args:
            actor: Who: the API key's name, or ``cli``.
            action: What, e.g. ``user.exported``, ``user.erased``, ``transcript.read``.
            key_id: The API key used, if any.
            user_id: Whose data, if a user's.
            session_id: Which session's data, if one session's.
            detail: JSON-serializable details with no personal data.

        Raises:
            ValueError: ``actor`` or ``action`` is empty, or ``detail`` is not JSON-serializable.
        """
        if not actor or not action:
            raise ValueError("an audit row needs an actor and an action")
        row = {
            "at": utc_now(),
            "actor": actor,
            "action": action,
            "key_id": key_id,
            "user_id": user_id,
            "session_id": session_id,
            "detail": _json_or_none(dict(detail) if detail is not None else None),
        }
        with self._write("add_access_audit") as db:
            return int(db["access_audit"].insert(row).last_pk)

    def access_audit(
        self,
        *,
        user_id: int | None = None,
        session_id: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AccessAuditRecord]:
        """Audit rows, newest first, matching every filter given."""
        clauses, params = [], []
        for column, value in (("user_id", user_id), ("session_id", session_id), ("action", action)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM access_audit" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._read("access_audit") as db:
            rows = list(db.query(sql, params))
        return [
            AccessAuditRecord(**{**row, "detail": _json_or_none_loads(row["detail"])})
            for row in rows
        ]

    # -- jobs ------------------------------------------------------------------------------

    def add_job(self, kind: str, input: Mapping[str, Any]) -> JobRecord:
        """Records a queued job with a new random id.

        Raises:
            ValueError: ``input`` is not JSON-serializable.
        """
        now = utc_now()
        row = {
            "id": uuid.uuid4().hex,
            "kind": kind,
            "status": "queued",
            "input": _json(dict(input)),
            "result": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
        }
        with self._write("add_job") as db:
            db["jobs"].insert(row)
        return _job(row)

    def update_job(
        self,
        job_id: str,
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Sets a job's status, result and error.

        Raises:
            ValueError: The status is unknown, or ``result`` is not JSON-serializable.
            StorageError: There is no such job.
        """
        if status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}; one of {sorted(JOB_STATUSES)}")
        encoded = _json_or_none(dict(result) if result is not None else None)
        with self._write("update_job") as db:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, updated_at = ? WHERE id = ?",
                [status, encoded, error, utc_now(), job_id],
            )
            if cursor.rowcount == 0:
                raise StorageError(f"{self.path}: no job {job_id[:8]}…")

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id, if any."""
        with self._read("get_job") as db:
            rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        return _job(rows[0]) if rows else None

    def jobs(
        self, *, kind: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """Jobs, newest first, matching every filter given."""
        clauses, params = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._read("jobs") as db:
            rows = list(db.query(sql + " ORDER BY created_at DESC, id LIMIT ?", [*params, limit]))
        return [_job(row) for row in rows]

    def fail_unfinished_jobs(self, error: str) -> int:
        """Marks every queued or running job failed with ``error``; returns how many.

        Jobs run in the process that accepted them: after a restart, nothing runs them.
        """
        with self._write("fail_unfinished_jobs") as db:
            return db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, updated_at = ?"
                " WHERE status IN ('queued', 'running')",
                [error, utc_now()],
            ).rowcount

    # -- webhooks: subscriptions, the outbox and deliveries ---------------------------------

    def add_webhook_subscription(
        self, url: str, event_types: Iterable[str], secret: str
    ) -> WebhookSubscription:
        """Records an active subscription.

        Args:
            url: The receiver's URL.
            event_types: The event types it receives; ``*`` for all.
            secret: The key its deliveries are signed with.

        Raises:
            ValueError: The URL, the event types or the secret is empty.
        """
        types = tuple(event_types)
        if not url or not types or not secret:
            raise ValueError("a subscription needs a URL, event types and a secret")
        row = {
            "url": url,
            "event_types": _json(list(types)),
            "secret": secret,
            "active": 1,
            "created_at": utc_now(),
        }
        with self._write("add_webhook_subscription") as db:
            subscription_id = int(db["webhook_subscriptions"].insert(row).last_pk)
        return _subscription({**row, "id": subscription_id})

    def webhook_subscriptions(self, *, active_only: bool = False) -> list[WebhookSubscription]:
        """Subscriptions, oldest first."""
        sql = "SELECT * FROM webhook_subscriptions"
        if active_only:
            sql += " WHERE active = 1"
        with self._read("webhook_subscriptions") as db:
            rows = list(db.query(sql + " ORDER BY id"))
        return [_subscription(row) for row in rows]

    def delete_webhook_subscription(self, subscription_id: int) -> bool:
        """Deletes a subscription with its outbox rows and their deliveries; False if none."""
        with self._write("delete_webhook_subscription") as db:
            return (
                db.execute(
                    "DELETE FROM webhook_subscriptions WHERE id = ?", [subscription_id]
                ).rowcount
                > 0
            )

    def add_outbox_event(self, event_type: str, payload: Mapping[str, Any]) -> int:
        """Queues an event for every active subscription to its type; returns how many rows.

        Raises:
            ValueError: ``payload`` is not JSON-serializable.
        """
        with self._write("add_outbox_event") as db:
            return _enqueue(db, event_type, payload)

    def claim_outbox(
        self, *, limit: int = 10, lease_secs: float = 60.0, now: str | None = None
    ) -> list[OutboxRecord]:
        """Takes up to ``limit`` undelivered rows that are due, oldest due first, for delivery.

        Claiming counts an attempt and moves ``next_attempt_at`` ``lease_secs`` ahead, so
        another dispatcher does not take the same rows, and a dispatcher that dies mid-delivery
        leaves them to be retried. Follow with ``mark_outbox_delivered`` or
        ``mark_outbox_failed``.

        Args:
            limit: At most this many rows.
            lease_secs: How long the rows stay hidden from other claims.
            now: The current time (default: now).
        """
        return self.claim_webhook_outbox(limit=limit, lease_secs=lease_secs, now=now)

    def mark_outbox_delivered(self, outbox_id: int, at: str | None = None) -> None:
        """Records that a row was delivered (it is never claimed again).

        Raises:
            StorageError: There is no such row.
        """
        when = _utc(at) if at is not None else utc_now()
        with self._write("mark_outbox_delivered") as db:
            cursor = db.execute(
                "UPDATE outbox SET delivered_at = ?, next_attempt_at = NULL, last_error = NULL"
                " WHERE id = ?",
                [when, outbox_id],
            )
            if cursor.rowcount == 0:
                raise StorageError(f"{self.path}: no outbox row {outbox_id}")

    def mark_outbox_failed(self, outbox_id: int, error: str, next_attempt_at: str | None) -> None:
        """Records a failed attempt.

        Args:
            outbox_id: The row.
            error: What went wrong (no personal data: it is kept).
            next_attempt_at: When to try again; None gives up on the row.

        Raises:
            StorageError: There is no such row.
        """
        when = _utc_or_none(next_attempt_at)
        with self._write("mark_outbox_failed") as db:
            cursor = db.execute(
                "UPDATE outbox SET last_error = ?, next_attempt_at = ? WHERE id = ?",
                [error, when, outbox_id],
            )
            if cursor.rowcount == 0:
                raise StorageError(f"{self.path}: no outbox row {outbox_id}")

    def outbox(
        self, *, event_type: str | None = None, pending_only: bool = False
    ) -> list[OutboxRecord]:
        """Outbox rows, oldest first: of one event type, and only those still to be delivered
        (not delivered, not given up) with ``pending_only``."""
        clauses, params = [], []
        if event_type is not None:
            clauses.append("event_type = ?")
            params.append(event_type)
        if pending_only:
            clauses.append("delivered_at IS NULL AND next_attempt_at IS NOT NULL")
        sql = "SELECT * FROM outbox" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._read("outbox") as db:
            rows = list(db.query(sql + " ORDER BY id", params))
        return [_outbox(row) for row in rows]

    def add_webhook_delivery(
        self,
        outbox_id: int,
        *,
        status_code: int | None = None,
        error: str | None = None,
        duration_ms: float | None = None,
        at: str | None = None,
    ) -> int:
        """Records one delivery attempt of an outbox row and returns its id.

        Raises:
            StorageError: There is no such outbox row.
        """
        row = {
            "outbox_id": outbox_id,
            "at": _utc(at) if at is not None else utc_now(),
            "status_code": status_code,
            "error": error,
            "duration_ms": duration_ms,
        }
        with self._write("add_webhook_delivery") as db:
            return int(db["webhook_deliveries"].insert(row).last_pk)

    def webhook_deliveries(self, outbox_id: int | None = None) -> list[WebhookDelivery]:
        """Delivery attempts, oldest first, of one outbox row or of all."""
        sql, params = "SELECT * FROM webhook_deliveries", []
        if outbox_id is not None:
            sql += " WHERE outbox_id = ?"
            params.append(outbox_id)
        with self._read("webhook_deliveries") as db:
            rows = list(db.query(sql + " ORDER BY id", params))
        return [WebhookDelivery(**row) for row in rows]

    # -- a user's data ---------------------------------------------------------------------

    def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about a user, JSON-serializable.

        Returns:
            ``user``, ``identities``, ``sessions`` (each with its ``turns``), ``memories``
            (expired ones included) and ``preferences``.

        Raises:
            StorageError: There is no such user.
        """
        with self._read("export_user") as db:
            users = list(db.query("SELECT * FROM users WHERE id = ?", [user_id]))
            if not users:
                raise StorageError(f"{self.path}: no user {user_id} to export")
            identities = list(
                db.query("SELECT * FROM identities WHERE user_id = ? ORDER BY id", [user_id])
            )
            sessions = list(
                db.query(
                    "SELECT * FROM sessions WHERE user_id = ? ORDER BY started_at, id", [user_id]
                )
            )
            turns: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in sessions}
            for row in db.query(
                "SELECT turns.* FROM turns JOIN sessions ON sessions.id = turns.session_id"
                " WHERE sessions.user_id = ? ORDER BY turns.session_id, turns.idx",
                [user_id],
            ):
                turns[row["session_id"]].append(asdict(_turn(row)))
            memories = list(
                db.query("SELECT * FROM memories WHERE user_id = ? ORDER BY id", [user_id])
            )
            preferences = list(
                db.query("SELECT key, value FROM preferences WHERE user_id = ?", [user_id])
            )
        return {
            "user": asdict(_user(users[0])),
            "identities": [asdict(_identity(row)) for row in identities],
            "sessions": [{**asdict(SessionRecord(**s)), "turns": turns[s["id"]]} for s in sessions],
            "memories": [asdict(MemoryRecord(**row)) for row in memories],
            "preferences": {row["key"]: json.loads(row["value"]) for row in preferences},
        }

    def erase_user(self, user_id: int) -> None:
        """Deletes everything stored about a user, and scrubs it from the file.

        Identities, sessions, their turns, memories, preferences, the events and webhook outbox
        rows (with their deliveries) that name the user or one of their sessions go in one
        transaction, with a ``user.erased`` audit event holding only a random erasure id and the
        counts. Access-audit rows about the user stay, unlinked from them: their user and
        session ids are replaced by the erasure id. Then VACUUM rebuilds the file and a
        TRUNCATE checkpoint empties the WAL, so the deleted text is not left in free pages.

        Raises:
            StorageError: There is no such user.
        """
        erasure_id = uuid.uuid4().hex
        with self._write("erase_user") as db:
            if not list(db.query("SELECT id FROM users WHERE id = ?", [user_id])):
                raise StorageError(f"{self.path}: no user {user_id} to erase")
            user_sessions = "SELECT id FROM sessions WHERE user_id = :user"
            statements = {
                "events": "DELETE FROM events"
                " WHERE json_extract(data, '$.user_id') IN (:user, CAST(:user AS TEXT))"
                f" OR json_extract(data, '$.session_id') IN ({user_sessions})",
                "outbox": "DELETE FROM outbox"
                " WHERE json_extract(payload, '$.session.user_id') IN (:user, CAST(:user AS TEXT))"
                f" OR json_extract(payload, '$.session.id') IN ({user_sessions})",
                "access_audit": "UPDATE access_audit"
                " SET user_id = NULL, session_id = NULL, erasure_id = :erasure"
                f" WHERE user_id = :user OR session_id IN ({user_sessions})",
                "turns": f"DELETE FROM turns WHERE session_id IN ({user_sessions})",
                # Usage holds no personal data; unlinked, it still counts in the day's cost.
                "usage": "UPDATE usage SET session_id = NULL"
                f" WHERE session_id IN ({user_sessions})",
                "session_stats": f"DELETE FROM session_stats WHERE session_id IN ({user_sessions})",
                "memories": "DELETE FROM memories WHERE user_id = :user",
                "preferences": "DELETE FROM preferences WHERE user_id = :user",
                "sessions": "DELETE FROM sessions WHERE user_id = :user",
                "identities": "DELETE FROM identities WHERE user_id = :user",
                "users": "DELETE FROM users WHERE id = :user",
            }
            counts = {
                table: db.execute(sql, {"user": user_id, "erasure": erasure_id}).rowcount
                for table, sql in statements.items()
            }
            db["events"].insert(
                {
                    "at": utc_now(),
                    "kind": "user.erased",
                    "data": _json({"erasure_id": erasure_id, "counts": counts}),
                }
            )
        self._scrub()
        logger.info(f"{self}: erased a user (erasure {erasure_id}): {counts}")

    def _scrub(self) -> None:
        """Rewrites the file without free pages and empties the WAL."""
        with self._lock:
            db = self._open_db()
            try:
                db.vacuum()
                busy, _, _ = db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as e:
                raise StorageError(f"{self.path}: compacting after an erasure failed: {e}") from e
        if busy:
            logger.warning(
                f"{self}: another connection kept the WAL busy; erased data stays in "
                f"{self.path.name}-wal until its next checkpoint"
            )

    # -- analytics ---------------------------------------------------------------------------

    def analytics_facts(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """What analytics adds up, per session, for the sessions started in ``[since, until)``.

        Turns, usage and errors belong to their session (a session that runs past midnight
        stays in the day it started). The usage of erased users' sessions (``session_id``
        NULL) is returned apart, by the UTC day it was reported, when no ``session_id`` is
        given.

        Args:
            since: Sessions started at or after this time (ISO 8601 with an offset).
            until: Sessions started before this time.
            session_id: Only this session.

        Returns:
            Lists of rows: ``sessions`` (the session's columns, oldest first), ``turn_counts``
            (``session_id``, ``turns``, ``interruptions``), ``latencies`` (``session_id``,
            ``latency_secs`` of assistant turns), ``emotions`` (``session_id``, ``idx``,
            ``label``, ``valence``, in turn order), ``tool_calls`` (``session_id``, ``status``,
            ``calls``), ``errors`` (``session_id``, ``errors``: ``session.error`` events),
            ``usage`` (``session_id``, ``service``, ``provider``, ``model``, the summed
            ``prompt_tokens``, ``completion_tokens``, ``characters``, ``audio_secs`` and
            ``requests``) and ``unlinked_usage`` (the same with ``day`` for ``session_id``).

        Raises:
            ValueError: A timestamp has no offset.
        """
        where, params = _session_filters(since=since, until=until)
        if session_id is not None:
            where += (" AND " if where else " WHERE ") + "id = ?"
            params.append(session_id)
        chosen = f"SELECT id FROM sessions{where}"
        sums = (
            "service, provider, model, sum(prompt_tokens) AS prompt_tokens,"
            " sum(completion_tokens) AS completion_tokens, sum(characters) AS characters,"
            " sum(audio_secs) AS audio_secs, count(*) AS requests"
        )
        queries = {
            "sessions": f"SELECT * FROM sessions{where} ORDER BY started_at, id",
            "turn_counts": "SELECT session_id, count(*) AS turns,"
            " sum(interrupted) AS interruptions FROM turns"
            f" WHERE session_id IN ({chosen}) GROUP BY session_id",
            "latencies": "SELECT session_id, latency_secs FROM turns"
            f" WHERE session_id IN ({chosen}) AND role = 'assistant'"
            " AND latency_secs IS NOT NULL",
            "emotions": "SELECT session_id, idx, json_extract(emotion, '$.label') AS label,"
            " json_extract(emotion, '$.valence') AS valence FROM turns"
            f" WHERE session_id IN ({chosen}) AND json_type(emotion) = 'object'"
            " ORDER BY session_id, idx",
            "tool_calls": "SELECT t.session_id, json_extract(c.value, '$.status') AS status,"
            " count(*) AS calls FROM turns AS t, json_each(t.tool_calls) AS c"
            f" WHERE t.session_id IN ({chosen}) AND json_type(t.tool_calls) = 'array'"
            " GROUP BY t.session_id, status",
            "errors": "SELECT json_extract(data, '$.session_id') AS session_id,"
            " count(*) AS errors FROM events WHERE kind = 'session.error'"
            f" AND json_extract(data, '$.session_id') IN ({chosen}) GROUP BY 1",
            "usage": f"SELECT session_id, {sums} FROM usage WHERE session_id IN ({chosen})"
            " GROUP BY session_id, service, provider, model",
        }
        with self._read("analytics_facts") as db:
            facts = {name: list(db.query(sql, params)) for name, sql in queries.items()}
            facts["unlinked_usage"] = []
            if session_id is None:
                clauses, values = ["session_id IS NULL"], []
                for clause, moment in (("at >= ?", since), ("at < ?", until)):
                    if moment is not None:
                        clauses.append(clause)
                        values.append(_utc(moment))
                # Usage times are utc_now()'s strings, so the first ten characters are the day.
                facts["unlinked_usage"] = list(
                    db.query(
                        f"SELECT substr(at, 1, 10) AS day, {sums} FROM usage"
                        f" WHERE {' AND '.join(clauses)} GROUP BY day, service, provider, model",
                        values,
                    )
                )
        return facts

    # -- webhook delivery -----------------------------------------------------------------------

    def webhook_subscription(self, subscription_id: int) -> WebhookSubscription | None:
        """One webhook subscription, if it exists."""
        with self._read("webhook_subscription") as db:
            rows = list(
                db.query("SELECT * FROM webhook_subscriptions WHERE id = ?", [subscription_id])
            )
        return _subscription(rows[0]) if rows else None

    def add_outbox_row(
        self, subscription_id: int, event_type: str, payload: Mapping[str, Any]
    ) -> int:
        """Queues an event for one subscription, due now, whatever event types it chose.

        Returns:
            The outbox row's id.

        Raises:
            ValueError: ``payload`` is not JSON-serializable.
            StorageError: There is no such subscription.
        """
        now = utc_now()
        row = {
            "subscription_id": subscription_id,
            "event_type": event_type,
            "payload": _json(dict(payload)),
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        with self._write("add_outbox_row") as db:
            return int(db["outbox"].insert(row).last_pk)

    def next_outbox_due(self, *, exclude_subscriptions: Iterable[int] = ()) -> str | None:
        """When the earliest pending outbox row is due (a claimed row: when its lease ends).

        Args:
            exclude_subscriptions: Leave out the rows of these subscriptions.

        Returns:
            An ISO-8601 UTC time, or None when nothing is pending.
        """
        excluded = [int(i) for i in exclude_subscriptions]
        sql = (
            "SELECT min(next_attempt_at) AS due FROM outbox"
            " WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL"
        )
        if excluded:
            sql += f" AND subscription_id NOT IN ({', '.join('?' * len(excluded))})"
        with self._read("next_outbox_due") as db:
            return next(db.query(sql, excluded))["due"]

    def claim_webhook_outbox(
        self,
        *,
        limit: int = 10,
        lease_secs: float = 60.0,
        per_subscription: int | None = None,
        in_flight: Mapping[int, int] | None = None,
        now: str | None = None,
    ) -> list[OutboxRecord]:
        """Takes up to ``limit`` due rows, as ``claim_outbox`` does, leaving each subscription
        at most ``per_subscription`` rows in flight, so that a slow receiver's backlog does not
        take every delivery slot from the others.

        Args:
            limit: At most this many rows.
            lease_secs: How long the rows stay hidden from other claims.
            per_subscription: At most this many rows in flight per subscription (None: any).
            in_flight: Subscription id → rows the caller is delivering to it now.
            now: The current time (default: now).
        """
        busy = dict(in_flight or {})
        moment = _utc(now) if now is not None else utc_now()
        lease = (datetime.fromisoformat(moment) + timedelta(seconds=lease_secs)).isoformat(
            timespec="microseconds"
        )
        cap = per_subscription if per_subscription is not None else int(limit)
        full = [s for s, n in busy.items() if n >= cap]
        where = "delivered_at IS NULL AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?"
        if full:
            where += f" AND subscription_id NOT IN ({', '.join('?' * len(full))})"
        sql = (
            "SELECT * FROM (SELECT *, row_number() OVER"
            " (PARTITION BY subscription_id ORDER BY next_attempt_at, id) AS nth"
            f" FROM outbox WHERE {where}) WHERE nth <= ? ORDER BY next_attempt_at, id LIMIT ?"
        )
        with self._write("claim_webhook_outbox") as db:
            candidates = list(db.query(sql, [moment, *full, cap, int(limit)]))
            rows = [
                row
                for row in candidates
                if row.pop("nth") <= cap - busy.get(row["subscription_id"], 0)
            ]
            if rows:
                ids = [row["id"] for row in rows]
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?"
                    f" WHERE id IN ({', '.join('?' * len(ids))})",
                    [lease, *ids],
                )
        return [
            _outbox({**row, "attempts": row["attempts"] + 1, "next_attempt_at": lease})
            for row in rows
        ]

    def subscription_deliveries(
        self, subscription_id: int, *, limit: int = 50, offset: int = 0
    ) -> list[tuple[WebhookDelivery, str]]:
        """A subscription's delivery attempts, newest first, each with its event type."""
        with self._read("subscription_deliveries") as db:
            rows = list(
                db.query(
                    "SELECT d.*, o.event_type FROM webhook_deliveries AS d"
                    " JOIN outbox AS o ON o.id = d.outbox_id WHERE o.subscription_id = ?"
                    " ORDER BY d.id DESC LIMIT ? OFFSET ?",
                    [subscription_id, int(limit), int(offset)],
                )
            )
        found = []
        for row in rows:
            event_type = row.pop("event_type")
            found.append((WebhookDelivery(**row), event_type))
        return found

    def _enqueue_tool_calls(self, db: Database, turns: list[TurnRecord]) -> None:
        """A ``tool.called`` outbox row per tool call of ``turns``, in the open transaction.

        Only what says how the tool went leaves MindBot: its name, status, error kind,
        duration, attempts, whether the caller confirmed it and when it started. Never its
        arguments or its result: they hold what the caller said and what the tool found (an
        address, a message, a balance). The session is named by id and user id, as in the
        session events, so that erasing the user removes the row too.
        """
        calls = [
            (turn, call)
            for turn in turns
            for call in turn.tool_calls or []
            if isinstance(call, Mapping) and call.get("name")
        ]
        subscribed = any(
            {"tool.called", "*"} & set(json.loads(row["event_types"]))
            for row in db.query("SELECT event_types FROM webhook_subscriptions WHERE active = 1")
        )
        if not calls or not subscribed:  # an import of many turns pays for one query
            return
        owners = {
            row["id"]: row["user_id"]
            for row in db.query(
                "SELECT id, user_id FROM sessions WHERE id IN"
                f" ({', '.join('?' * len({t.session_id for t, _ in calls}))})",
                list({t.session_id for t, _ in calls}),
            )
        }
        for turn, call in calls:
            result = call.get("result")
            error = result.get("error") if isinstance(result, Mapping) else None
            tool = {
                "name": str(call["name"])[:100],
                "status": call.get("status"),
                "error": error if isinstance(error, str) and error.isidentifier() else None,
                "duration_ms": call.get("duration_ms"),
                "attempts": call.get("attempts"),
                "confirmed": bool(call.get("confirmed")),
                "started_at": call.get("started_at"),
            }
            session = {"id": turn.session_id, "user_id": owners.get(turn.session_id)}
            _enqueue(db, "tool.called", {"session": session, "turn_idx": turn.idx, "tool": tool})

    def close(self) -> None:
        """Checkpoints and closes the database; later calls raise ``StorageError``."""
        with self._lock:
            if self._db is None:
                return
            db, self._db = self._db, None
            try:
                db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as e:
                logger.warning(f"{self}: checkpoint on close failed: {e}")
            db.close()
        logger.info(f"{self}: closed")


# ----------------------------------------------------------------------------------------------
# Row conversion

_TURN_JSON = ("stages", "emotion", "sources", "tool_calls")


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not JSON-serializable: {e}") from e


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _json(value)


def _user(row: Mapping[str, Any]) -> User:
    return User(id=row["id"], created_at=row["created_at"], display_name=row["display_name"])


def _identity(row: Mapping[str, Any]) -> Identity:
    return Identity(
        user_id=row["user_id"], kind=row["kind"], value=row["value"], created_at=row["created_at"]
    )


def _json_or_none_loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _api_key(row: Mapping[str, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(json.loads(row["scopes"])),
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def _job(row: Mapping[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        input=json.loads(row["input"]),
        result=_json_or_none_loads(row["result"]),
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _subscription(row: Mapping[str, Any]) -> WebhookSubscription:
    return WebhookSubscription(
        id=row["id"],
        url=row["url"],
        event_types=tuple(json.loads(row["event_types"])),
        secret=row["secret"],
        active=bool(row["active"]),
        created_at=row["created_at"],
    )


def _outbox(row: Mapping[str, Any]) -> OutboxRecord:
    return OutboxRecord(**{**row, "payload": json.loads(row["payload"])})


def _session_filters(
    *,
    user_id: int | None = None,
    persona: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (with a leading space, or empty) and parameters of a session filter."""
    clauses: list[str] = []
    params: list[Any] = []
    if user_id is not None:
        clauses.append("user_id = ?")
        params.append(user_id)
    if persona is not None:
        clauses.append("persona = ?")
        params.append(persona)
    if since is not None:
        clauses.append("started_at >= ?")
        params.append(_utc(since))
    if until is not None:
        clauses.append("started_at < ?")
        params.append(_utc(until))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _enqueue(db: Database, event_type: str, payload: Mapping[str, Any]) -> int:
    """Outbox rows for ``event_type``, one per active subscription to it, in the open transaction.

    Returns:
        How many rows were written.
    """
    subscribers = [
        row["id"]
        for row in db.query("SELECT id, event_types FROM webhook_subscriptions WHERE active = 1")
        if {event_type, "*"} & set(json.loads(row["event_types"]))
    ]
    if not subscribers:
        return 0
    now = utc_now()
    encoded = _json(dict(payload))
    db["outbox"].insert_all(
        {
            "subscription_id": subscription_id,
            "event_type": event_type,
            "payload": encoded,
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for subscription_id in subscribers
    )
    return len(subscribers)


def _turn(row: Mapping[str, Any]) -> TurnRecord:
    values = dict(row)
    values["interrupted"] = bool(values["interrupted"])
    for name in _TURN_JSON:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return TurnRecord(**values)


def _code(error: sqlite3.Error) -> int:
    """The primary SQLite result code of an error (extended codes folded)."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF


def _retry_while_busy(attempt: Callable[[], _T]) -> _T:
    """Runs ``attempt`` again while another connection holds a lock it needs.

    The busy timeout covers most waits, but SQLite answers some (a journal mode change, a
    read racing a WAL reset) with an immediate ``SQLITE_BUSY``. ``attempt`` must leave no
    transaction open when it fails.
    """
    deadline = time.monotonic() + _LOCK_WAIT_SECS
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as e:
            if _code(e) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
            if time.monotonic() > deadline:
                raise
            logger.debug(f"database busy, retrying: {e}")
            time.sleep(random.uniform(0.001, 0.01))


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """Takes the write lock (and a snapshot to read), waiting out other writers."""
    _retry_while_busy(lambda: conn.execute("BEGIN IMMEDIATE"))


def _begin_read(conn: sqlite3.Connection) -> None:
    """Starts a read transaction and takes its snapshot, so later reads in it cannot be busy."""

    def attempt() -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    _retry_while_busy(attempt)


def _turn_row(turn: TurnRecord) -> dict[str, Any]:
    if turn.role not in ROLES:
        raise ValueError(f"unknown turn role {turn.role!r}")
    return {
        "session_id": turn.session_id,
        "idx": turn.idx,
        "role": turn.role,
        "text": turn.text,
        "started_at": _utc(turn.started_at),
        "ended_at": _utc(turn.ended_at),
        "interrupted": int(bool(turn.interrupted)),
        "latency_secs": turn.latency_secs,
        **{name: _json_or_none(getattr(turn, name)) for name in _TURN_JSON},
    }


# ----------------------------------------------------------------------------------------------
# Writing off the event loop


class _Flush:
    """A marker in the writer's queue: set once everything before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class AsyncStorageWriter:
    """Runs storage writes on one background thread, in the order they were submitted.

    ``submit`` only puts the call on a queue, so the audio event loop never waits on the disk.
    Each write commits on its own as soon as the thread gets to it (no batching: in WAL mode
    with ``synchronous=NORMAL`` a commit is a ``write()``, not an ``fsync()``), so killing the
    process loses at most the writes still queued. A failing write is logged and dropped; the
    thread goes on.
    """

    def __init__(self, storage: Storage, *, name: str = "mindbot-storage-writer") -> None:
        """Starts the writer thread.

        Args:
            storage: Where to write. The writer does not close it.
            name: The thread's name.
        """
        self._storage = storage
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __str__(self) -> str:
        return "AsyncStorageWriter"

    def submit(self, method: str | Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Queues one write and returns at once.

        Args:
            method: The name of a ``Storage`` method (``"add_turn"``), or any callable.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Raises:
            AttributeError: The storage has no method of that name.
            StorageError: The writer is closed.
        """
        call = getattr(self._storage, method) if isinstance(method, str) else method
        with self._lock:
            if self._closed:
                raise StorageError(f"{self}: closed, the write was not accepted")
            self._queue.put((call, args, kwargs))

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything submitted so far is written (or has failed).

        Args:
            timeout: The most seconds to wait; None waits as long as it takes.

        Returns:
            Whether everything was written within ``timeout``.
        """
        marker = _Flush()
        with self._lock:
            if self._closed:
                return not self._thread.is_alive()
            self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Writes everything submitted, then stops the thread.

        Args:
            timeout: The most seconds to wait for the queue to drain.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(f"{self}: writes still queued after {timeout} s; closing anyway")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, _Flush):
                item.done.set()
                continue
            call, args, kwargs = item
            try:
                call(*args, **kwargs)
            except Exception as e:
                name = getattr(call, "__name__", type(call).__name__)
                # The message may quote the data (a transcript, a phone number): DEBUG only.
                logger.error(f"{self}: {name} failed ({type(e).__name__}); the write is lost")
                logger.opt(exception=e).debug(f"{self}: {name} failed: {e}")
