"""The caller's calendar over CalDAV: a day's events, free time, and adding an event.

Any CalDAV server works (Radicale, Nextcloud, Fastmail, iCloud...): set ``tools.calendar.url``
and a login. The caldav client blocks, so each call runs in a worker thread, and the tools'
timeout is also its HTTP timeout, so a server that never answers frees the thread as well.

Days and times are read and spoken in the caller's time zone. All-day events are listed but
take no time from free slots (they are mostly birthdays and reminders), and neither do events
marked free (``TRANSP:TRANSPARENT``) or cancelled ones.
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loguru import logger

from mindbot.tools.base import ToolContext, ToolError, ToolUnavailable, tool
from mindbot.tools.settings import CalendarSettings, ToolSettings

#: Events read out for one day; the rest are only counted.
MAX_EVENTS = 8
#: Free slots offered for one day.
MAX_SLOTS = 8
MAX_TITLE_CHARS = 200
MAX_LOCATION_CHARS = 200
#: Titles and places from the server are cut to this for the ear.
MAX_SPOKEN_CHARS = 80
MIN_DURATION_MINUTES = 5
MAX_DURATION_MINUTES = 720
#: How far ahead an event may be created (a guard against a mistaken year).
MAX_YEARS_AHEAD = 5

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

T = TypeVar("T")


def _configured(settings: ToolSettings) -> bool:
    return bool(settings.calendar.url)


@dataclass
class _Event:
    """One event (or one occurrence of a recurring event) as the tools need it."""

    title: str
    location: str
    start: datetime  # in the caller's zone; midnight for an all-day event
    end: datetime
    all_day: bool
    busy: bool


# --- Tools --------------------------------------------------------------------------------------


@tool(label="the calendar", available=_configured)
async def list_events(ctx: ToolContext, day: str = "today") -> dict:
    """List the events on the caller's calendar for one day.

    Args:
        day: "today", "tomorrow", a weekday such as "friday" (the next one), or a date
            such as "2026-11-25".
    """
    zone = _zone(ctx)
    today = datetime.now(zone).date()
    when = parse_day(day, today)
    begins, ends = _day_bounds(when, zone)
    events = await _with_calendar(ctx, lambda calendar: _fetch(calendar, begins, ends, zone))
    on_day = sorted(
        (e for e in events if _overlaps(e, begins, ends)),
        key=lambda e: (not e.all_day, e.start, e.title),
    )
    listed = []
    for event in on_day[:MAX_EVENTS]:
        item = {"time": _spoken_start(event, begins, ends), "title": event.title}
        if not event.all_day and begins < event.end <= ends and event.end > event.start:
            item["ends"] = _spoken_time(event.end)
        if event.location:
            item["location"] = event.location
        listed.append(item)
    result: dict[str, Any] = {
        "day": _spoken_day(when, today),
        "date": when.isoformat(),
        "count": len(on_day),
        "events": listed,
    }
    if len(on_day) > MAX_EVENTS:
        result["more"] = len(on_day) - MAX_EVENTS
    return result


@tool(label="the calendar", available=_configured)
async def find_free_slots(ctx: ToolContext, day: str = "today", duration_minutes: int = 30) -> dict:
    """Find free time on the caller's calendar within working hours on one day.

    Args:
        day: "today", "tomorrow", a weekday such as "friday" (the next one), or a date
            such as "2026-11-25".
        duration_minutes: The shortest slot worth offering, 5 to 720 minutes.
    """
    _check_duration(duration_minutes)
    zone = _zone(ctx)
    now = datetime.now(zone)
    when = parse_day(day, now.date())
    first, last = _working_hours(ctx.settings.calendar)
    opens = _at(when, first, zone)
    closes = _at(when, last, zone)
    if closes <= now:
        raise ToolError(
            f"The working day on {_spoken_day(when, now.date())} is already over.",
            kind="bad_arguments",
        )
    # Today's slots start from now, on a quarter hour.
    window_start = max(opens, _round_up(now, 15))
    events = await _with_calendar(ctx, lambda calendar: _fetch(calendar, opens, closes, zone))
    busy = sorted(
        (max(e.start, window_start), min(e.end, closes))
        for e in events
        if e.busy and not e.all_day and e.end > window_start and e.start < closes
    )
    need = timedelta(minutes=duration_minutes)
    slots: list[tuple[datetime, datetime]] = []
    cursor = window_start
    for begins, ends in [*busy, (closes, closes)]:
        if begins - cursor >= need:
            slots.append((cursor, begins))
        cursor = max(cursor, ends)
    result: dict[str, Any] = {
        "day": _spoken_day(when, now.date()),
        "date": when.isoformat(),
        "working_hours": f"{_spoken_time(opens)} to {_spoken_time(closes)}",
        "duration_minutes": duration_minutes,
        "free": [f"{_spoken_time(a)} to {_spoken_time(b)}" for a, b in slots[:MAX_SLOTS]],
    }
    if len(slots) > MAX_SLOTS:
        result["more"] = len(slots) - MAX_SLOTS
    all_day = [e.title for e in events if e.all_day and _overlaps(e, *_day_bounds(when, zone))]
    if all_day:
        result["all_day_events"] = all_day[:MAX_EVENTS]
    return result


def _say_create(arguments: Mapping[str, Any]) -> str:
    """The action said aloud before ``create_event`` runs; raises ``ToolError`` if it can't be."""
    title = _checked_text(arguments["title"], "title", MAX_TITLE_CHARS, required=True)
    _checked_text(arguments.get("location", ""), "location", MAX_LOCATION_CHARS)
    _check_duration(arguments.get("duration_minutes", 30))
    start = _parse_start(arguments["start"])
    # The caller's zone is not known here; no zone is more than 14 hours from UTC.
    now = datetime.now(UTC)
    local = start if start.tzinfo is None else start.astimezone(UTC)
    _check_not_past(local.replace(tzinfo=None), now.replace(tzinfo=None) - timedelta(hours=14))
    when = f"{_spoken_date(start.date(), now.date())} at {_spoken_time(start)}"
    if start.tzinfo is not None:
        when += f" {start.strftime('%Z')}"  # e.g. "UTC" or "UTC+05:00"
    return f"add {title} to the calendar on {when}"


