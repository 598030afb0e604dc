"""The calendar tools against a real Radicale server: a day's events, free time, new events.

Times are seeded in a fixed-offset zone where it is about noon right now, so "today" and
"tomorrow" mean the same days to the test and to the tool whenever the suite runs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import httpx
import pytest
from loguru import logger

from mindbot.harness import free_port
from mindbot.tools import ToolContext, ToolSession, ToolSettings
from mindbot.tools.calendar import create_event, find_free_slots, list_events, parse_day
from mindbot.tools.settings import CalendarSettings

from servers.radicale import RadicaleServer, radicale_server

TOOLS = [list_events, find_free_slots, create_event]


def _noon_zone() -> str:
    """A fixed-offset zone where the local time is now between noon and 1 PM."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. +12 hours from UTC
    return f"Etc/GMT{-offset:+d}"  # the Etc/ names count the other way: Etc/GMT-5 is UTC+5


ZONE_NAME = _noon_zone()
ZONE = ZoneInfo(ZONE_NAME)


def _today() -> date:
    return datetime.now(ZONE).date()


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE)


def _settings(server_url: str, password: str = "", **calendar) -> ToolSettings:
    return ToolSettings(
        timeout_secs=5,
        retries=1,
        calendar=CalendarSettings(
            url=server_url, username="alice", password=password or "correct horse", **calendar
        ),
    )


@asynccontextmanager
async def _session(settings: ToolSettings, reports: list | None = None) -> AsyncIterator:
    async with httpx.AsyncClient() as http:
        context = ToolContext(settings=settings, http=http, timezone=ZONE_NAME)
        on_call = reports.append if reports is not None else None
        yield ToolSession(TOOLS, context, on_call=on_call)


@pytest.fixture(scope="module")
def radicale() -> Iterator[RadicaleServer]:
    with radicale_server(username="alice", password="correct horse") as server:
        yield server


@pytest.fixture
def server(radicale: RadicaleServer) -> Iterator[RadicaleServer]:
    """The module's server, with no events left behind by the test."""
    yield radicale
    radicale.clear()


# --- Listing --------------------------------------------------------------------------------------


async def test_lists_todays_and_tomorrows_events_in_the_callers_time_zone(server):
    today = _today()
    tomorrow = today + timedelta(days=1)
    server.add_event("Dentist", _at(today, 15), _at(today, 15, 45), location="12 Main Street")
    server.add_event("Standup", _at(today - timedelta(days=7), 9), rrule={"freq": "weekly"})
    server.add_event("Sam's birthday", today)
    # Stored in UTC: it must be spoken as the caller's 2 PM.
    server.add_event("Call with Lee", _at(today, 14).astimezone(UTC))
    server.add_event("Yoga", datetime(today.year, today.month, today.day, 18))  # floating
    server.add_event("Lunch with Priya", _at(tomorrow, 10, 30), location="Café Rouge")
    server.add_event("Board meeting", _at(today + timedelta(days=2), 10))

    async with _session(_settings(server.url)) as session:
        listed_today = await session.invoke("list_events", {"day": "today"})
        listed_tomorrow = await session.invoke("list_events", {"day": "Tomorrow"})
        weekday = (today + timedelta(days=2)).strftime("%A")
        listed_weekday = await session.invoke("list_events", {"day": weekday})
        by_date = await session.invoke("list_events", {"day": tomorrow.isoformat()})

    assert listed_today["ok"], listed_today
    day = listed_today["result"]
    assert day["date"] == today.isoformat()
    assert day["day"].startswith("today, ")
    assert day["count"] == 5
    assert day["events"] == [
        {"time": "all day", "title": "Sam's birthday"},
        {"time": "9:00 AM", "title": "Standup", "ends": "9:30 AM"},
        {"time": "2:00 PM", "title": "Call with Lee", "ends": "2:30 PM"},
        {"time": "3:00 PM", "title": "Dentist", "ends": "3:45 PM", "location": "12 Main Street"},
        {"time": "6:00 PM", "title": "Yoga", "ends": "6:30 PM"},
    ]
    assert listed_tomorrow["result"]["events"] == [
        {
            "time": "10:30 AM",
            "title": "Lunch with Priya",
            "ends": "11:00 AM",
            "location": "Café Rouge",
        }
    ]
    assert by_date["result"] == listed_tomorrow["result"]
    assert [e["title"] for e in listed_weekday["result"]["events"]] == ["Board meeting"]


