"""Twilio: the webhook's request signature, the TwiML that connects a Media Stream, and placing
an outbound call through Twilio's REST API.

``X-Twilio-Signature`` is Twilio's documented algorithm (the one twilio-python's
``RequestValidator`` implements): base64 of HMAC-SHA1, keyed with the account's auth token, over
the full URL Twilio requested (query string included) followed by each POST parameter's name and
value, sorted by name. Twilio may or may not include the default port in that URL, so both forms
are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

import httpx

from mindbot.errors import MindBotError

TWILIO_API_BASE_URL = "https://api.twilio.com"
_DEFAULT_PORTS = {"https": 443, "http": 80}


class TwilioError(MindBotError):
    """Twilio's REST API refused a request or could not be reached."""


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a POST of ``params`` to ``url``.

    Args:
        auth_token: The account's auth token.
        url: The full URL Twilio requested, query string included.
        params: The form's (name, value) pairs; a name may repeat.
    """
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_twilio_signature(
    auth_token: str, signature: str | None, urls: Iterable[str], params: Iterable[tuple[str, str]]
) -> bool:
    """Whether ``signature`` is Twilio's for ``params`` posted to one of ``urls``.

    Each URL is tried as given and with its default port added or removed.
    """
    if not signature:
        return False
    pairs = list(params)
    return any(
        hmac.compare_digest(twilio_signature(auth_token, candidate, pairs), signature)
        for url in urls
        for candidate in _port_variants(url)
    )


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if default is None or not host:
        return [url]
    if ":" in host:  # IPv6
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if parts.port in (None, default):
        bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
        with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
        return [url, bare, with_port]
    return [url]


def stream_twiml(stream_url: str, parameters: Mapping[str, str | None]) -> str:
    """TwiML that connects the call to a Media Stream carrying ``parameters`` (empty ones left
    out) as its ``customParameters``."""
    tags = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(str(value))}/>"
        for name, value in parameters.items()
        if value
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(stream_url)}>{tags}</Stream>"
        "</Connect></Response>"
    )


async def create_call(
    *,
    account_sid: str,
    auth_token: str,
    to: str,
    from_number: str,
    twiml: str,
    base_url: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Place an outbound call: ``POST /2010-04-01/Accounts/{sid}/Calls.json``.

    Args:
        account_sid: The account SID (Basic-auth user).
        auth_token: The auth token (Basic-auth password).
        to: The number to call (E.164).
        from_number: The Twilio number calling.
        twiml: What Twilio does once the call is answered.
        base_url: Twilio's REST root (default: Twilio's own).
        timeout: Seconds to wait for Twilio.

    Returns:
        Twilio's call resource (``sid``, ``status``…).

    Raises:
        TwilioError: Twilio refused the call or could not be reached.
    """
    root = (base_url or TWILIO_API_BASE_URL).rstrip("/")
    url = f"{root}/2010-04-01/Accounts/{account_sid}/Calls.json"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            response = await client.post(
                url,
                data={"To": to, "From": from_number, "Twiml": twiml},
                auth=(account_sid, auth_token),
            )
    except httpx.HTTPError as e:
        raise TwilioError(f"Twilio's API could not be reached ({type(e).__name__})") from e
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400 or not isinstance(body, dict) or "sid" not in body:
        message = body.get("message") if isinstance(body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        raise TwilioError(
            f"Twilio refused the call: HTTP {response.status_code}"
            + (f", code {code}" if code else "")
            + (f": {str(message)[:200]}" if message else "")
        )
    return body
