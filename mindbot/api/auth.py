"""API keys, scopes, per-key rate limits and the short-lived WebRTC start tokens.

A key is ``mb_`` and 32 random bytes in base64url (256 bits): only its SHA-256 is stored, and
a fast hash is right for a secret with that much entropy (nothing to brute-force). Its first
characters (``mb_3f9aXc2e``) are kept as the prefix that tells keys apart in listings.

Scopes are ordered: ``read`` < ``write`` < ``admin``; a key may do what its highest scope and
every lower one allow. Each key has a token bucket that holds a minute's worth of requests and
refills continuously: a burst past it is answered 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger

from mindbot.errors import StorageError
from mindbot.storage import ApiKeyRecord, Storage

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

KEY_PREFIX = "mb_"
PREFIX_CHARS = 8
"""Characters of the random part kept in the displayed prefix (48 bits: collisions are rare,
and refused by the database)."""

TOUCH_EVERY_SECS = 60.0
"""A key's ``last_used_at`` is written at most this often, not on every request."""

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `mindbot keys create NAME --scopes read,write`.",
)


def hash_key(key: str) -> str:
    """The SHA-256 of a key, hex: what storage keeps and looks keys up by."""
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(scopes: str | Iterable[str]) -> tuple[Scope, ...]:
    """Scopes from ``"read,write"`` or a list, in rank order, without repeats.

    Raises:
        ValueError: A scope is unknown, or there is none.
    """
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    names = [name.strip().lower() for name in names if name.strip()]
    if unknown := sorted(set(names) - set(SCOPES)):
        raise ValueError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not names:
        raise ValueError(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in names)


def allows(scopes: Iterable[str], needed: Scope) -> bool:
    """Whether a key with ``scopes`` may do what needs ``needed`` (admin ⊃ write ⊃ read)."""
    return max((_RANK.get(scope, -1) for scope in scopes), default=-1) >= _RANK[needed]


def create_key(
    storage: Storage, name: str, scopes: Iterable[str], rate_per_minute: int | None = None
) -> tuple[str, ApiKeyRecord]:
    """Make a new API key and store its hash.

    Args:
        storage: Where keys are kept.
        name: What the key is for.
        scopes: Its scopes (validated with ``parse_scopes``).
        rate_per_minute: Its own rate limit (None: the API's default).

    Returns:
        The key (shown once: it cannot be recovered) and its record.

    Raises:
        ValueError: The name is empty, a scope is unknown, or the rate is not positive.
        StorageError: The key cannot be stored.
    """
    checked = parse_scopes(scopes)
    taken = {key.prefix for key in storage.api_keys()}
    for _ in range(5):
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = key[: len(KEY_PREFIX) + PREFIX_CHARS]
        if prefix not in taken:  # else draw again: prefixes tell keys apart
            return key, storage.add_api_key(name, prefix, hash_key(key), checked, rate_per_minute)
    raise StorageError("could not draw a key with an unused prefix")


def find_key(storage: Storage, id_or_prefix: str) -> ApiKeyRecord | None:
    """A key by its id (digits) or its displayed prefix."""
    text = id_or_prefix.strip()
    for key in storage.api_keys():
        if (text.isdigit() and key.id == int(text)) or key.prefix == text:
            return key
    return None


# ----------------------------------------------------------------------------------------------
# Rate limits


class TokenBucket:
    """Holds ``capacity`` tokens, refilled at ``capacity`` per minute; each request takes one.

    Args:
        per_minute: The capacity and the refill per minute.
        clock: Monotonic seconds.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self._capacity = float(per_minute)
        self._refill_per_sec = per_minute / 60.0
        self._clock = clock
        self._tokens = self._capacity
        self._at = clock()

    def take(self) -> float:
        """Take a token; returns 0 when one was taken, else the seconds until one is due."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._refill_per_sec)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._refill_per_sec


class RateLimiter:
    """One token bucket per API key (in this process).

    Args:
        default_per_minute: The rate of a key without its own.
        clock: Monotonic seconds.
    """

    def __init__(self, default_per_minute: int, clock: Callable[[], float] = time.monotonic):
        self._default = default_per_minute
        self._clock = clock
        self._buckets: dict[tuple[int, int], TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: ApiKeyRecord) -> float:
        """Count a request by ``key``: 0 if allowed, else the seconds to wait."""
        rate = key.rate_per_minute or self._default
        with self._lock:
            bucket = self._buckets.get((key.id, rate))
            if bucket is None:
                bucket = self._buckets[(key.id, rate)] = TokenBucket(rate, self._clock)
            return bucket.take()


