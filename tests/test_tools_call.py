"""Tools end to end: the LLM stand-in streams tool calls the way OpenAI does, MindBot runs the
tool inside the assistant pipeline during a simulated phone call, the result reaches the
follow-up LLM request, and the spoken reply goes out through TTS. Tools whose protocol needs a
server run against the real local server (SMTP, Radicale, Mosquitto, SQLite, HTTP replay)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from loguru import logger

from mindbot.harness import serve, simulated_call, ws_url
from mindbot.logs import configure_logging
from mindbot.standins import Text, ToolCall, ToolCalls
from mindbot.standins.openmeteo import OpenMeteoStandIn
from mindbot.storage import SQLiteStorage
from pipelines.assistant import run

from servers.http_api import HttpApiServer
from servers.mail import imap_server, smtp_server
from servers.mosquitto import publish, run_mosquitto, watch_messages
from servers.radicale import radicale_server
from servers.replay import Rule, replay_server

CALLER = "+15550107777"
EMAIL = {"to": "sam@example.com", "subject": "Running late", "body": "I'll be ten minutes late."}
DEVICES = {
    "porch light": {"command_topic": "home/porch/light/set", "state_topic": "home/porch/light"}
}


async def call(cloud_services, voice_cache, data_dir, said, **settings):
    """One simulated phone call to a MindBot on the stand-ins; the bot is stopped after."""
    bot = cloud_services.bot(data_dir=data_dir, **settings)
    try:
        async with serve(bot, run) as base_url:
            return await simulated_call(
                ws_url(base_url),
                said,
                from_number=CALLER,
                cache_dir=voice_cache,
                transcribe_replies=False,
            )
    finally:
        bot.stop()


def tool_results(llm) -> list[dict]:
    """Every tool result the LLM was sent, in order, across the calls of a test."""
    seen: dict[str, dict] = {}
    for request in llm.requests:
        for message in request.get("messages", []):
            if message["role"] != "tool":
                continue
            try:  # a call still running is sent as a placeholder, not JSON
                seen[message["tool_call_id"]] = json.loads(message["content"])
            except json.JSONDecodeError:
                pass
    return list(seen.values())


def spoken(cartesia) -> str:
    return " ".join(r.get("transcript", "") for r in cartesia.requests)


def stored_tool_calls(data_dir) -> list[dict]:
    storage = SQLiteStorage(data_dir / "mindbot.db")
    try:
        user = storage.find_user(CALLER)
        assert user is not None
        (session,) = storage.sessions_for_user(user.id)
        return [c for t in storage.turns(session.id) for c in (t.tool_calls or [])]
    finally:
        storage.close()


async def test_tools_run_inside_a_phone_call_and_are_audited(cloud_services, voice_cache, tmp_path):
    configure_logging("DEBUG")
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("calculate", {"expression": "12.5 * 3"})]),
        Text("Twelve and a half times three is thirty seven and a half."),
        ToolCalls([ToolCall("current_time", {"timezone": "Asia/Tokyo"})]),
        Text("It's evening in Tokyo."),
        ToolCalls(
            [
                ToolCall("open_pod_bay_doors", {}),
                ToolCall("calculate", {"expression": "__import__('os')"}),
                ToolCall("calculate", '{"expression": '),  # cut-off JSON
            ]
        ),
        Text("Sorry, I can't do that."),
    )
    try:
        await call(
            cloud_services,
            voice_cache,
            tmp_path,
            [
                "What is twelve and a half times three?",
                "What time is it in Tokyo?",
                "Open the pod bay doors.",
            ],
        )
    finally:
        logger.remove(sink)
    assert any("function call arguments: [redacted]" in w for w in warnings)
    assert not any('"expression"' in w for w in warnings)  # the LLM's words stay out

    chats = [r for r in llm.requests if r.get("stream")]
    offered = {tool["function"]["name"] for tool in chats[0]["tools"]}
    assert {"calculate", "current_time", "get_weather", "get_headlines"} <= offered
    assert "send_email" not in offered  # no SMTP server configured
    assert "You can use tools." in chats[0]["messages"][0]["content"]

    results = tool_results(llm)
    assert results[0] == {"ok": True, "result": {"expression": "12.5 * 3", "result": 37.5}}
    assert results[1]["ok"] is True and results[1]["result"]["timezone"] == "Asia/Tokyo"
    assert results[2]["error"] == "unknown_tool"
    assert results[3]["error"] == "bad_arguments"
    assert len(results) == 4  # Pipecat drops a call whose arguments are not JSON

    words = spoken(cloud_services.cartesia)
    assert "thirty seven and a half" in words and "Sorry, I can't do that." in words

    audit = stored_tool_calls(tmp_path)
    assert [(c["name"], c["status"]) for c in audit[:2]] == [
        ("calculate", "ok"),
        ("current_time", "ok"),
    ]
    assert audit[0]["arguments"] == {"expression": "12.5 * 3"}
    assert audit[0]["duration_ms"] >= 0 and audit[0]["attempts"] == 1
    assert {c["name"] for c in audit[2:]} >= {"open_pod_bay_doors", "calculate"}


async def test_a_slow_tool_gets_a_spoken_filler_and_a_timeout_answer(
    cloud_services, voice_cache, tmp_path
):
    module = tmp_path / "slow_tools.py"
    module.write_text(
        textwrap.dedent(
            '''
            import asyncio

            from mindbot.tools import ToolContext, tool

            @tool(label="the warehouse")
            async def check_stock(ctx: ToolContext, item: str) -> dict:
                """Check how many of an item are in stock.

                Args:
                    item: The item.
                """
                await asyncio.sleep(30)
                return {"item": item, "count": 3}
            '''
        )
    )
    persona_dir = tmp_path / "personas"
    persona_dir.mkdir()
    persona_dir.joinpath("shop.yaml").write_text(
        "name: shop\ndisplay_name: Shop\ninstructions: You help shop staff.\n"
        "greeting: Hello, shop here.\n"
        "tools: [slow_tools]\n"
    )
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("check_stock", {"item": "umbrellas"})]),
        Text("Sorry, the warehouse isn't answering right now."),
        Text("Anything else?"),
    )
    await call(
        cloud_services,
        voice_cache,
        tmp_path / "data",
        ["How many umbrellas do we have?", "Never mind thanks."],
        persona="shop",
        persona_dirs=[persona_dir],
        tools={"modules": [str(module)], "timeout_secs": 2.0, "filler_after_secs": 0.5},
    )
    chats = [r for r in llm.requests if r.get("stream")]
    offered = {t["function"]["name"] for t in chats[0]["tools"]}
    assert "check_stock" in offered and "get_weather" not in offered  # only the persona's
    (result,) = tool_results(llm)
    assert result == {
        "ok": False,
        "error": "timeout",
        "message": "The warehouse took too long to answer.",
    }
    words = spoken(cloud_services.cartesia)
    assert words.index("One moment, let me check.") < words.index("Sorry, the warehouse")
    assert "Anything else?" in words  # the call went on


def noon_zone() -> str:
    """A fixed-offset zone where it is now about noon, so "today" is the same day everywhere."""
    offset = 12 - datetime.now(UTC).hour
    return f"Etc/GMT{-offset:+d}"  # Etc/ names count the other way: Etc/GMT-5 is UTC+5


async def test_the_caller_confirms_side_effects_by_voice(cloud_services, voice_cache, tmp_path):
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("send_email", EMAIL)]),
        Text("Shall I email sam@example.com that you're running late?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("Done, it's sent."),
        ToolCalls([ToolCall("set_device", {"device": "porch light", "state": "on"})]),
        Text("Should I turn the porch light on?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("Okay, I'll leave it off."),
    )
    with smtp_server(username="sam", password="pw-123") as smtp, run_mosquitto() as broker:
        async with watch_messages(broker) as seen:
            await call(
                cloud_services,
                voice_cache,
                tmp_path,
                [
                    "Email Sam that I'm running late.",
                    "Yes please.",  # no comma: Piper's pause there can end the turn
                    "Turn on the porch light.",
                    "No thanks.",
                ],
                tools={
                    "email": {
                        "smtp_host": smtp.host,
                        "smtp_port": smtp.port,
                        "smtp_security": "none",
                        "username": "sam",
                        "password": "pw-123",
                        "from_address": "bot@example.com",
                    },
                    "mqtt": broker.mqtt_settings(devices=DEVICES),
                },
            )
            published = seen.on("home/porch/light/set")

    results = tool_results(llm)
    assert results[0]["needs_confirmation"] is True
    assert results[1]["ok"] is True  # sent after the caller's yes
    assert results[2]["needs_confirmation"] is True
    assert results[3]["ok"] is False and "said no" in results[3]["message"]

    (mail,) = smtp.received
    assert mail.rcpt_tos == ["sam@example.com"] and mail.message["Subject"] == "Running late"
    assert published == []  # the caller said no
    assert "Done, it's sent." in spoken(cloud_services.cartesia)

    audit = stored_tool_calls(tmp_path)
    statuses = [(c["name"], c["status"], c["confirmed"]) for c in audit]
    assert ("send_email", "awaiting_confirmation", False) in statuses
    assert ("send_email", "ok", True) in statuses
    assert ("confirm_action", "declined", False) in statuses
    assert all("pw-123" not in json.dumps(c) for c in audit)


async def test_read_tools_answer_from_real_servers(cloud_services, voice_cache, tmp_path):
    zone = noon_zone()
    today = datetime.now(ZoneInfo(zone)).replace(hour=15, minute=30, second=0, microsecond=0)
    shop = tmp_path / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
        db.executemany("INSERT INTO orders (status) VALUES (?)", [("shipped",)] * 7)
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("list_events", {"day": "today"})]),
        Text("You have the dentist at half past three."),
        ToolCalls(
            [
                ToolCall(
                    "query_database",
                    {"database": "shop", "sql": "SELECT COUNT(*) AS n FROM orders"},
                ),
                ToolCall("get_device_state", {"device": "porch light"}),
            ]
        ),
        Text("Seven orders shipped, and the porch light is on."),
        ToolCalls([ToolCall("check_email", {})]),
        Text("You have one unread email, about the invoice."),
    )
    with (
        radicale_server() as calendar,
        run_mosquitto() as broker,
        imap_server(username="sam", password="pw-123") as imap,
    ):
        calendar.add_event("Dentist", today)
        note = EmailMessage()
        note["From"], note["To"], note["Subject"] = "Ann <ann@example.com>", "sam@x", "Invoice"
        note.set_content("The invoice is attached.")
        imap.deliver(note)
        await publish(broker, "home/porch/light", "ON")
        await call(
            cloud_services,
            voice_cache,
            tmp_path / "data",
            [
                "What's on my calendar today?",
                "How many orders shipped and is the porch light on?",
                "Any new email?",
            ],
            tools={
                "timezone": zone,
                "calendar": {
                    "url": calendar.url,
                    "username": calendar.username,
                    "password": calendar.password,
                },
                "sql": {"databases": {"shop": {"url": f"sqlite:///{shop}"}}},
                "mqtt": broker.mqtt_settings(devices=DEVICES),
                "email": {
                    "imap_host": imap.host,
                    "imap_port": imap.port,
                    "imap_security": "none",
                    "username": "sam",
                    "password": "pw-123",
                },
            },
        )
    text = json.dumps(tool_results(llm))
    assert '"Dentist"' in text and "3:30 PM" in text
    assert '"n": 7' in text
    assert '"state": "on"' in text.lower() or "is on" in text.lower()
    assert '"Invoice"' in text and '"unread": 1' in text
    assert "Seven orders shipped" in spoken(cloud_services.cartesia)


async def test_web_tools_and_their_faults_over_a_call(cloud_services, voice_cache, tmp_path):
    llm = cloud_services.llm
    llm.script(
        ToolCalls([ToolCall("get_weather", {"place": "London"})]),
        Text("Light rain in London, eight degrees."),
        ToolCalls(
            [
                ToolCall("get_headlines", {"topic": "technology"}),
                ToolCall("get_stock_quote", {"symbol": "IBM"}),
                ToolCall("define_word", {"word": "hello"}),
            ]
        ),
        Text("Here are the headlines, IBM's price, and what hello means."),
        ToolCalls([ToolCall("get_weather", {"place": "Paris"})]),
        Text("Sorry, I can't get the weather right now."),
    )
    rules = [
        Rule("/feeds/tech.xml", file="feeds/bbc_technology.xml"),
        Rule(
            "/query",
            {"function": "GLOBAL_QUOTE", "symbol": "IBM"},
            file="stocks/alphavantage_ibm.json",
        ),
    ]
    with replay_server(rules) as replay, HttpApiServer() as api:
        async with OpenMeteoStandIn() as meteo:
            meteo_settings = {
                "geocoding_url": meteo.geocoding_url,
                "forecast_url": meteo.forecast_url,
            }
            settings = {
                "weather": meteo_settings,
                "news": {"feeds": {"technology": [f"{replay.url}/feeds/tech.xml"]}},
                "stocks": {"base_url": replay.url, "api_key": "av-key-123"},
                "connectors": {"values": {"dictionary_api_url": api.url}},
                "timeout_secs": 1.0,
            }
            said = [
                "What's the weather in London?",
                "Tell me the tech news and the IBM share price and what hello means.",
            ]
            # No memory: learning after the first call would take the next scripted reply.
            bot = cloud_services.bot(data_dir=tmp_path, tools=settings, memory=False)
            try:
                async with serve(bot, run) as base_url:
                    report = await simulated_call(
                        ws_url(base_url),
                        said,
                        from_number=CALLER,
                        cache_dir=voice_cache,
                        transcribe_replies=False,
                    )
                    await meteo.stop()  # the weather service goes down mid-call
                    report = await simulated_call(
                        ws_url(base_url),
                        ["What about Paris?", "Thanks bye."],
                        from_number=CALLER,
                        cache_dir=voice_cache,
                        transcribe_replies=False,
                    )
            finally:
                bot.stop()
    results = tool_results(llm)
    assert results[0]["result"]["now"]["conditions"] == "light rain"
    headlines, quote, word = results[1:4]
    assert headlines["ok"] is True and headlines["result"]["headlines"]
    assert (
        quote["ok"] is True and "IBM" in json.dumps(quote) and "av-key-123" not in json.dumps(quote)
    )
    assert word["ok"] is True and "hello" in json.dumps(word).lower()
    assert results[4] == {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the weather service.",
    }
    assert len(report.turns) == 2 and report.turns[1].speech is not None  # the call went on
    # "Thanks bye." is a voice command: the goodbye is MindBot's own, not the LLM's.
    assert "Goodbye, and thanks for calling!" in spoken(cloud_services.cartesia)
    assert llm.pending == 0


async def test_the_remaining_tools_over_a_call(cloud_services, voice_cache, tmp_path):
    """Free slots, a new event, the database's tables, a row written, Home Assistant, Slack."""
    zone = noon_zone()
    tomorrow = (datetime.now(ZoneInfo(zone)) + timedelta(days=1)).date()
    shop = tmp_path / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    kitchen = {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"}
    llm = cloud_services.llm
    llm.script(
        ToolCalls(
            [
                ToolCall("find_free_slots", {"day": "tomorrow", "duration_minutes": 60}),
                ToolCall("create_event", {"title": "Team lunch", "start": f"{tomorrow}T12:30"}),
            ]
        ),
        Text("You're free all day. Shall I add team lunch at half past twelve?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("Added."),
        ToolCalls(
            [
                ToolCall("describe_database", {"database": "shop"}),
                ToolCall("get_home_assistant_state", {"entity_id": "light.kitchen"}),
                ToolCall("call_home_assistant_service", kitchen),
            ]
        ),
        Text("The kitchen light is off. Turn it on?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("It's on."),
        ToolCalls(
            [
                ToolCall(
                    "write_database",
                    {"database": "shop", "sql": "INSERT INTO notes (text) VALUES ('restock')"},
                )
            ]
        ),
        Text("Shall I save that note?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("Saved."),
        ToolCalls([ToolCall("post_slack_message", {"text": "Restock the tents"})]),
        Text("Post it to the team channel?"),
        ToolCalls([ToolCall("confirm_action", {})]),
        Text("Posted."),
    )
    with radicale_server() as calendar, HttpApiServer() as api:
        await call(
            cloud_services,
            voice_cache,
            tmp_path / "data",
            [
                "Book team lunch tomorrow at half past twelve.",
                "Yes please.",
                "What tables are there and is the kitchen light on?",
                "Yes please.",
                "Make a note to restock.",
                "Yes please.",
                "Tell the team to restock the tents.",
                "Yes please.",
            ],
            memory=False,
            context_max_messages=200,  # a summary request would take the next scripted reply
            tools={
                "timezone": zone,
                "calendar": {
                    "url": calendar.url,
                    "username": calendar.username,
                    "password": calendar.password,
                },
                "sql": {"databases": {"shop": {"url": f"sqlite:///{shop}", "allow_writes": True}}},
                "connectors": {
                    "values": {"home_assistant_url": api.url, "slack_api_url": api.url + "/api"}
                    | {"slack_channel": "C024BE91L"},
                    "secrets": {
                        "home_assistant_token": api.ha_token,
                        "slack_bot_token": api.slack_token,
                    },
                },
            },
        )
        (event,) = calendar.events()
        requests = api.requests()
    results = tool_results(llm)
    assert results[0]["ok"] is True and results[1]["needs_confirmation"] is True
    assert results[2]["ok"] is True  # created after the yes
    assert str(event["SUMMARY"]) == "Team lunch"
    assert event["DTSTART"].dt.astimezone(ZoneInfo(zone)).strftime("%H:%M") == "12:30"
    assert "notes" in json.dumps(results[3])
    assert results[4]["ok"] is True and results[5]["needs_confirmation"] is True
    assert results[6]["ok"] is True
    with sqlite3.connect(shop) as db:
        assert db.execute("SELECT text FROM notes").fetchall() == [("restock",)]
    posted = [r for r in requests if r.method == "POST"]
    assert [r.path for r in posted] == ["/api/services/light/turn_on", "/api/chat.postMessage"]
    assert posted[1].json["text"] == "Restock the tents"
    assert "Posted." in spoken(cloud_services.cartesia)