async def test_a_busy_day_reads_out_eight_events_and_counts_the_rest(server):
    tomorrow = _today() + timedelta(days=1)
    for n in range(10):
        server.add_event(f"Meeting {n}", _at(tomorrow, 8 + n))

    async with _session(_settings(server.url)) as session:
        result = await session.invoke("list_events", {"day": "tomorrow"})

    assert result["ok"], result
    assert result["result"]["count"] == 10
    assert [e["title"] for e in result["result"]["events"]] == [f"Meeting {n}" for n in range(8)]
    assert result["result"]["more"] == 2


async def test_an_empty_day_has_no_events(server):
    async with _session(_settings(server.url)) as session:
        result = await session.invoke("list_events", {"day": "tomorrow"})

    assert result == {
        "ok": True,
        "result": {
            "day": result["result"]["day"],
            "date": (_today() + timedelta(days=1)).isoformat(),
            "count": 0,
            "events": [],
        },
    }


async def test_a_named_calendar_is_used_and_an_unknown_one_is_not_found(server):
    work = server.make_calendar("Work")
    try:
        tomorrow = _today() + timedelta(days=1)
        server.add_event("Personal thing", _at(tomorrow, 9))
        server.add_event("Quarterly review", _at(tomorrow, 11), calendar="Work")
        async with _session(_settings(server.url, calendar="work")) as session:
            listed = await session.invoke("list_events", {"day": "tomorrow"})
        async with _session(_settings(server.url, calendar="Holidays")) as session:
            missing = await session.invoke("list_events", {"day": "tomorrow"})
    finally:
        work.delete()

    assert [e["title"] for e in listed["result"]["events"]] == ["Quarterly review"]
    assert missing["ok"] is False and missing["error"] == "not_found"
    assert "Holidays" in missing["message"]


@pytest.mark.parametrize("day", ["the day after the heat death", "2026-13-45", "someday soon"])
async def test_a_day_it_cannot_read_is_a_bad_argument(server, day):
    async with _session(_settings(server.url)) as session:
        listed = await session.invoke("list_events", {"day": day})
        free = await session.invoke("find_free_slots", {"day": day})

    for result in (listed, free):
        assert result["ok"] is False and result["error"] == "bad_arguments", result
        assert "which day" in result["message"]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("today", date(2026, 11, 25)),
        ("Tomorrow", date(2026, 11, 26)),
        ("friday", date(2026, 11, 27)),
        ("on Friday", date(2026, 11, 27)),
        ("the day after tomorrow", date(2026, 11, 27)),
        ("wednesday", date(2026, 11, 25)),
        ("next wednesday", date(2026, 12, 2)),
        ("monday", date(2026, 11, 30)),
        ("2027-01-04", date(2027, 1, 4)),
    ],
)
def test_days_are_read_from_today(day, expected):
    assert parse_day(day, date(2026, 11, 25)) == expected  # a Wednesday


# --- Free time ----------------------------------------------------------------------------------


async def test_free_slots_fall_between_events_within_working_hours(server):
    tomorrow = _today() + timedelta(days=1)
    server.add_event("Planning", _at(tomorrow, 10), _at(tomorrow, 11))
    server.add_event("Workshop", _at(tomorrow, 10, 30), _at(tomorrow, 12))  # overlaps Planning
    server.add_event("Check-in", _at(tomorrow, 14), _at(tomorrow, 14, 15))
    server.add_event("Evening run", _at(tomorrow, 18), _at(tomorrow, 19))  # after hours
    server.add_event("Company holiday", tomorrow)
    server.add_event("Next day", _at(tomorrow + timedelta(days=1), 9))

    async with _session(_settings(server.url, working_hours=(9, 17))) as session:
        half_hour = await session.invoke("find_free_slots", {"day": "tomorrow"})
        two_hours = await session.invoke(
            "find_free_slots", {"day": "tomorrow", "duration_minutes": 120}
        )

    assert half_hour["ok"], half_hour
    assert half_hour["result"]["free"] == [
        "9:00 AM to 10:00 AM",
        "12:00 PM to 2:00 PM",
        "2:15 PM to 5:00 PM",
    ]
    assert half_hour["result"]["working_hours"] == "9:00 AM to 5:00 PM"
    assert half_hour["result"]["all_day_events"] == ["Company holiday"]
    assert two_hours["result"]["free"] == ["12:00 PM to 2:00 PM", "2:15 PM to 5:00 PM"]


