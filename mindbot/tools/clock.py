"""The current time and date, in the caller's time zone or a place's."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from mindbot.tools.base import ToolContext, ToolError, tool


@tool(label="the clock")
async def current_time(ctx: ToolContext, timezone: str = "") -> dict:
    """Get the current date and time, for the caller or in another time zone.

    Args:
        timezone: An IANA time zone such as "Europe/London" or "America/New_York"; leave
            empty for the caller's own.
    """
    name = timezone or ctx.timezone
    try:
        zone = ZoneInfo(_canonical(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"I don't know the time zone {name!r}; it needs a name like Europe/London.",
            kind="bad_arguments",
        ) from None
    now = datetime.now(zone)
    return {
        "timezone": zone.key,
        "date": now.strftime("%A %-d %B %Y"),
        "time": now.strftime("%-I:%M %p"),
        "iso": now.isoformat(timespec="seconds"),
        "utc_offset": now.strftime("%z"),
    }


def _canonical(name: str) -> str:
    """The IANA name, matched without regard to case or spaces ("europe/london")."""
    wanted = name.strip().replace(" ", "_")
    if "/" not in wanted and wanted.upper() in ("UTC", "GMT", "Z"):
        return "UTC"
    for zone in _zones():
        if zone.lower() == wanted.lower():
            return zone
    return wanted


_ZONES: list[str] = []


def _zones() -> list[str]:
    if not _ZONES:
        _ZONES.extend(sorted(available_timezones()))
    return _ZONES
