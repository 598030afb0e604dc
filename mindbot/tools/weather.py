"""The weather now and for the next few days, from Open-Meteo (no key needed).

Two requests: the geocoding API turns the place's name into coordinates (its best match only),
then the forecast API gives the current conditions and daily highs, lows and chance of rain in
the place's own time zone. WMO weather codes become words ("light rain") and numbers are rounded,
so the result reads well aloud. Units follow ``tools.weather.units`` (metric or imperial).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import httpx
from loguru import logger

from mindbot.tools.base import ToolContext, ToolError, tool

MAX_DAYS = 7
MAX_PLACE_CHARS = 100

#: Open-Meteo's subset of the WMO present-weather codes, as one would say them.
WMO_CODES: dict[int, str] = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "freezing fog",
    51: "light drizzle",
    53: "drizzle",
    55: "heavy drizzle",
    56: "light freezing drizzle",
    57: "heavy freezing drizzle",
    61: "light rain",
    63: "rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "light snow",
    73: "snow",
    75: "heavy snow",
    77: "snow grains",
    80: "light rain showers",
    81: "rain showers",
    82: "violent rain showers",
    85: "light snow showers",
    86: "heavy snow showers",
    95: "thunderstorms",
    96: "thunderstorms with light hail",
    99: "thunderstorms with heavy hail",
}

_SPOKEN_UNITS = {
    "°C": "degrees Celsius",
    "°F": "degrees Fahrenheit",
    "km/h": "kilometres per hour",
    "mp/h": "miles per hour",  # what Open-Meteo writes for wind_speed_unit=mph
    "mph": "miles per hour",
    "m/s": "metres per second",
    "kn": "knots",
}

_CURRENT = "temperature_2m,apparent_temperature,relative_humidity_2m,weather_code,wind_speed_10m"
_DAILY = "weather_code,temperature_2m_max,temperature_2m_min,precipitation_probability_max"


class _Malformed(Exception):
    """The weather service's answer is not what its API documents."""


@tool(
    label="the weather service",
    available=lambda s: bool(s.weather.geocoding_url and s.weather.forecast_url),
)
async def get_weather(ctx: ToolContext, place: str, days: int = 1) -> dict:
    """Get the current weather and the forecast for a place.

    Args:
        place: A town or city, optionally with its region or country, e.g. "Paris" or
            "Portland, Oregon".
        days: How many days of forecast, 1 (today only) to 7.
    """
    _check(place, days)
    settings = ctx.settings.weather
    try:
        found = await _geocode(ctx, place)
        forecast = await _forecast(ctx, found["latitude"], found["longitude"], days)
        return _spoken(found, forecast, days, settings.units)
    except _Malformed as e:
        logger.debug(f"get_weather: unexpected answer ({e})")
        raise ToolError(
            "The weather service sent an answer I couldn't read.", kind="failed"
        ) from None


def _check(place: str, days: int) -> None:
    if not place or len(place) > MAX_PLACE_CHARS or not place.isprintable():
        raise ToolError(
            f"The place must be a name of 1 to {MAX_PLACE_CHARS} characters.",
            kind="bad_arguments",
        )
    if not 1 <= days <= MAX_DAYS:
        raise ToolError(f"I can forecast 1 to {MAX_DAYS} days ahead.", kind="bad_arguments")


async def _geocode(ctx: ToolContext, place: str) -> dict[str, Any]:
    """The best match for the place's name (name, coordinates, region, country)."""
    params = {"name": place, "count": 1, "language": "en", "format": "json"}
    response = await ctx.http.get(ctx.settings.weather.geocoding_url, params=params)
    answer = _json(response)
    results = answer.get("results") or []
    if not results:
        raise ToolError(f"I couldn't find a place called {place}.", kind="not_found")
    best = results[0]
    if not isinstance(best, dict) or not isinstance(best.get("name"), str):
        raise _Malformed("a geocoding result without a name")
    for key in ("latitude", "longitude"):
        if not _is_number(best.get(key)):
            raise _Malformed(f"a geocoding result without {key}")
    return best


