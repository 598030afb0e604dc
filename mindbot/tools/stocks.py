"""A stock's latest price and today's change, from Alpha Vantage or Finnhub.

Set ``tools.stocks.provider`` and ``tools.stocks.api_key``; the tool is offered only when a key
is set (both providers need one; a proxy that adds the key itself can be given any placeholder).
``tools.stocks.base_url`` replaces the provider's address, e.g. for a proxy or a test server:
it is the part before the provider's own path (``/query`` for Alpha Vantage, ``/api/v1/quote``
for Finnhub).

The key stays secret. The symbol is checked before any request, so it cannot add parameters or
paths to the URL. Finnhub gets the key in its ``X-Finnhub-Token`` header; Alpha Vantage only
takes it in the URL, so no httpx exception (whose message holds the URL) leaves this module, and
httpx's own request log line has secret query parameters redacted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from loguru import logger

from mindbot.tools.base import ToolContext, ToolError, ToolUnavailable, finite_number, tool
from mindbot.tools.settings import StocksSettings

DEFAULT_URLS = {"alphavantage": "https://www.alphavantage.co", "finnhub": "https://finnhub.io"}

_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,9}")
_SECRET_QUERY = re.compile(r"(?i)\b(apikey|api_key|token|access_token)=[^&\s\"']+")


class _RedactSecretQuery(logging.Filter):
    """Hides secret query values in httpx's "HTTP Request: GET <url>" log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _SECRET_QUERY.search(message):
            record.msg, record.args = _SECRET_QUERY.sub(r"\1=[redacted]", message), ()
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _RedactSecretQuery) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactSecretQuery())


@dataclass
class _Quote:
    symbol: str
    price: float
    change: float | None
    change_percent: float | None
    as_of: str | None


class _Malformed(Exception):
    """The provider's answer is not what its API documents."""


@tool(label="the stock quote service", available=lambda s: s.stocks.api_key is not None)
async def get_stock_quote(ctx: ToolContext, symbol: str) -> dict:
    """Get a stock's latest price and how much it has moved today.

    Args:
        symbol: The ticker symbol, e.g. "AAPL" for Apple, "IBM" or "BRK.B" (a symbol, not
            the company's name).
    """
    wanted = symbol.strip().upper()
    if not _SYMBOL.fullmatch(wanted):
        raise ToolError(
            "A stock symbol is 1 to 10 letters or digits, possibly with a dot or dash, "
            'like "AAPL" or "BRK.B".',
            kind="bad_arguments",
        )
    settings = ctx.settings.stocks
    fetch = _alpha_vantage if settings.provider == "alphavantage" else _finnhub
    try:
        quote = await fetch(ctx, settings, wanted)
    except _Malformed as e:
        logger.debug(f"get_stock_quote: unexpected answer from {settings.provider} ({e})")
        raise ToolError(
            "The stock quote service sent an answer I couldn't read.", kind="failed"
        ) from None
    result: dict[str, Any] = {"symbol": quote.symbol, "price": round(quote.price, 2)}
    if quote.change is not None:
        result["change"] = round(quote.change, 2)
        result["direction"] = "up" if quote.change > 0 else "down" if quote.change < 0 else "flat"
    if quote.change_percent is not None:
        result["change_percent"] = round(quote.change_percent, 2)
    if quote.as_of:
        result["as_of"] = quote.as_of
    return result


# --- Providers ------------------------------------------------------------------------------


