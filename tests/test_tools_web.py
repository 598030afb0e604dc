"""Weather, news and stock quotes against a real HTTP server replaying recorded API answers.

The replay server (``tests/servers/replay.py``) is a subprocess on loopback serving the fixture
files under ``tests/fixtures/tools/``; every call goes through a ``ToolSession``, as the LLM's
would. No mocks: the tools' real HTTP requests are checked on the server's side.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from loguru import logger

from mindbot.harness import free_port
from mindbot.session import ToolCallReport
from mindbot.tools import Tool, ToolContext, ToolSession, ToolSettings
from mindbot.tools.news import get_headlines
from mindbot.tools.stocks import get_stock_quote
from mindbot.tools.weather import get_weather

from servers.replay import ReplayServer, Rule, replay_server

API_KEY = "av-test-key-7Q2XK9PZ"
GEO = "/v1/search"
FORECAST = "/v1/forecast"
QUOTE = "/query"
FINNHUB = "/api/v1/quote"

RULES = [
    Rule(GEO, {"name": "Berlin"}, file="weather/geocode_berlin.json"),
    Rule(GEO, {"name": "Portland, Oregon"}, file="weather/geocode_portland.json"),
    Rule(GEO, file="weather/geocode_none.json"),  # Open-Meteo finds nothing for other names
    Rule(
        FORECAST,
        {"latitude": "52.52437", "longitude": "13.41053", "forecast_days": "3"},
        file="weather/forecast_berlin_3days.json",
    ),
    Rule(
        FORECAST,
        {"latitude": "52.52437", "longitude": "13.41053", "forecast_days": "1"},
        file="weather/forecast_berlin_1day.json",
    ),
    Rule(
        FORECAST,
        {"latitude": "45.52345", "temperature_unit": "fahrenheit", "wind_speed_unit": "mph"},
        file="weather/forecast_portland_imperial.json",
    ),
    Rule("/feeds/bbc-technology.xml", file="feeds/bbc_technology.xml"),
    Rule("/feeds/verge.atom", file="feeds/verge.atom"),
    Rule("/feeds/bbc-world.xml", file="feeds/bbc_world.xml"),
    Rule("/feeds/bad-gateway", file="feeds/bad_gateway.html"),
    Rule("/feeds/malformed.xml", file="feeds/malformed.xml"),
    Rule(QUOTE, {"function": "GLOBAL_QUOTE", "symbol": "IBM"}, file="stocks/alphavantage_ibm.json"),
    Rule(
        QUOTE,
        {"function": "GLOBAL_QUOTE", "symbol": "BRK.B"},
        file="stocks/alphavantage_brk_b.json",
    ),
    Rule(QUOTE, {"function": "GLOBAL_QUOTE"}, file="stocks/alphavantage_unknown.json"),
    Rule(FINNHUB, {"symbol": "AAPL"}, file="stocks/finnhub_aapl.json"),
    Rule(FINNHUB, file="stocks/finnhub_unknown.json"),
]


@pytest.fixture(scope="module")
def server():
    """One replay server process for the module, stopped by PID at its end."""
    with replay_server(RULES) as running:
        yield running


@pytest.fixture
def replay(server: ReplayServer) -> ReplayServer:
    """The server with the standard rules and no requests recorded."""
    server.reset(RULES)
    return server


def settings_for(
    url: str,
    *,
    units: str = "metric",
    provider: str = "alphavantage",
    feeds: dict[str, list[str]] | None = None,
    max_headlines: int = 5,
    timeout_secs: float = 3.0,
    retries: int = 2,
) -> ToolSettings:
    """Settings that point every web tool at ``url``."""
    if feeds is None:
        feeds = {
            "technology": [f"{url}/feeds/bbc-technology.xml", f"{url}/feeds/verge.atom"],
            "world": [f"{url}/feeds/bbc-world.xml", f"{url}/feeds/bad-gateway"],
            "science": [f"{url}/feeds/malformed.xml"],
        }
    return ToolSettings(
        timeout_secs=timeout_secs,
        retries=retries,
        filler_after_secs=60,
        weather={
            "geocoding_url": f"{url}{GEO}",
            "forecast_url": f"{url}{FORECAST}",
            "units": units,
        },
        news={"feeds": feeds, "max_headlines": max_headlines},
        stocks={"provider": provider, "base_url": url, "api_key": API_KEY},
    )


async def invoke(
    settings: ToolSettings, tool: Tool, arguments: dict[str, Any]
) -> tuple[dict[str, Any], list[ToolCallReport]]:
    """One call through a ToolSession, as the LLM makes it; its result and audit reports."""
    reports: list[ToolCallReport] = []
    async with httpx.AsyncClient() as http:
        context = ToolContext(settings=settings, http=http, timezone="Europe/London")
        session = ToolSession([tool], context, on_call=reports.append)
        result = await session.invoke(tool.name, arguments)
    return result, reports


def closed_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


# --- Weather --------------------------------------------------------------------------------


async def test_weather_now_and_for_three_days(replay: ReplayServer):
    result, reports = await invoke(
        settings_for(replay.url), get_weather, {"place": "Berlin", "days": 3}
    )

    assert result["ok"], result
    weather = result["result"]
    assert weather["place"] == "Berlin, Germany"  # "Land Berlin" would only repeat the name
    assert weather["now"] == {
        "conditions": "light rain",
        "temperature": 13,  # 12.5, rounded as people round
        "feels_like": 10,
        "humidity_percent": 81,
        "wind_speed": 14,
    }
    assert weather["units"] == {
        "temperature": "degrees Celsius",
        "wind_speed": "kilometres per hour",
    }
    assert weather["forecast"] == [
        {
            "day": "today",
            "date": "Tuesday 13 May",
            "conditions": "light rain",
            "high": 15,
            "low": 8,
            "chance_of_rain_percent": 68,
        },
        {
            "day": "tomorrow",
            "date": "Wednesday 14 May",
            "conditions": "overcast",
            "high": 18,
            "low": 8,
            "chance_of_rain_percent": 12,
        },
        {
            "day": "Thursday",
            "date": "Thursday 15 May",
            "conditions": "thunderstorms",
            "high": 22,
            "low": 11,
            "chance_of_rain_percent": 74,
        },
    ]
    (search,) = replay.requests(GEO)
    assert search.query == {"name": "Berlin", "count": "1", "language": "en", "format": "json"}
    (forecast,) = replay.requests(FORECAST)
    assert forecast.query["current"] == (
        "temperature_2m,apparent_temperature,relative_humidity_2m,weather_code,wind_speed_10m"
    )
    assert forecast.query["daily"] == (
        "weather_code,temperature_2m_max,temperature_2m_min,precipitation_probability_max"
    )
    assert forecast.query["timezone"] == "auto"
    assert "temperature_unit" not in forecast.query
    assert [r.status for r in reports] == ["ok"]


async def test_weather_in_imperial_units(replay: ReplayServer):
    result, _ = await invoke(
        settings_for(replay.url, units="imperial"), get_weather, {"place": "Portland, Oregon"}
    )

    assert result["ok"], result
    weather = result["result"]
    assert weather["place"] == "Portland, Oregon, United States"
    assert weather["now"]["temperature"] == 55
    assert weather["now"]["conditions"] == "overcast"
    assert weather["units"] == {"temperature": "degrees Fahrenheit", "wind_speed": "miles per hour"}
    assert weather["forecast"] == [
        {
            "day": "today",
            "date": "Tuesday 13 May",
            "conditions": "overcast",
            "high": 68,
            "low": 50,
            "chance_of_rain_percent": 9,
        }
    ]
    (forecast,) = replay.requests(FORECAST)
    assert forecast.query["forecast_days"] == "1"


async def test_an_unknown_place_is_not_found(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url), get_weather, {"place": "Atlantis"})

    assert result == {
        "ok": False,
        "error": "not_found",
        "message": "I couldn't find a place called Atlantis.",
    }
    assert replay.requests(FORECAST) == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"place": "Berlin", "days": 0},
        {"place": "Berlin", "days": 8},
        {"place": "Berlin", "days": "a week"},
        {"place": ""},
        {"place": "x" * 101},
        {"place": "Ber\x00lin"},
        {"place": "Berlin", "units": "kelvin"},
        {},
    ],
)
async def test_weather_arguments_are_checked_before_any_request(replay: ReplayServer, arguments):
    result, _ = await invoke(settings_for(replay.url), get_weather, arguments)

    assert result["ok"] is False
    assert result["error"] == "bad_arguments"
    assert replay.requests() == []


async def test_a_place_cannot_add_query_parameters(replay: ReplayServer):
    place = "Berlin&count=100&latitude=0"
    result, _ = await invoke(settings_for(replay.url), get_weather, {"place": place})

    assert result["error"] == "not_found"
    (search,) = replay.requests(GEO)
    assert search.query["name"] == place
    assert search.query["count"] == "1"
    assert "latitude" not in search.query


async def test_weather_retries_a_500_then_answers(replay: ReplayServer):
    replay.add(
        Rule(GEO, status=500, body="Internal Server Error", content_type="text/plain", times=1)
    )

    result, reports = await invoke(settings_for(replay.url), get_weather, {"place": "Berlin"})

    assert result["ok"], result
    assert result["result"]["now"]["conditions"] == "light rain"
    assert len(replay.requests(GEO)) == 2
    assert reports[0].attempts == 2


async def test_weather_when_the_service_is_down():
    result, _ = await invoke(
        settings_for(closed_url(), retries=0), get_weather, {"place": "Berlin"}
    )

    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the weather service.",
    }


async def test_weather_slower_than_the_timeout(replay: ReplayServer):
    replay.add(Rule(FORECAST, file="weather/forecast_berlin_1day.json", delay=3))

    result, _ = await invoke(
        settings_for(replay.url, timeout_secs=0.4), get_weather, {"place": "Berlin"}
    )

    assert result == {
        "ok": False,
        "error": "timeout",
        "message": "The weather service took too long to answer.",
    }


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            Rule(FORECAST, file="weather/forecast_truncated.json"),
            "The weather service sent an answer I couldn't read.",
        ),
        (
            Rule(FORECAST, file="weather/forecast_missing_daily.json"),
            "The weather service sent an answer I couldn't read.",
        ),
        (
            Rule(GEO, body='{"results": [{"name": "Berlin"}]}'),
            "The weather service sent an answer I couldn't read.",
        ),
        (
            Rule(FORECAST, file="weather/forecast_400.json", status=400),
            "The weather service couldn't answer for that place.",
        ),
    ],
    ids=["truncated-json", "missing-daily", "geocode-without-coordinates", "error-400"],
)
async def test_weather_bad_answers_are_spoken_errors(replay: ReplayServer, rule: Rule, message):
    replay.add(rule)

    result, _ = await invoke(settings_for(replay.url), get_weather, {"place": "Berlin"})

    assert result == {"ok": False, "error": "failed", "message": message}
    assert len(replay.requests(rule.path)) == 1  # a bad answer is not retried


# --- News -----------------------------------------------------------------------------------


async def test_headlines_from_rss_and_atom_newest_first(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url), get_headlines, {"topic": " Technology "})

    assert result["ok"], result
    news = result["result"]
    assert news["topic"] == "technology"
    assert [(h["title"], h["source"]) for h in news["headlines"]] == [
        ("Open-source AI model tops coding benchmark", "The Verge"),
        ("The best noise-cancelling headphones & earbuds of 2025", "The Verge"),
        ("Social media firms face new age-check rules", "BBC News - Technology"),
        ("Chip maker\u2019s record quarter lifts tech shares", "BBC News - Technology"),
        ("Self-driving taxis to begin trials in three UK cities", "BBC News - Technology"),
    ]
    assert news["headlines"][0]["published"] == "Tuesday 13 May"
    assert "sources_unavailable" not in news
    assert {r.path for r in replay.requests()} == {"/feeds/bbc-technology.xml", "/feeds/verge.atom"}


async def test_headlines_default_to_the_first_topic_and_the_limit(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url, max_headlines=2), get_headlines, {})

    assert result["ok"], result
    assert result["result"]["topic"] == "technology"
    assert [h["title"] for h in result["result"]["headlines"]] == [
        "Open-source AI model tops coding benchmark",
        "The best noise-cancelling headphones & earbuds of 2025",
    ]


async def test_an_unknown_topic_lists_the_topics(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url), get_headlines, {"topic": "gardening"})

    assert result == {
        "ok": False,
        "error": "bad_arguments",
        "message": "I have no news topic called 'gardening'. "
        "The topics are: technology, world, science.",
    }
    assert replay.requests() == []


async def test_headlines_from_the_feeds_that_work(replay: ReplayServer):
    url = replay.url
    feeds = {"world": [f"{url}/feeds/bbc-world.xml", f"{url}/feeds/bad-gateway", closed_url()]}

    result, _ = await invoke(settings_for(url, feeds=feeds), get_headlines, {"topic": "world"})

    assert result["ok"], result
    assert [h["title"] for h in result["result"]["headlines"]] == [
        "Ceasefire talks resume as envoys meet in Geneva",
        "Floods force thousands from their homes in southern Brazil",
    ]
    assert result["result"]["sources_unavailable"] == 2


async def test_headlines_when_every_feed_is_down():
    url = closed_url()
    settings = settings_for(url, feeds={"world": [f"{url}/a.xml", f"{url}/b.xml"]}, retries=0)

    result, _ = await invoke(settings, get_headlines, {"topic": "world"})

    assert result == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the news feeds.",
    }


async def test_headlines_when_every_feed_is_unreadable(replay: ReplayServer):
    url = replay.url
    feeds = {"science": [f"{url}/feeds/malformed.xml", f"{url}/feeds/bad-gateway"]}

    result, _ = await invoke(settings_for(url, feeds=feeds), get_headlines, {"topic": "science"})

    assert result == {
        "ok": False,
        "error": "failed",
        "message": "The news feeds sent something I couldn't read.",
    }
    assert len(replay.requests("/feeds/malformed.xml")) == 1


async def test_headlines_retry_a_500_then_answer(replay: ReplayServer):
    replay.add(
        Rule("/feeds/bbc-world.xml", status=500, body="oops", content_type="text/plain", times=1)
    )
    feeds = {"world": [f"{replay.url}/feeds/bbc-world.xml"]}

    result, reports = await invoke(settings_for(replay.url, feeds=feeds), get_headlines, {})

    assert result["ok"], result
    assert (
        result["result"]["headlines"][0]["title"]
        == "Ceasefire talks resume as envoys meet in Geneva"
    )
    assert len(replay.requests("/feeds/bbc-world.xml")) == 2
    assert reports[0].attempts == 2


async def test_headlines_slower_than_the_timeout(replay: ReplayServer):
    replay.add(Rule("/feeds/verge.atom", file="feeds/verge.atom", delay=3))

    result, _ = await invoke(
        settings_for(replay.url, timeout_secs=0.4), get_headlines, {"topic": "technology"}
    )

    assert result["error"] == "timeout"


async def test_headline_topic_arguments_are_checked(replay: ReplayServer):
    for arguments in ({"topic": 42}, {"topic": "world", "feed": "http://evil.example/rss"}):
        result, _ = await invoke(settings_for(replay.url), get_headlines, arguments)
        assert result["error"] == "bad_arguments", arguments
    assert replay.requests() == []


# --- Stocks ---------------------------------------------------------------------------------


async def test_an_alpha_vantage_quote(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url), get_stock_quote, {"symbol": "ibm"})

    assert result == {
        "ok": True,
        "result": {
            "symbol": "IBM",
            "price": 250.36,
            "change": 1.16,
            "direction": "up",
            "change_percent": 0.47,
            "as_of": "Friday 9 May 2025",
        },
    }
    (request,) = replay.requests(QUOTE)
    assert request.query == {"function": "GLOBAL_QUOTE", "symbol": "IBM", "apikey": API_KEY}


async def test_a_falling_quote_with_a_dotted_symbol(replay: ReplayServer):
    result, _ = await invoke(settings_for(replay.url), get_stock_quote, {"symbol": "BRK.B"})

    assert result["ok"], result
    assert result["result"]["change"] == -2.41
    assert result["result"]["change_percent"] == -0.45
    assert result["result"]["direction"] == "down"


async def test_a_finnhub_quote_sends_the_key_in_a_header(replay: ReplayServer):
    settings = settings_for(replay.url, provider="finnhub")

    result, _ = await invoke(settings, get_stock_quote, {"symbol": "AAPL"})

    assert result == {
        "ok": True,
        "result": {
            "symbol": "AAPL",
            "price": 198.53,
            "change": 1.04,
            "direction": "up",
            "change_percent": 0.53,
            "as_of": "Friday 9 May 2025, 9:00 PM",  # 20:00 UTC, told in the caller's zone
        },
    }
    (request,) = replay.requests(FINNHUB)
    assert request.query == {"symbol": "AAPL"}
    assert request.headers["x-finnhub-token"] == API_KEY


@pytest.mark.parametrize("provider", ["alphavantage", "finnhub"])
async def test_an_unknown_symbol_is_not_found(replay: ReplayServer, provider):
    settings = settings_for(replay.url, provider=provider)

    result, _ = await invoke(settings, get_stock_quote, {"symbol": "ZZZZ"})

    assert result == {
        "ok": False,
        "error": "not_found",
        "message": "I couldn't find a stock with the symbol ZZZZ.",
    }


@pytest.mark.parametrize(
    ("provider", "rule"),
    [
        ("alphavantage", Rule(QUOTE, file="stocks/alphavantage_note.json")),
        ("alphavantage", Rule(QUOTE, file="stocks/alphavantage_information.json")),
        ("finnhub", Rule(FINNHUB, file="stocks/finnhub_429.json", status=429)),
    ],
    ids=["note", "information", "http-429"],
)
async def test_a_rate_limit_is_said_and_not_retried(replay: ReplayServer, provider, rule: Rule):
    replay.add(rule)

    result, _ = await invoke(
        settings_for(replay.url, provider=provider), get_stock_quote, {"symbol": "IBM"}
    )

    assert result["error"] == "unavailable"
    assert "too many requests" in result["message"]
    assert len(replay.requests(rule.path)) == 1


@pytest.mark.parametrize(
    "symbol",
    [
        "IBM&function=TIME_SERIES_DAILY",
        "../../etc/passwd",
        "IBM/x",
        "IB M",
        "IBM;",
        "",
        "ABCDEFGHIJK",
        "\uff29\uff22\uff2d",
        ".IBM",
        "IBM#x",
        "IBM%26apikey%3Dx",
    ],
)
async def test_a_bad_symbol_is_rejected_before_any_request(replay: ReplayServer, symbol):
    result, _ = await invoke(settings_for(replay.url), get_stock_quote, {"symbol": symbol})

    assert result["ok"] is False
    assert result["error"] == "bad_arguments"
    assert replay.requests() == []


async def test_a_quote_retries_a_500_then_answers(replay: ReplayServer):
    replay.add(Rule(QUOTE, status=500, body="<html>500</html>", content_type="text/html", times=1))

    result, reports = await invoke(settings_for(replay.url), get_stock_quote, {"symbol": "IBM"})

    assert result["ok"], result
    assert result["result"]["price"] == 250.36
    assert len(replay.requests(QUOTE)) == 2
    assert reports[0].attempts == 2


async def test_a_quote_slower_than_the_timeout(replay: ReplayServer):
    replay.add(Rule(QUOTE, file="stocks/alphavantage_ibm.json", delay=3))

    result, _ = await invoke(
        settings_for(replay.url, timeout_secs=0.4), get_stock_quote, {"symbol": "IBM"}
    )

    assert result["error"] == "timeout"


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        (Rule(QUOTE, body='{"Global Quote": {"01. symbol": "IBM", "05. price": '), "failed"),
        (Rule(QUOTE, body='{"Global Quote": {"01. symbol": "IBM", "05. price": "n/a"}}'), "failed"),
        (Rule(QUOTE, body='["IBM", 250.36]'), "failed"),
        (Rule(QUOTE, file="stocks/alphavantage_error.json"), "failed"),
    ],
    ids=["truncated", "price-not-a-number", "not-an-object", "error-message"],
)
async def test_bad_quote_answers_are_spoken_errors(replay: ReplayServer, rule: Rule, error):
    replay.add(rule)

    result, _ = await invoke(settings_for(replay.url), get_stock_quote, {"symbol": "IBM"})

    assert result["ok"] is False
    assert result["error"] == error
    assert result["message"].startswith("The stock quote service")


async def test_the_api_key_never_leaks(replay: ReplayServer, caplog):
    caplog.set_level(logging.DEBUG)  # httpx's own request log lines included
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(str(m)), level="DEBUG")
    cases = [  # (what the server does first, the settings, the error expected)
        (None, {}, None),
        (Rule(QUOTE, status=500, body="no"), {"retries": 0}, "unavailable"),
        (Rule(QUOTE, status=401, body="{}"), {}, "failed"),
        (Rule(QUOTE, body="not json"), {}, "failed"),
        (
            Rule(QUOTE, file="stocks/alphavantage_ibm.json", delay=3),
            {"timeout_secs": 0.4},
            "timeout",
        ),
        (
            Rule(FINNHUB, status=401, file="stocks/finnhub_401.json"),
            {"provider": "finnhub"},
            "failed",
        ),
    ]
    outcomes = []
    try:
        for rule, overrides, _ in cases:
            replay.reset(([rule] if rule else []) + RULES)
            settings = settings_for(replay.url, **overrides)
            outcomes.append(await invoke(settings, get_stock_quote, {"symbol": "IBM"}))
        down = settings_for(closed_url(), retries=0)
        outcomes.append(await invoke(down, get_stock_quote, {"symbol": "IBM"}))
    finally:
        logger.remove(sink)

    errors = [result.get("error") for result, _ in outcomes]
    assert errors == [error for _, _, error in cases] + ["unavailable"]
    assert API_KEY not in json.dumps([result for result, _ in outcomes])
    assert API_KEY not in repr([reports for _, reports in outcomes])
    assert API_KEY not in "\n".join(logged)
    assert API_KEY not in caplog.text
    # httpx did log its requests, with the key hidden (so the check above can fail).
    assert "apikey=[redacted]" in caplog.text


def test_stock_quotes_are_offered_only_with_a_key():
    assert get_stock_quote.available(ToolSettings()) is False
    assert get_stock_quote.available(ToolSettings(stocks={"api_key": "k"})) is True
    assert get_weather.available(ToolSettings()) is True
    assert get_headlines.available(ToolSettings()) is True
    assert get_headlines.available(ToolSettings(news={"feeds": {}})) is False
