"""The MQTT device tools against a real Mosquitto broker (see ``servers.mosquitto``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time

import httpx
import pytest
from pydantic import ValidationError

from mindbot.harness import free_port
from mindbot.tools import ToolContext, ToolRegistry, ToolSession, ToolSettings
from mindbot.tools.iot import make_tools

from servers.mosquitto import play_device, publish, run_mosquitto, watch_messages


@pytest.fixture
def broker():
    with run_mosquitto() as running:
        yield running


@pytest.fixture
def topics():
    """Topics unique to the test, as a real home might name them."""
    home = f"home-{secrets.token_hex(3)}"
    return {
        "light_set": f"{home}/living/light/set",
        "light": f"{home}/living/light",
        "lamp_set": f"zigbee2mqtt/{home}/hall lamp/set",
        "lamp": f"zigbee2mqtt/{home}/hall lamp",
        "sensor": f"tele/{home}/bedroom/SENSOR",
        "plug_set": f"cmnd/{home}/plug/POWER",
    }


def devices(topics: dict[str, str]) -> dict:
    return {
        "living room light": {"command_topic": topics["light_set"], "state_topic": topics["light"]},
        "hall lamp": {
            "command_topic": topics["lamp_set"],
            "state_topic": topics["lamp"],
            "kind": "dimmer",
        },
        "bedroom sensor": {"state_topic": topics["sensor"], "description": "temperature"},
        "coffee machine": {"command_topic": topics["plug_set"]},
    }


def tool_settings(broker, topics, **mqtt) -> ToolSettings:
    values = broker.mqtt_settings(devices=devices(topics), state_wait_secs=0.5)
    values.update(mqtt)
    return ToolSettings(timeout_secs=3, retries=1, mqtt=values)


@contextlib.asynccontextmanager
async def tool_session(settings: ToolSettings, reports: list | None = None):
    async with httpx.AsyncClient() as http:
        context = ToolContext(settings=settings, http=http)
        on_call = reports.append if reports is not None else None
        yield ToolSession(make_tools(settings), context, on_call=on_call)


# --- Reading states ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "topic", "payload", "expected", "summary"),
    [
        ("living room light", "light", "ON", {"state": "on"}, "The living room light is on."),
        ("living room light", "light", "off", {"state": "off"}, "The living room light is off."),
        (
            "hall lamp",
            "lamp",
            json.dumps({"state": "ON", "brightness": 127, "linkquality": 87}),
            {"state": "on", "brightness_percent": 50},
            "The hall lamp is on at 50% brightness.",
        ),
        (
            "bedroom sensor",
            "sensor",
            json.dumps(
                {"Time": "2025-01-05T07:00:00", "AM2301": {"Temperature": 21.46, "Humidity": 40}}
            ),
            {"state": "reading", "temperature": 21.5, "humidity_percent": 40},
            "The bedroom sensor reads 21.5 degrees, 40% humidity.",
        ),
        ("bedroom sensor", "sensor", "19.25", {"state": "reading", "value": 19.2}, None),
    ],
)
async def test_the_state_comes_from_the_retained_message(
    broker, topics, device, topic, payload, expected, summary
):
    await publish(broker, topics[topic], payload)
    async with tool_session(tool_settings(broker, topics)) as session:
        started = time.perf_counter()
        result = await session.invoke("get_device_state", {"device": device})
    assert result["ok"], result
    assert {key: result["result"][key] for key in expected} == expected
    assert result["result"]["device"] == device
    if summary:
        assert result["result"]["summary"] == summary
    # A retained state answers at once, without waiting for a fresh report.
    assert time.perf_counter() - started < 0.45


async def test_a_device_without_a_retained_state_is_waited_for(broker, topics):
    async with tool_session(tool_settings(broker, topics, state_wait_secs=2)) as session:
        reading = asyncio.create_task(session.invoke("get_device_state", {"device": "hall lamp"}))
        await asyncio.sleep(0.3)
        await publish(broker, topics["lamp"], '{"state": "OFF", "brightness": 0}', retain=False)
        result = await reading
    assert result["ok"], result
    assert result["result"]["state"] == "off"
    assert result["result"]["summary"] == "The hall lamp is off."


async def test_a_silent_device_has_an_unknown_state(broker, topics):
    async with tool_session(tool_settings(broker, topics)) as session:
        started = time.perf_counter()
        result = await session.invoke("get_device_state", {"device": "living room light"})
    assert result["ok"], result
    assert result["result"]["state"] == "unknown"
    assert "don't know" in result["result"]["summary"]
    assert 0.4 < time.perf_counter() - started < 2.5


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00ON", b'{"state": "ON"', b"[1, 2]", b"x" * 300])
async def test_an_unreadable_state_is_an_error_not_a_crash(broker, topics, payload):
    await publish(broker, topics["light"], payload)
    async with tool_session(tool_settings(broker, topics)) as session:
        result = await session.invoke("get_device_state", {"device": "living room light"})
    assert result == {
        "ok": False,
        "error": "failed",
        "message": "The living room light sent a state I couldn't read.",
    }


async def test_device_names_match_ignoring_case_spaces_and_the(broker, topics):
    await publish(broker, topics["light"], "ON")
    async with tool_session(tool_settings(broker, topics)) as session:
        for spoken in ("  LIVING   room Light ", "the living room light"):
            result = await session.invoke("get_device_state", {"device": spoken})
            assert result["ok"], result
            assert result["result"]["device"] == "living room light"
            assert result["result"]["state"] == "on"


async def test_a_device_that_does_not_report_its_state_says_so(broker, topics):
    async with tool_session(tool_settings(broker, topics)) as session:
        result = await session.invoke("get_device_state", {"device": "coffee machine"})
    assert result["ok"] is False
    assert result["message"] == "The coffee machine can't report its state."


# --- Switching -----------------------------------------------------------------------------


async def test_switching_waits_for_a_yes_then_publishes_the_configured_payload(broker, topics):
    reports = []
    settings = tool_settings(
        broker,
        topics,
        devices={
            "living room light": {
                "command_topic": topics["light_set"],
                "state_topic": topics["light"],
                "payload_on": "turn_on",
                "payload_off": "turn_off",
            }
        },
    )
    async with (
        play_device(broker, topics["light_set"], topics["light"], initial="turn_off") as commands,
        watch_messages(broker) as seen,
        tool_session(settings, reports) as session,
    ):
        asked = await session.invoke("set_device", {"device": "Living Room Light", "state": "ON"})
        assert asked["needs_confirmation"] is True
        assert asked["action"] == "turn the living room light on"
        await asyncio.sleep(0.3)
        assert seen.published() == [] and commands == []

        done = await session.invoke(
            "confirm_action", {}, user_turns=["turn on the living room light", "yes please"]
        )
        assert done["ok"], done
        assert done["result"] == {
            "device": "living room light",
            "sent": "on",
            "confirmed": True,
            "state": "on",
            "summary": "The living room light is now on.",
        }
        assert commands == [b"turn_on"]
    assert seen.published() == [(topics["light_set"], b"turn_on"), (topics["light"], b"turn_on")]
    assert [(r.name, r.status, r.confirmed) for r in reports] == [
        ("set_device", "awaiting_confirmation", False),
        ("set_device", "ok", True),
    ]


async def test_a_no_publishes_nothing(broker, topics):
    async with (
        play_device(broker, topics["light_set"], topics["light"], initial="ON") as commands,
        watch_messages(broker) as seen,
        tool_session(tool_settings(broker, topics)) as session,
    ):
        asked = await session.invoke("set_device", {"device": "living room light", "state": "off"})
        assert asked["action"] == "turn the living room light off"
        declined = await session.invoke(
            "confirm_action", {}, user_turns=["turn off the light", "no, leave it"]
        )
        assert declined["ok"] is False and declined["error"] == "not_confirmed"
        assert session.pending_action is None
    assert seen.published() == [] and commands == []


async def test_a_dimmer_gets_its_brightness_in_its_own_payload(broker, topics):
    def zigbee_lamp(command: bytes) -> bytes:
        wanted = json.loads(command)
        return json.dumps({"state": wanted["state"], "brightness": wanted["brightness"]}).encode()

    async with (
        play_device(broker, topics["lamp_set"], topics["lamp"], reply=zigbee_lamp) as commands,
        tool_session(tool_settings(broker, topics)) as session,
    ):
        asked = await session.invoke("set_device", {"device": "hall lamp", "state": "40%"})
        assert asked["action"] == "set the hall lamp to 40% brightness"
        done = await session.invoke("confirm_action", {}, user_turns=["dim it", "yes"])
    assert commands == [b'{"state": "ON", "brightness": 102}']
    assert done["ok"], done
    assert done["result"]["confirmed"] is True
    assert done["result"]["summary"] == "The hall lamp is now on at 40% brightness."


async def test_a_device_that_does_not_echo_is_reported_unconfirmed(broker, topics):
    async with (
        watch_messages(broker) as seen,
        play_device(broker, topics["light_set"], topics["light"], reply=lambda c: None),
        tool_session(tool_settings(broker, topics)) as session,
    ):
        await session.invoke("set_device", {"device": "living room light", "state": "on"})
        done = await session.invoke("confirm_action", {}, user_turns=["light on", "yes please"])
        await seen.wait_for(topics["light_set"])
    assert done["ok"], done
    assert done["result"]["confirmed"] is False
    assert "can't be sure" in done["result"]["summary"]


async def test_a_device_without_a_state_topic_is_just_sent_the_command(broker, topics):
    async with (
        watch_messages(broker) as seen,
        tool_session(tool_settings(broker, topics)) as session,
    ):
        await session.invoke("set_device", {"device": "coffee machine", "state": "on"})
        done = await session.invoke("confirm_action", {}, user_turns=["coffee", "yes please"])
        await seen.wait_for(topics["plug_set"])
    assert done["result"]["summary"] == "I sent the command to turn the coffee machine on."
    assert seen.published() == [(topics["plug_set"], b"ON")]


# --- Bad arguments and injection -----------------------------------------------------------


@pytest.mark.parametrize(
    "device",
    [
        "#",
        "+",
        "home/#",
        "living room light/../x",
        "living room light\x00",
        "living+room light",
        "living room light/#",
        "",
        "x" * 500,
    ],
)
async def test_device_names_that_look_like_topics_are_refused(broker, topics, device):
    async with (
        watch_messages(broker) as seen,
        play_device(broker, topics["light_set"], topics["light"]) as commands,
        tool_session(tool_settings(broker, topics)) as session,
    ):
        read = await session.invoke("get_device_state", {"device": device})
        switch = await session.invoke("set_device", {"device": device, "state": "on"})
        confirm = await session.invoke("confirm_action", {}, user_turns=["do it", "yes please"])
    for result in (read, switch):
        assert result["ok"] is False and result["error"] == "bad_arguments", result
    assert "living room light" in switch["message"]
    assert confirm["ok"] is False and session.pending_action is None
    assert seen.published() == [] and commands == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"device": "garage door", "state": "on"}, "not_found"),
        ({"device": "living room light", "state": '{"state": "ON"}'}, "bad_arguments"),
        ({"device": "living room light", "state": "ON\x00"}, "bad_arguments"),
        ({"device": "living room light", "state": "50%"}, "bad_arguments"),
        ({"device": "hall lamp", "state": "150%"}, "bad_arguments"),
        ({"device": "bedroom sensor", "state": "on"}, "rejected"),
        ({"device": "living room light", "state": "on", "topic": "home/#"}, "bad_arguments"),
    ],
)
async def test_bad_switch_requests_are_refused_before_asking(broker, topics, arguments, error):
    async with (
        watch_messages(broker) as seen,
        tool_session(tool_settings(broker, topics)) as session,
    ):
        result = await session.invoke("set_device", arguments)
        confirm = await session.invoke("confirm_action", {}, user_turns=["go", "yes please"])
    assert result["ok"] is False and result["error"] == error, result
    assert "needs_confirmation" not in result
    assert confirm["error"] == "not_confirmed"
    assert seen.published() == []


async def test_an_unknown_device_error_lists_the_known_ones(broker, topics):
    async with tool_session(tool_settings(broker, topics)) as session:
        result = await session.invoke("get_device_state", {"device": "garage door"})
    assert result == {
        "ok": False,
        "error": "not_found",
        "message": "I don't know a device called 'garage door'. The devices I know are: "
        "living room light, hall lamp, bedroom sensor.",
    }


@pytest.mark.parametrize(
    "device",
    [
        {"command_topic": "home/#"},
        {"command_topic": "home/+/set"},
        {"state_topic": "home/lights/#"},
        {"command_topic": "$SYS/broker"},
        {"command_topic": "home/light\x00/set"},
        {"command_topic": "home/lamp/set", "kind": "dimmer", "payload_brightness": "50"},
        {},
    ],
)
def test_unsafe_device_topics_are_refused_when_settings_load(device):
    with pytest.raises(ValidationError):
        ToolSettings(mqtt={"host": "127.0.0.1", "devices": {"lamp": device}})


@pytest.mark.parametrize("names", [["home/#"], ["lamp", "LAMP "], ["lamp+"], [" "]])
def test_unsafe_or_clashing_device_names_are_refused_when_settings_load(names):
    configured = {name: {"state_topic": f"home/{i}"} for i, name in enumerate(names)}
    with pytest.raises(ValidationError):
        ToolSettings(mqtt={"host": "127.0.0.1", "devices": configured})


def test_the_llm_sees_the_device_names_and_only_configured_tools_are_offered(topics):
    settings = ToolSettings(mqtt={"host": "127.0.0.1", "devices": devices(topics)})
    read, switch = make_tools(settings)
    assert read.description.endswith(
        "Devices: living room light; hall lamp (dimmable); bedroom sensor (temperature, read only)."
    )
    assert read.properties["device"]["enum"] == ["living room light", "hall lamp", "bedroom sensor"]
    assert switch.properties["device"]["enum"] == [
        "living room light",
        "hall lamp",
        "coffee machine",
    ]
    assert "bedroom sensor" not in switch.description
    assert all(topic not in read.description + switch.description for topic in topics.values())

    for configured, offered in (
        (settings, {"get_device_state", "set_device"}),
        (ToolSettings(), set()),
    ):
        registry = ToolRegistry(configured)
        registry.load("mindbot.tools.iot", group="iot")
        assert {t.name for t in registry.select(["iot"])} == offered


# --- Broker failures -----------------------------------------------------------------------


async def test_a_wrong_password_is_a_clear_error(broker, topics):
    settings = tool_settings(broker, topics, password="not-the-password")
    async with tool_session(settings) as session:
        result = await session.invoke("get_device_state", {"device": "living room light"})
    assert result["ok"] is False and result["error"] == "unavailable"
    assert "password" in result["message"]
    assert "not-the-password" not in result["message"]
    broker.wait_for_log("not authorised")


async def test_a_broker_that_is_down_makes_the_devices_unavailable(topics):
    down = ToolSettings(
        timeout_secs=3,
        retries=1,
        mqtt={"host": "127.0.0.1", "port": free_port(), "devices": devices(topics)},
    )
    async with tool_session(down) as session:
        read = await session.invoke("get_device_state", {"device": "living room light"})
        await session.invoke("set_device", {"device": "living room light", "state": "on"})
        switch = await session.invoke("confirm_action", {}, user_turns=["on", "yes please"])
    unavailable = {
        "ok": False,
        "error": "unavailable",
        "message": "I couldn't reach the home devices.",
    }
    assert read == unavailable
    assert switch == unavailable


async def test_a_broker_that_never_answers_times_out(topics):
    closed = []

    async def silent(reader, writer):
        await reader.read()  # accept the connection, never send CONNACK
        closed.append(True)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ToolSettings(
        timeout_secs=0.5, mqtt={"host": "127.0.0.1", "port": port, "devices": devices(topics)}
    )
    async with server, tool_session(settings) as session:
        started = time.perf_counter()
        result = await session.invoke("get_device_state", {"device": "living room light"})
    assert result == {
        "ok": False,
        "error": "timeout",
        "message": "The home devices took too long to answer.",
    }
    assert time.perf_counter() - started < 2.5
    await asyncio.sleep(0.1)
    assert closed == [True], "the half-open connection was left open"


async def test_devices_are_reached_over_tls_with_the_configured_ca(topics):
    with run_mosquitto(tls=True) as secure:
        await publish(secure, topics["light"], "ON")
        async with tool_session(tool_settings(secure, topics)) as session:
            result = await session.invoke("get_device_state", {"device": "living room light"})
        assert result["ok"], result
        assert result["result"]["state"] == "on"

        untrusted = tool_settings(secure, topics, ca_file=None)
        async with tool_session(untrusted) as session:
            result = await session.invoke("get_device_state", {"device": "living room light"})
        assert result["ok"] is False and result["error"] == "unavailable"
        assert "secure connection" in result["message"]
