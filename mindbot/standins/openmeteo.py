"""An Open-Meteo stand-in: geocoding search and forecast, with faults on request.

Open-Meteo needs no key, but a benchmark must not depend on the internet, and faults have to be
injected on cue. The answers follow Open-Meteo's documented shapes (``/v1/search`` of the
geocoding API; ``/v1/forecast`` with ``current`` and ``daily`` blocks and their ``*_units``)::

    async with OpenMeteoStandIn() as meteo:
        settings = ToolSettings(weather={"geocoding_url": meteo.geocoding_url,
                                         "forecast_url": meteo.forecast_url})
        meteo.fail("500")          # the next request gets HTTP 500

Fault modes: ``"500"`` (Open-Meteo's ``{"error": true, "reason": ...}`` with status 500),
``"malformed"`` (a body that is not JSON), ``"slow"`` (answers after ``slow_secs``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import date, timedelta
from typing import Any, Literal

from aiohttp import web

from mindbot.standins._server import HttpStandIn

Fault = Literal["500", "malformed", "slow"]

PLACES = {
    "london": (2643743, "London", 51.50853, -0.12574, "GB", "United Kingdom", "England"),
    "paris": (2988507, "Paris", 48.85341, 2.3488, "FR", "France", "Île-de-France"),
    "tokyo": (1850147, "Tokyo", 35.6895, 139.69171, "JP", "Japan", "Tokyo"),
}
ZONES = {"GB": "Europe/London", "FR": "Europe/Paris", "JP": "Asia/Tokyo"}


class OpenMeteoStandIn(HttpStandIn):
    """Open-Meteo's geocoding ``/v1/search`` and ``/v1/forecast`` on loopback.

    Records ``requests`` as ``(path, query dict)``.

    Args:
        slow_secs: How long a ``"slow"`` fault waits before answering.
    """

    def __init__(self, *, slow_secs: float = 5.0) -> None:
        super().__init__()
        self._slow_secs = slow_secs
        self._faults: deque[Fault] = deque()
        self.requests: list[tuple[str, dict[str, str]]] = []

    @property
    def geocoding_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/search"

    @property
    def forecast_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/forecast"

    def fail(self, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``fault``."""
        self._faults.extend([fault] * times)

    def clear(self) -> None:
        """Forget faults not yet served."""
        self._faults.clear()

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/search", self._search)
        app.router.add_get("/v1/forecast", self._forecast)

    def _error_response(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": True, "reason": message}, status=status)

    async def _fault(self) -> web.Response | None:
        if not self._faults:
            return None
        fault = self._faults.popleft()
        if fault == "500":
            return self._error_response(500, "Internal server error")
        if fault == "malformed":
            return web.Response(text="<html>Bad gateway", content_type="application/json")
        await asyncio.sleep(self._slow_secs)
        return None

    async def _search(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if (response := await self._fault()) is not None:
            return response
        name = request.query.get("name", "")
        if len(name) < 2:
            return self._error_response(400, "Parameter 'name' must be at least 2 characters")
        place = PLACES.get(name.strip().lower())
        body: dict[str, Any] = {"generationtime_ms": 0.42}
        if place:
            place_id, label, lat, lon, code, country, admin1 = place
            body["results"] = [
                {
                    "id": place_id,
                    "name": label,
                    "latitude": lat,
                    "longitude": lon,
                    "elevation": 30.0,
                    "feature_code": "PPLC",
                    "country_code": code,
                    "timezone": ZONES[code],
                    "country": country,
                    "admin1": admin1,
                }
            ]
        return web.json_response(body)

    async def _forecast(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if (response := await self._fault()) is not None:
            return response
        try:
            latitude = float(request.query["latitude"])
            longitude = float(request.query["longitude"])
            days = int(request.query.get("forecast_days", "7"))
        except (KeyError, ValueError):
            return self._error_response(400, "Invalid latitude, longitude or forecast_days")
        imperial = request.query.get("temperature_unit") == "fahrenheit"
        temperatures = [8.1, 9.4, 11.0, 7.5, 6.2, 10.3, 12.8][:days]
        if imperial:
            temperatures = [round(t * 9 / 5 + 32, 1) for t in temperatures]
        unit = "°F" if imperial else "°C"
        today = date.today()
        return web.json_response(
            {
                "latitude": round(latitude, 2),
                "longitude": round(longitude, 2),
                "generationtime_ms": 0.05,
                "utc_offset_seconds": 0,
                "timezone": request.query.get("timezone", "GMT"),
                "timezone_abbreviation": "GMT",
                "elevation": 30.0,
                "current_units": {
                    "time": "iso8601",
                    "interval": "seconds",
                    "temperature_2m": unit,
                    "apparent_temperature": unit,
                    "relative_humidity_2m": "%",
                    "weather_code": "wmo code",
                    "wind_speed_10m": "mp/h" if imperial else "km/h",
                },
                "current": {
                    "time": f"{today.isoformat()}T06:00",
                    "interval": 900,
                    "temperature_2m": temperatures[0],
                    "apparent_temperature": round(temperatures[0] - 2.2, 1),
                    "relative_humidity_2m": 87,
                    "weather_code": 61,
                    "wind_speed_10m": 14.2,
                },
                "daily_units": {
                    "time": "iso8601",
                    "weather_code": "wmo code",
                    "temperature_2m_max": unit,
                    "temperature_2m_min": unit,
                    "precipitation_probability_max": "%",
                },
                "daily": {
                    "time": [(today + timedelta(days=n)).isoformat() for n in range(days)],
                    "weather_code": [61, 3, 0, 80, 71, 2, 1][:days],
                    "temperature_2m_max": [t + 3 for t in temperatures],
                    "temperature_2m_min": [t - 4 for t in temperatures],
                    "precipitation_probability_max": [80, 20, 0, 65, 40, 10, 5][:days],
                },
            }
        )