@tool(label="the calendar", confirm=_say_create, available=_configured)
async def create_event(
    ctx: ToolContext, title: str, start: str, duration_minutes: int = 30, location: str = ""
) -> dict:
    """Add an event to the caller's calendar (the caller is asked to confirm first).

    Args:
        title: What the event is, e.g. "Dentist", at most 200 characters.
        start: When it starts, as local date and time, e.g. "2026-11-25T15:00".
        duration_minutes: How long it lasts, 5 to 720 minutes.
        location: Where it is, if said.
    """
    title = _checked_text(title, "title", MAX_TITLE_CHARS, required=True)
    location = _checked_text(location, "location", MAX_LOCATION_CHARS)
    _check_duration(duration_minutes)
    zone = _zone(ctx)
    parsed = _parse_start(start)
    begins = parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed.astimezone(zone)
    now = datetime.now(zone)
    _check_not_past(begins, now)
    ends = begins + timedelta(minutes=duration_minutes)
    ical = _new_event(title, begins, ends, location)
    await _with_calendar(ctx, lambda calendar: calendar.add_event(ical, no_overwrite=True))
    logger.debug(f"calendar: added an event of {duration_minutes} min")
    result = {
        "added": title,
        "when": f"{_spoken_date(begins.date(), now.date())} at {_spoken_time(begins)}",
        "ends": _spoken_time(ends),
    }
    if location:
        result["location"] = location
    return result


# --- Days and times -----------------------------------------------------------------------------


def parse_day(day: str, today: date) -> date:
    """The date that ``day`` names, counted from ``today``.

    Args:
        day: "today", "tomorrow", "the day after tomorrow", "yesterday", a weekday
            ("friday", "on friday", "next friday": the next one, today included unless
            "next"), or an ISO date ("2026-11-25").
        today: Today in the caller's time zone.

    Raises:
        ToolError: ``bad_arguments`` for anything else.
    """
    words = " ".join(day.lower().replace(",", " ").split())
    if words in ("", "today", "now", "tonight"):
        return today
    if words == "tomorrow":
        return today + timedelta(days=1)
    if words in ("day after tomorrow", "the day after tomorrow"):
        return today + timedelta(days=2)
    if words == "yesterday":
        return today - timedelta(days=1)
    later = words.startswith("next ")
    name = words.removeprefix("next ").removeprefix("this ").removeprefix("on ").strip()
    if name in WEEKDAYS:
        ahead = (WEEKDAYS.index(name) - today.weekday()) % 7
        return today + timedelta(days=ahead or (7 if later else 0))
    try:
        return date.fromisoformat(words)
    except ValueError:
        shown = day if len(day) <= 30 else day[:30] + "..."
        raise ToolError(
            f"I can't tell which day {shown!r} is; use today, tomorrow, a weekday or a date "
            "like 2026-11-25.",
            kind="bad_arguments",
        ) from None