async def _alpha_vantage(ctx: ToolContext, settings: StocksSettings, symbol: str) -> _Quote:
    """``GET /query?function=GLOBAL_QUOTE``: ``{"Global Quote": {"05. price": "231.42", ...}}``."""
    params = {"function": "GLOBAL_QUOTE", "symbol": symbol, "apikey": _key(settings)}
    answer = await _get_json(ctx, f"{_base(settings)}/query", params=params)
    if "Note" in answer or "Information" in answer:
        # Its rate limit (and a bad key) come back as HTTP 200 with a note.
        raise _rate_limited()
    if "Error Message" in answer:
        raise ToolError("The stock quote service refused the request.", kind="failed")
    quote = answer.get("Global Quote")
    if not isinstance(quote, dict):
        raise _Malformed("no 'Global Quote'")
    if not quote:
        raise _unknown(symbol)
    price = finite_number(quote.get("05. price"))
    if price is None:
        raise _Malformed("no price")
    percent = quote.get("10. change percent")
    traded = quote.get("07. latest trading day")
    return _Quote(
        symbol=str(quote.get("01. symbol") or symbol).upper(),
        price=price,
        change=finite_number(quote.get("09. change")),
        change_percent=finite_number(percent.rstrip("%")) if isinstance(percent, str) else None,
        as_of=_day(traded),
    )


async def _finnhub(ctx: ToolContext, settings: StocksSettings, symbol: str) -> _Quote:
    """``GET /api/v1/quote``: ``{"c": 261.74, "d": 1.2, "dp": 0.46, ..., "t": 1746806400}``."""
    answer = await _get_json(
        ctx,
        f"{_base(settings)}/api/v1/quote",
        params={"symbol": symbol},
        headers={"X-Finnhub-Token": _key(settings)},
    )
    price, stamp = finite_number(answer.get("c")), finite_number(answer.get("t"))
    if price is None:
        raise _Malformed("no current price")
    if price == 0 and not stamp:
        raise _unknown(symbol)  # Finnhub answers an unknown symbol with zeros
    return _Quote(
        symbol=symbol,
        price=price,
        change=finite_number(answer.get("d")),
        change_percent=finite_number(answer.get("dp")),
        as_of=_moment(stamp, ctx.timezone) if stamp else None,
    )


# --- HTTP, without letting the URL (and its key) out ------------------------------------------


async def _get_json(
    ctx: ToolContext, url: str, *, params: dict[str, str], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response: httpx.Response | None = None
    failure: ToolError | None = None
    # The failure is raised after its except block, so no httpx exception (whose message holds
    # the URL, key included) is chained to what leaves this function.
    try:
        response = await ctx.http.get(url, params=params, headers=headers)
    except httpx.TimeoutException:
        failure = ToolError("The stock quote service took too long to answer.", kind="timeout")
    except httpx.HTTPError:
        failure = ToolUnavailable("I couldn't reach the stock quote service.")
    except httpx.InvalidURL:
        failure = ToolError("The stock quote service's address is not valid.", kind="failed")
    if response is None:
        raise failure or ToolUnavailable("I couldn't reach the stock quote service.")
    status = response.status_code
    if status == 429:
        raise _rate_limited()
    if status >= 500:
        raise ToolUnavailable("The stock quote service is having problems right now.")
    if status in (401, 403):
        raise ToolError(
            "The stock quote service refused the request; its API key may be wrong.",
            kind="failed",
        )
    if status != 200:
        raise ToolError("The stock quote service refused the request.", kind="failed")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _Malformed("not a JSON object")
    return answer


def _base(settings: StocksSettings) -> str:
    return (settings.base_url or DEFAULT_URLS[settings.provider]).rstrip("/")


def _key(settings: StocksSettings) -> str:
    return settings.api_key.get_secret_value() if settings.api_key else ""


def _rate_limited() -> ToolError:
    return ToolError(
        "The stock quote service has had too many requests; try again in a while.",
        kind="unavailable",  # not retryable: trying again at once makes it worse
    )


def _unknown(symbol: str) -> ToolError:
    return ToolError(f"I couldn't find a stock with the symbol {symbol}.", kind="not_found")


def _day(value: Any) -> str | None:
    """A trading day ("2025-05-09") as said aloud: "Friday 9 May 2025"."""
    try:
        return date.fromisoformat(value).strftime("%A %-d %B %Y")
    except (TypeError, ValueError):
        return None


def _moment(timestamp: float, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(timestamp, zone).strftime("%A %-d %B %Y, %-I:%M %p")