# ----------------------------------------------------------------------------------------------
# WebRTC start tokens


class WebRTCTokens:
    """Short-lived tokens that let a browser start a WebRTC session without holding an API key.

    A token is ``v1.<payload>.<signature>``: the payload (base64url JSON) names the key that
    asked for it and its expiry; the signature is HMAC-SHA256 over ``v1.<payload>``.

    Args:
        secret: The signing key.
        ttl_secs: How long a token is valid.
        clock: Wall-clock seconds.
    """

    VERSION = "v1"

    def __init__(self, secret: bytes, ttl_secs: int, clock: Callable[[], float] = time.time):
        self._secret = secret
        self._ttl = ttl_secs
        self._clock = clock

    def issue(self, key_id: int) -> tuple[str, float]:
        """A new token for the key ``key_id``, and when it expires (epoch seconds)."""
        expires = math.floor(self._clock()) + self._ttl
        claims = {"kid": key_id, "exp": expires, "n": secrets.token_urlsafe(8)}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signed = f"{self.VERSION}.{payload}"
        return f"{signed}.{_b64(self._sign(signed))}", float(expires)

    def verify(self, token: str) -> bool:
        """Whether ``token`` was issued here (with this secret) and has not expired."""
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != self.VERSION or not payload or not signature:
            return False
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            if not hmac.compare_digest(given, self._sign(f"{version}.{payload}")):
                return False
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError):
            return False
        expires = claims.get("exp") if isinstance(claims, dict) else None
        return isinstance(expires, int | float) and expires > self._clock()

    def _sign(self, text: str) -> bytes:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ----------------------------------------------------------------------------------------------
# The FastAPI dependency


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API key a request was authenticated with."""

    key: ApiKeyRecord

    @property
    def actor(self) -> str:
        """How the audit trail names the caller: the key's name."""
        return self.key.name


class Authenticator:
    """Checks ``Authorization: Bearer <key>``, the key's rate limit and its scope.

    Answers, in that order: 503 without storage, 401 for a missing, unknown or revoked key,
    429 (with ``Retry-After``) past the key's rate, 403 for a scope the key lacks.

    Args:
        storage: Returns the storage, or None when it is off.
        limiter: The per-key rate limiter.
    """

    def __init__(self, storage: Callable[[], Storage | None], limiter: RateLimiter):
        self._storage = storage
        self._limiter = limiter
        self._touched: dict[int, float] = {}

    def require(self, scope: Scope) -> Callable[..., object]:
        """A FastAPI dependency that authenticates the request and returns its ``Principal``."""

        async def dependency(
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> Principal:
            return await self.authenticate(credentials, scope)

        return dependency

    async def authenticate(
        self, credentials: HTTPAuthorizationCredentials | None, scope: Scope
    ) -> Principal:
        """The caller's ``Principal``, or an ``HTTPException`` saying why not."""
        storage = self._storage()
        if storage is None:
            raise HTTPException(503, "The API needs storage (MINDBOT_STORAGE=true) for its keys")
        if credentials is None or not credentials.credentials:
            raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
        key = await asyncio.to_thread(storage.api_key_by_hash, hash_key(credentials.credentials))
        if key is None:
            raise _unauthorized("Invalid API key")
        if key.revoked_at is not None:
            raise _unauthorized(f"The API key {key.prefix}… was revoked")
        wait = self._limiter.check(key)
        if wait > 0:
            raise HTTPException(
                429,
                f"Rate limit of {key.rate_per_minute or 'the default'} requests per minute "
                f"exceeded for key {key.prefix}…; retry in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not allows(key.scopes, scope):
            raise HTTPException(403, f"The API key {key.prefix}… lacks the '{scope}' scope")
        await self._touch(storage, key)
        return Principal(key)

    async def _touch(self, storage: Storage, key: ApiKeyRecord) -> None:
        now = time.monotonic()
        if now - self._touched.get(key.id, -math.inf) < TOUCH_EVERY_SECS:
            return
        self._touched[key.id] = now
        try:
            await asyncio.to_thread(storage.touch_api_key, key.id)
        except StorageError as e:
            logger.warning(f"API: recording the use of key {key.id} failed: {e}")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
