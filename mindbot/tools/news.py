"""The latest headlines from RSS and Atom feeds, one or more feeds per topic.

The topics and their feeds come from ``tools.news.feeds`` (the first topic is the default). A
topic's feeds are fetched together and parsed with feedparser; their headlines are merged, newest
first, and cleaned for speech (no markup, no entities). One feed being down or unreadable does
not spoil the others: the answer then says how many sources were missing.
"""

from __future__ import annotations

import asyncio
import calendar
import html
import io
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import feedparser
import httpx
from loguru import logger

from mindbot.tools.base import ToolContext, ToolError, ToolUnavailable, tool

MAX_TOPIC_CHARS = 60
MAX_HEADLINE_CHARS = 200

_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
_TAG = re.compile(r"<[^>]*>")


class _Unreadable(Exception):
    """The feed's answer is neither RSS nor Atom."""


@dataclass
class _Headline:
    title: str
    source: str
    published: float | None


@tool(label="the news feeds", available=lambda s: bool(s.news.feeds))
async def get_headlines(ctx: ToolContext, topic: str = "") -> dict:
    """Get the latest news headlines, on a topic or the top stories.

    Args:
        topic: A news topic such as "world" or "technology"; leave empty for the top stories.
            If the topic is unknown, the answer lists the topics there are.
    """
    settings = ctx.settings.news
    name, urls = _topic(settings.feeds, topic)
    outcomes = await asyncio.gather(*(_fetch(ctx, url) for url in urls), return_exceptions=True)
    headlines: list[_Headline] = []
    down = unreadable = 0
    for url, outcome in zip(urls, outcomes, strict=True):
        if isinstance(outcome, list):
            headlines.extend(outcome)
            continue
        if isinstance(outcome, httpx.HTTPError):
            down += 1
        elif isinstance(outcome, Exception):
            unreadable += 1
        else:  # a BaseException (cancellation) must not be swallowed
            raise outcome
        host = urlsplit(url).hostname
        logger.debug(f"get_headlines: feed on {host} failed ({type(outcome).__name__})")
    if down + unreadable == len(urls):
        if down:
            raise ToolUnavailable("I couldn't reach the news feeds.")
        raise ToolError("The news feeds sent something I couldn't read.", kind="failed")
    result: dict[str, Any] = {
        "topic": name,
        "headlines": [_spoken(h, ctx.timezone) for h in _newest(headlines, settings.max_headlines)],
    }
    if down + unreadable:
        result["sources_unavailable"] = down + unreadable
    if not result["headlines"]:
        result["message"] = f"There are no {name} headlines right now."
    return result


def _topic(feeds: dict[str, list[str]], topic: str) -> tuple[str, list[str]]:
    """The configured topic that ``topic`` names (any case), and its feeds."""
    wanted = " ".join(topic.split()).casefold()
    if not feeds:
        raise ToolError("No news feeds are set up.", kind="unavailable")
    if not wanted:
        name = next(iter(feeds))
        return name, feeds[name]
    for name, urls in feeds.items():
        if " ".join(name.split()).casefold() == wanted:
            return name, urls
    said = topic if len(topic) <= MAX_TOPIC_CHARS else topic[:MAX_TOPIC_CHARS] + "..."
    raise ToolError(
        f"I have no news topic called {said!r}. The topics are: {', '.join(feeds)}.",
        kind="bad_arguments",
    )


async def _fetch(ctx: ToolContext, url: str) -> list[_Headline]:
    response = await ctx.http.get(url, headers={"Accept": _ACCEPT})
    response.raise_for_status()
    content_type = response.headers.get("content-type", "")
    # A stream, never bytes or str: given a string, feedparser may open it as a URL or a file.
    parsed = await asyncio.to_thread(
        feedparser.parse,
        io.BytesIO(response.content),
        response_headers={"content-type": content_type},
    )
    source = _clean(parsed.feed.get("title", "")) or urlsplit(url).hostname or "the news"
    headlines = []
    for entry in parsed.entries:
        title = _clean(entry.get("title", ""))
        if title:
            when = entry.get("published_parsed") or entry.get("updated_parsed")
            headlines.append(_Headline(title, source, calendar.timegm(when) if when else None))
    # feedparser reads what it can of a broken feed; only one that yields nothing has failed.
    if not headlines and (parsed.bozo or not parsed.version):
        raise _Unreadable(f"not a feed ({type(parsed.get('bozo_exception')).__name__})")
    return headlines


def _newest(headlines: list[_Headline], limit: int) -> list[_Headline]:
    """Newest first (undated ones last, in feed order), each title once."""
    ordered = sorted(headlines, key=lambda h: (h.published is None, -(h.published or 0)))
    seen: set[str] = set()
    chosen = []
    for headline in ordered:
        key = headline.title.casefold()
        if key not in seen:
            seen.add(key)
            chosen.append(headline)
        if len(chosen) == limit:
            break
    return chosen


def _spoken(headline: _Headline, timezone: str) -> dict[str, str]:
    spoken = {"title": headline.title, "source": headline.source}
    if headline.published is not None:
        spoken["published"] = _when(headline.published, timezone)
    return spoken


def _when(timestamp: float, timezone: str) -> str:
    """When, in the caller's zone: "today at 8:41 AM", "yesterday at 6:02 PM", "Tuesday 13 May"."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    moment = datetime.fromtimestamp(timestamp, zone)
    today = datetime.now(zone).date()
    clock = moment.strftime("%-I:%M %p")
    if moment.date() == today:
        return f"today at {clock}"
    if moment.date() == today - timedelta(days=1):
        return f"yesterday at {clock}"
    return moment.strftime("%A %-d %B")


def _clean(text: Any) -> str:
    """Plain words for speech: no tags, no entities, single spaces, not too long."""
    if not isinstance(text, str):
        return ""
    text = _TAG.sub(" ", html.unescape(_TAG.sub(" ", text)))
    text = " ".join(text.split())
    if len(text) > MAX_HEADLINE_CHARS:
        text = text[:MAX_HEADLINE_CHARS].rsplit(" ", 1)[0] + "..."
    return text