async def test_todays_free_time_starts_from_now(server):
    async with _session(_settings(server.url, working_hours=(0, 24))) as session:
        before = datetime.now(ZONE)
        result = await session.invoke("find_free_slots", {"day": "today"})
        after = datetime.now(ZONE)

    def next_quarter(moment: datetime) -> str:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=14)
        return (moment - timedelta(minutes=moment.minute % 15)).strftime("%-I:%M %p")

    assert result["ok"], result
    assert result["result"]["free"] in (
        [f"{next_quarter(before)} to 12:00 AM"],
        [f"{next_quarter(after)} to 12:00 AM"],
    )


async def test_free_slots_refuse_a_day_that_is_over_and_a_bad_length(server):
    async with _session(_settings(server.url)) as session:
        past = await session.invoke("find_free_slots", {"day": "yesterday"})
        too_short = await session.invoke(
            "find_free_slots", {"day": "tomorrow", "duration_minutes": 1}
        )

    assert past["error"] == "bad_arguments" and "over" in past["message"]
    assert too_short["error"] == "bad_arguments" and "minutes" in too_short["message"]


# --- Creating events ----------------------------------------------------------------------------


async def test_an_event_is_added_only_after_a_spoken_yes(server):
    tomorrow = _today() + timedelta(days=1)
    start = f"{tomorrow.isoformat()}T15:00"
    reports: list = []
    logged: list[str] = []
    sink = logger.add(lambda message: logged.append(str(message)), level="INFO")
    try:
        async with _session(_settings(server.url), reports) as session:
            asked = await session.invoke(
                "create_event",
                {"title": "Dentist", "start": start, "duration_minutes": 45, "location": "Main St"},
                user_turns=["put the dentist in for tomorrow at three"],
            )
            stored_before = server.events()
            done = await session.invoke(
                "confirm_action",
                {},
                user_turns=["put the dentist in for tomorrow at three", "yes please"],
            )
            listed = await session.invoke("list_events", {"day": "tomorrow"})
    finally:
        logger.remove(sink)

    spoken_day = tomorrow.strftime("%A %-d %B")
    assert asked["needs_confirmation"] is True
    assert asked["action"] == f"add Dentist to the calendar on {spoken_day} at 3:00 PM"
    assert stored_before == []

    assert done["ok"], done
    assert done["result"] == {
        "added": "Dentist",
        "when": f"{spoken_day} at 3:00 PM",
        "ends": "3:45 PM",
        "location": "Main St",
    }
    [event] = server.events()
    assert str(event["summary"]) == "Dentist"
    assert str(event["location"]) == "Main St"
    assert event.decoded("dtstart") == _at(tomorrow, 15)
    assert event.decoded("dtend") == _at(tomorrow, 15, 45)
    assert listed["result"]["events"] == [
        {"time": "3:00 PM", "title": "Dentist", "ends": "3:45 PM", "location": "Main St"}
    ]
    assert [(r.name, r.status, r.confirmed) for r in reports[:2]] == [
        ("create_event", "awaiting_confirmation", False),
        ("create_event", "ok", True),
    ]
    assert not any("Dentist" in line or "Main St" in line for line in logged)


