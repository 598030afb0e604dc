"""A real Radicale CalDAV server on loopback, with one user and one calendar, for tests.

    with radicale_server() as server:
        server.add_event("Dentist", datetime(2026, 11, 25, 10, 30, tzinfo=zone), location="Main St")
        settings = CalendarSettings(
            url=server.url, username=server.username, password=server.password
        )
        ...
        assert [str(e["summary"]) for e in server.events()] == ["Dentist", ...]

Radicale runs as a subprocess (``python -m radicale``) with htpasswd logins (plain text) and a
throwaway storage folder; it is stopped by PID when the block ends. Everything a test writes
or reads goes through caldav, as a real client would.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import caldav
import icalendar

from mindbot.harness import free_port

from servers import stop_process

STARTUP_SECS = 20.0


@dataclass
class RadicaleServer:
    """A running Radicale server and the account on it.

    Args:
        url: The server's root URL, e.g. ``http://127.0.0.1:40123/`` (what a client is given).
        username: The test user's login.
        password: The test user's password.
        calendar_name: The display name of the calendar made for the user.
        calendar_url: That calendar's collection URL.
        folder: The server's temporary folder (config, users file, storage, log).
        pid: The server process's id.
    """

    url: str
    username: str
    password: str
    calendar_name: str
    calendar_url: str
    folder: Path
    pid: int

    def client(self, password: str | None = None) -> caldav.DAVClient:
        """A caldav client logged in as the test user (or with another ``password``)."""
        return caldav.DAVClient(
            url=self.url,
            username=self.username,
            password=self.password if password is None else password,
            timeout=10,
        )

    def calendar(self, name: str | None = None) -> caldav.Calendar:
        """The user's calendar called ``name`` (default: the one made at start)."""
        wanted = name or self.calendar_name
        principal = self.client().get_principal()
        for calendar in principal.get_calendars():
            if calendar.get_display_name() == wanted:
                return calendar
        raise LookupError(f"no calendar called {wanted!r}")

    def make_calendar(self, name: str) -> caldav.Calendar:
        """Another calendar for the user (MKCALENDAR)."""
        return self.client().get_principal().make_calendar(name=name, cal_id=_slug(name))

    def add_event(
        self,
        summary: str,
        start: datetime | date,
        end: datetime | date | None = None,
        *,
        location: str = "",
        rrule: dict | None = None,
        calendar: str | None = None,
    ) -> str:
        """Store an event through CalDAV and return its UID.

        Args:
            summary: The event's title.
            start: An aware datetime, a naive one (floating: the reader's local time), or a
                date for an all-day event.
            end: Default: 30 minutes after a datetime, the next day after a date.
            location: Where it is.
            rrule: A recurrence rule, e.g. ``{"freq": "weekly"}``.
            calendar: The calendar's name (default: the one made at start).
        """
        if end is None:
            is_day = not isinstance(start, datetime)
            end = start + (timedelta(days=1) if is_day else timedelta(minutes=30))
        event = icalendar.Event()
        uid = str(uuid.uuid4())
        event.add("uid", uid)
        event.add("dtstamp", datetime.now(UTC))
        event.add("summary", summary)
        event.add("dtstart", start)
        event.add("dtend", end)
        if location:
            event.add("location", location)
        if rrule:
            event.add("rrule", rrule)
        wrapper = icalendar.Calendar()
        wrapper.add("prodid", "-//MindBot tests//EN")
        wrapper.add("version", "2.0")
        wrapper.add_component(event)
        self.calendar(calendar).add_event(wrapper.to_ical().decode())
        return uid

    def events(self, calendar: str | None = None) -> list[icalendar.Event]:
        """Every event stored in a calendar, as parsed VEVENTs, sorted by start."""
        found = [obj.icalendar_component for obj in self.calendar(calendar).get_events()]
        return sorted(found, key=lambda e: _sort_key(e.decoded("dtstart")))

    def clear(self) -> None:
        """Delete every event in every calendar of the user."""
        for calendar in self.client().get_principal().get_calendars():
            for event in calendar.get_events():
                event.delete()


@contextmanager
def radicale_server(
    *, username: str = "alice", password: str = "correct horse", calendar: str = "Personal"
) -> Iterator[RadicaleServer]:
    """Run Radicale on a free loopback port, with ``username``'s ``calendar`` made.

    Yields:
        The server; stopped (terminate, then kill) and its folder deleted at the end.
    """
    with tempfile.TemporaryDirectory(prefix="radicale-") as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "users").write_text(f"{username}:{password}\n")
        (folder / "config").write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{port}\n"
            "[auth]\n"
            "type = htpasswd\n"
            f"htpasswd_filename = {folder / 'users'}\n"
            "htpasswd_encryption = plain\n"
            # A wrong password is answered at once, not after Radicale's anti-guessing pause.
            "delay = 0\n"
            "[rights]\n"
            "type = owner_only\n"
            "[storage]\n"
            f"filesystem_folder = {folder / 'collections'}\n"
            "[web]\n"
            "type = none\n"
            "[logging]\n"
            "level = warning\n"
        )
        log = open(folder / "radicale.log", "wb")  # closed in the finally below
        process = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", str(folder / "config")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_until_answering(url, process, folder / "radicale.log")
            made = caldav.DAVClient(url=url, username=username, password=password, timeout=10)
            calendar_url = str(
                made.get_principal().make_calendar(name=calendar, cal_id=_slug(calendar)).url
            )
            yield RadicaleServer(
                url=url,
                username=username,
                password=password,
                calendar_name=calendar,
                calendar_url=calendar_url,
                folder=folder,
                pid=process.pid,
            )
        finally:
            stop_process(process)
            log.close()


def _wait_until_answering(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"radicale exited at start:\n{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (401, 404...) means it is serving
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"radicale did not answer within {STARTUP_SECS:.0f} s")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "calendar"


def _sort_key(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)