async def _forecast(ctx: ToolContext, latitude: float, longitude: float, days: int) -> dict:
    params: dict[str, Any] = {
        "latitude": latitude,
        "longitude": longitude,
        "current": _CURRENT,
        "daily": _DAILY,
        "timezone": "auto",
        "forecast_days": days,
    }
    if ctx.settings.weather.units == "imperial":
        params |= {"temperature_unit": "fahrenheit", "wind_speed_unit": "mph"}
    return _json(await ctx.http.get(ctx.settings.weather.forecast_url, params=params))


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON; Open-Meteo's own errors (HTTP 400, ``"error": true``) as a ToolError."""
    if response.status_code == 400:
        try:
            reason = response.json().get("reason")
        except (ValueError, AttributeError):
            reason = None
        logger.debug(f"get_weather: the weather service refused the request ({reason})")
        raise ToolError("The weather service couldn't answer for that place.", kind="failed")
    response.raise_for_status()  # the session turns 5xx into "having problems" (and retries)
    try:
        answer = response.json()
    except ValueError:
        raise _Malformed("not JSON") from None
    if not isinstance(answer, dict):
        raise _Malformed("not a JSON object")
    if answer.get("error") is True:
        raise ToolError("The weather service couldn't answer for that place.", kind="failed")
    return answer


def _spoken(place: dict[str, Any], forecast: dict[str, Any], days: int, units: str) -> dict:
    current = forecast.get("current")
    daily = forecast.get("daily")
    if not isinstance(current, dict) or not isinstance(daily, dict):
        raise _Malformed("no current or daily section")
    current_units = forecast.get("current_units") or {}
    imperial = units == "imperial"
    temperature_unit = current_units.get("temperature_2m") or ("°F" if imperial else "°C")
    wind_unit = current_units.get("wind_speed_10m") or ("mp/h" if imperial else "km/h")
    now = {
        "conditions": _conditions(current.get("weather_code")),
        "temperature": _whole(current.get("temperature_2m")),
        "feels_like": _whole(current.get("apparent_temperature")),
        "humidity_percent": _whole(current.get("relative_humidity_2m")),
        "wind_speed": _whole(current.get("wind_speed_10m")),
    }
    if now["temperature"] is None:
        raise _Malformed("no current temperature")
    return {
        "place": _place_name(place),
        "now": {k: v for k, v in now.items() if v is not None},
        "forecast": _days(daily, days),
        "units": {
            "temperature": _SPOKEN_UNITS.get(temperature_unit, temperature_unit),
            "wind_speed": _SPOKEN_UNITS.get(wind_unit, wind_unit),
        },
    }


def _days(daily: dict[str, Any], days: int) -> list[dict[str, Any]]:
    columns = (
        "time",
        "weather_code",
        "temperature_2m_max",
        "temperature_2m_min",
        "precipitation_probability_max",
    )
    values = [daily.get(name) for name in columns]
    if not all(isinstance(v, list) for v in values):
        raise _Malformed("daily values are not lists")
    spoken = []
    for index, (when, code, high, low, rain) in enumerate(zip(*values, strict=False)):
        if index >= days:
            break
        try:
            day = date.fromisoformat(when)
        except (TypeError, ValueError):
            raise _Malformed(f"a day that is not a date: {when!r}") from None
        entry = {
            "day": ("today", "tomorrow")[index] if index < 2 else day.strftime("%A"),
            "date": day.strftime("%A %-d %B"),
            "conditions": _conditions(code),
            "high": _whole(high),
            "low": _whole(low),
            "chance_of_rain_percent": _whole(rain),
        }
        spoken.append({k: v for k, v in entry.items() if v is not None})
    if not spoken:
        raise _Malformed("no daily forecast")
    return spoken


def _place_name(place: dict[str, Any]) -> str:
    """The place as said aloud, e.g. "Portland, Oregon, United States" (no repeated region)."""
    name = place["name"]
    parts = [name]
    region = place.get("admin1")
    if isinstance(region, str) and region and name.lower() not in region.lower():
        parts.append(region)
    country = place.get("country")
    if isinstance(country, str) and country:
        parts.append(country)
    return ", ".join(parts)


def _conditions(code: Any) -> str | None:
    if not _is_number(code):
        return None
    return WMO_CODES.get(int(code), "unusual weather")


def _whole(value: Any) -> int | None:
    """Rounded half up, as people round (``round`` would make 12.5 into 12)."""
    return math.floor(value + 0.5) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