def _zone(ctx: ToolContext) -> ZoneInfo:
    for name in (ctx.timezone, ctx.settings.timezone):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def _at(day: date, hour: int, zone: ZoneInfo) -> datetime:
    """``hour`` o'clock on ``day`` (24 is the next midnight)."""
    return datetime.combine(day + timedelta(days=hour // 24), time(hour % 24), tzinfo=zone)


def _day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return _at(day, 0, zone), _at(day, 24, zone)


def _working_hours(settings: CalendarSettings) -> tuple[int, int]:
    first, last = settings.working_hours
    if not 0 <= first < last <= 24:
        raise ToolError(
            "The calendar's working hours are set up wrongly; they need to be like 9 to 17.",
            kind="failed",
        )
    return first, last


def _round_up(moment: datetime, minutes: int) -> datetime:
    moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=minutes - 1)
    return moment - timedelta(minutes=moment.minute % minutes)


def _spoken_time(moment: datetime | time) -> str:
    return moment.strftime("%-I:%M %p")


def _spoken_date(day: date, today: date) -> str:
    spoken = day.strftime("%A %-d %B")
    return spoken if day.year == today.year else f"{spoken} {day.year}"


def _spoken_day(day: date, today: date) -> str:
    spoken = _spoken_date(day, today)
    relative = {0: "today", 1: "tomorrow", -1: "yesterday"}.get((day - today).days)
    return f"{relative}, {spoken}" if relative else spoken


def _spoken_start(event: _Event, day_start: datetime, day_end: datetime) -> str:
    if event.all_day or (event.start <= day_start and event.end >= day_end):
        return "all day"
    if event.start < day_start:
        return f"until {_spoken_time(event.end)}"
    return _spoken_time(event.start)


def _overlaps(event: _Event, begins: datetime, ends: datetime) -> bool:
    if event.end <= event.start:  # an instant, e.g. a reminder at 9:00
        return begins <= event.start < ends
    return event.start < ends and event.end > begins


# --- Checking arguments -------------------------------------------------------------------------


def _checked_text(value: str, what: str, limit: int, *, required: bool = False) -> str:
    """``value`` if it is safe to store in an iCalendar text property and short enough."""
    text = value.strip()
    if required and not text:
        raise ToolError(f"The {what} is empty; say what the event is.", kind="bad_arguments")
    if len(text) > limit:
        raise ToolError(
            f"The {what} is too long; keep it under {limit} characters.", kind="bad_arguments"
        )
    # Line breaks would let the text add its own iCalendar lines (attendees, alarms...).
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        raise ToolError(
            f"The {what} can't contain line breaks or control characters.", kind="bad_arguments"
        )
    return text


def _check_duration(minutes: int) -> None:
    if not MIN_DURATION_MINUTES <= minutes <= MAX_DURATION_MINUTES:
        raise ToolError(
            f"The length must be {MIN_DURATION_MINUTES} to {MAX_DURATION_MINUTES} minutes.",
            kind="bad_arguments",
        )


def _parse_start(value: str) -> datetime:
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or len(text) <= 10:  # a bare date has no time to put the event at
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ToolError(
            f"I can't read {shown!r} as a start time; it needs a date and time like "
            "2026-11-25T15:00.",
            kind="bad_arguments",
        )
    return parsed


def _check_not_past(start: datetime, now: datetime) -> None:
    if start < now - timedelta(days=1):
        raise ToolError(
            "That time is in the past; give a date and time ahead.", kind="bad_arguments"
        )
    if start > now + timedelta(days=366 * MAX_YEARS_AHEAD):
        raise ToolError(
            f"That is more than {MAX_YEARS_AHEAD} years ahead; check the year.",
            kind="bad_arguments",
        )


# --- CalDAV ---------------------------------------------------------------------------------------


async def _with_calendar(ctx: ToolContext, work: Callable[[Any], T]) -> T:
    """``work(calendar)`` in a worker thread, with any failure as a ``ToolError``."""
    return await asyncio.to_thread(
        _run_with_calendar, ctx.settings.calendar, ctx.settings.timeout_secs, work
    )


def _run_with_calendar(settings: CalendarSettings, timeout: float, work: Callable[[Any], T]) -> T:
    import caldav
    from caldav.lib import error as dav_error
    from caldav.lib.http_sync import requests as http

    statuses: list[int] = []  # caldav parses a 500's body before looking at its status
    try:
        with caldav.DAVClient(
            url=settings.url,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            timeout=timeout,  # type: ignore[arg-type]  # niquests takes seconds as a float
        ) as client:
            client.session.hooks["response"].append(
                lambda response, *args, **kwargs: statuses.append(response.status_code)
            )
            return work(_choose_calendar(client, settings.calendar))
    except ToolError:
        raise
    except dav_error.AuthorizationError:
        raise ToolError(
            "The calendar turned down the login; the username or password in the settings "
            "needs checking.",
            kind="rejected",
        ) from None
    except http.exceptions.Timeout:
        raise ToolError("The calendar took too long to answer.", kind="timeout") from None
    except (http.exceptions.ConnectionError, ConnectionError):
        raise ToolUnavailable("I couldn't reach the calendar.") from None
    except dav_error.RateLimitError:
        raise ToolUnavailable("The calendar is busy right now.") from None
    except OSError:
        raise ToolUnavailable("I couldn't reach the calendar.") from None
    except Exception as e:
        status = getattr(e, "status", None) or (statuses[-1] if statuses else None)
        logger.debug(f"calendar: {type(e).__name__} after HTTP {status}")
        if status is not None and status >= 500:
            raise ToolUnavailable("The calendar is having problems right now.") from None
        if isinstance(e, dav_error.DAVError) and status is not None and status >= 400:
            raise ToolError("The calendar refused the request.", kind="failed") from None
        # Unreadable XML or iCalendar, or an answer caldav did not expect.
        raise ToolError("The calendar sent something I couldn't read.", kind="failed") from None


def _choose_calendar(client: Any, name: str | None) -> Any:
    calendars = client.get_principal().get_calendars()
    if not calendars:
        raise ToolError("There is no calendar on the account.", kind="not_found")
    if not name:
        return calendars[0]
    for calendar in calendars:
        if (calendar.get_display_name() or "").casefold() == name.casefold():
            return calendar
    raise ToolError(f"I couldn't find the calendar called {name!r}.", kind="not_found")


def _fetch(calendar: Any, begins: datetime, ends: datetime, zone: ZoneInfo) -> list[_Event]:
    """The events between two times (recurrences expanded), unreadable ones left out."""
    found = calendar.search(event=True, start=begins, end=ends, expand=True)
    events, unreadable = [], 0
    for item in found:
        try:
            event = _event(item.get_icalendar_component(), zone)
        except Exception as e:
            unreadable += 1
            logger.debug(f"calendar: skipped an unreadable event ({type(e).__name__})")
            continue
        if event is not None:
            events.append(event)
    if found and unreadable == len(found):
        raise ToolError("The calendar sent events I couldn't read.", kind="failed")
    return events


def _event(component: Any, zone: ZoneInfo) -> _Event | None:
    """An ``_Event`` from a VEVENT, or None for a cancelled one."""
    if str(component.get("status", "")).upper() == "CANCELLED":
        return None
    start, end = component.start, component.end
    all_day = not isinstance(start, datetime)
    if all_day:
        end = end if isinstance(end, date) and end > start else start + timedelta(days=1)
        start = datetime.combine(start, time(), tzinfo=zone)
        end = datetime.combine(end, time(), tzinfo=zone)
    else:
        start = _in_zone(start, zone)
        end = _in_zone(end, zone) if isinstance(end, datetime) else start
    return _Event(
        title=_spoken_text(component.get("summary")) or "untitled event",
        location=_spoken_text(component.get("location")),
        start=start,
        end=max(start, end),
        all_day=all_day,
        busy=str(component.get("transp", "OPAQUE")).upper() != "TRANSPARENT",
    )


def _in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    """A floating time is the caller's local time; any other is converted to it."""
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)


def _spoken_text(value: Any) -> str:
    """A server's text, on one line and cut short for the ear."""
    text = " ".join(str(value or "").split())
    return text if len(text) <= MAX_SPOKEN_CHARS else text[: MAX_SPOKEN_CHARS - 3] + "..."


def _new_event(title: str, begins: datetime, ends: datetime, location: str) -> str:
    """A VCALENDAR with one VEVENT, built by icalendar (which escapes the text it is given)."""
    import icalendar

    event = icalendar.Event()
    event.add("uid", str(uuid.uuid4()))
    event.add("dtstamp", datetime.now(UTC))
    event.add("summary", title)
    event.add("dtstart", begins)
    event.add("dtend", ends)
    if location:
        event.add("location", location)
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//MindBot//calendar tool//EN")
    calendar.add("version", "2.0")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return calendar.to_ical().decode()