async def test_no_means_nothing_is_written(server):
    start = f"{(_today() + timedelta(days=1)).isoformat()}T09:30"
    async with _session(_settings(server.url)) as session:
        asked = await session.invoke(
            "create_event", {"title": "Haircut", "start": start}, user_turns=["book a haircut"]
        )
        declined = await session.invoke("confirm_action", {}, user_turns=["book a haircut", "no"])
        again = await session.invoke(
            "confirm_action", {}, user_turns=["book a haircut", "no", "yes please"]
        )

    assert asked["needs_confirmation"] is True
    assert declined["ok"] is False and declined["error"] == "not_confirmed"
    assert again["ok"] is False and again["error"] == "not_confirmed"
    assert server.events() == []


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"title": "Lunch\r\nATTENDEE:mailto:mallory@example.com"}, "line breaks"),
        ({"title": "Lunch\nBEGIN:VALARM"}, "line breaks"),
        ({"title": "Lunch\u2028END:VEVENT"}, "line breaks"),
        ({"title": "Lunch", "location": "Home\r\nORGANIZER:x"}, "line breaks"),
        ({"title": "   "}, "empty"),
        ({"title": "x" * 201}, "too long"),
        ({"duration_minutes": 2}, "minutes"),
        ({"duration_minutes": 721}, "minutes"),
        ({"start": "next tuesday at three"}, "start time"),
        ({"start": "2026-11-25"}, "start time"),
        ({"start": "2020-01-06T10:00"}, "past"),
        ({"start": "2099-01-06T10:00"}, "years ahead"),
    ],
)
async def test_bad_or_injected_arguments_are_refused_before_asking(server, arguments, complaint):
    start = f"{(_today() + timedelta(days=1)).isoformat()}T11:00"
    call = {"title": "Lunch", "start": start, **arguments}
    async with _session(_settings(server.url)) as session:
        refused = await session.invoke("create_event", call, user_turns=["add lunch"])
        confirmed = await session.invoke(
            "confirm_action", {}, user_turns=["add lunch", "yes please"]
        )

    assert refused["ok"] is False and refused["error"] == "bad_arguments", refused
    assert "needs_confirmation" not in refused
    assert complaint in refused["message"]
    assert confirmed["error"] == "not_confirmed"
    assert server.events() == []


# --- Failures -----------------------------------------------------------------------------------


async def test_a_wrong_password_is_a_clear_error(server):
    async with _session(_settings(server.url, password="not the password")) as session:
        result = await session.invoke("list_events", {"day": "today"})

    assert result["ok"] is False and result["error"] == "rejected", result
    assert "password" in result["message"]
    assert "not the password" not in str(result)


async def test_a_server_that_is_down_is_unreachable():
    async with _session(_settings(f"http://127.0.0.1:{free_port()}/")) as session:
        result = await session.invoke("list_events", {"day": "today"})

    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the calendar.",
    }


async def test_a_server_that_never_answers_times_out():
    with _silent_listener() as url:
        settings = _settings(url).model_copy(update={"timeout_secs": 0.5})
        async with _session(settings) as session:
            began = time.perf_counter()
            result = await session.invoke("list_events", {"day": "today"})
            took = time.perf_counter() - began

    assert result["ok"] is False and result["error"] == "timeout", result
    assert "too long" in result["message"]
    assert took < 3


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, b"Internal Server Error", "unavailable"),
        (503, b"Down for maintenance", "unavailable"),
        (207, b"<?xml version='1.0'?><multistatus><oops", "failed"),
        (200, b"Welcome to my home page", "failed"),
    ],
)
async def test_a_broken_server_gives_a_spoken_error(status, body, error):
    with _canned_server(status, body) as url:
        async with _session(_settings(url)) as session:
            result = await session.invoke("list_events", {"day": "today"})

    assert result["ok"] is False and result["error"] == error, result
    assert "calendar" in result["message"]


def test_the_tools_are_offered_only_with_a_calendar_url():
    assert not list_events.available(ToolSettings())
    assert create_event.available(_settings("http://127.0.0.1:1/"))
    assert create_event.confirm is not None and not create_event.read_only


@contextmanager
def _silent_listener() -> Iterator[str]:
    """A TCP server that takes connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


@contextmanager
def _canned_server(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server that answers every request with the same status and body."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PROPFIND = do_REPORT = do_OPTIONS = do_PUT = _answer  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
