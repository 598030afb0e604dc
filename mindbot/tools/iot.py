"""Home devices over MQTT: read a device's state, switch it on or off after a spoken yes.

The LLM names a device from ``tools.mqtt.devices`` (the names are in the tools' descriptions);
topics and payloads come only from the settings, so nothing the LLM says can choose a topic.
A name is matched ignoring case, extra spaces and a leading "the"; one holding a wildcard,
a slash or a control character is refused before anything is sent.

States are read from the device's ``state_topic``: its retained message, else the next one
within ``state_wait_secs``. Payloads understood: plain ``ON``/``OFF`` (or the device's own
``payload_on``/``payload_off``), numbers, and JSON objects as Zigbee2MQTT and Tasmota send them
(``{"state": "ON", "brightness": 128}``, ``{"POWER": "ON", "Dimmer": 40}``,
``{"AM2301": {"Temperature": 21.5, "Humidity": 40}}``).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiomqtt
from loguru import logger

from mindbot.tools.base import (
    Tool,
    ToolContext,
    ToolError,
    ToolUnavailable,
    finite_number,
    tool,
)
from mindbot.tools.settings import MQTT_NAME_FORBIDDEN, MqttDevice, MqttSettings, ToolSettings

LABEL = "the home devices"
UNREACHABLE = "I couldn't reach the home devices."
TOO_SLOW = "The home devices took too long to answer."
MAX_NAME_CHARS = 100
#: Longest plain-text state read out as it is ("open", "heating"...).
MAX_WORD_CHARS = 40

# CONNACK codes for a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (134, 135).
_LOGIN_REFUSED = {4, 5, 134, 135}
_ON = {"on", "true"}
_OFF = {"off", "false"}


def make_tools(settings: ToolSettings) -> list[Tool]:
    """``get_device_state`` and ``set_device``, described with the configured devices' names.

    Args:
        settings: The tools' settings; ``mqtt.devices`` names the devices the LLM may use.
    """
    devices = settings.mqtt.devices
    readable = [name for name, device in devices.items() if device.state_topic]
    switchable = [name for name, device in devices.items() if device.command_topic]

    def describe_switch(arguments: Mapping[str, Any]) -> str:
        # Runs before the caller is asked: an unknown device or state is refused right away.
        name, device = _find(settings.mqtt, str(arguments.get("device", "")), "command_topic")
        return _command(name, device, str(arguments.get("state", "")))[2]

    read = tool(
        _get_device_state,
        name="get_device_state",
        label=LABEL,
        available=lambda s: bool(
            s.mqtt.host and any(d.state_topic for d in s.mqtt.devices.values())
        ),
    )
    switch = tool(
        _set_device,
        name="set_device",
        label=LABEL,
        confirm=describe_switch,
        available=lambda s: bool(
            s.mqtt.host and any(d.command_topic for d in s.mqtt.devices.values())
        ),
    )
    return [
        _with_devices(read, readable, devices),
        _with_devices(switch, switchable, devices),
    ]


async def _get_device_state(ctx: ToolContext, device: str) -> dict:
    """Read the current state of a home device (a light, plug, sensor...), e.g. is it on.

    Args:
        device: The device's name, exactly one of the devices listed here.
    """
    mqtt = ctx.settings.mqtt
    name, config = _find(mqtt, device, "state_topic")
    assert config.state_topic is not None
    async with _connect(mqtt, ctx.settings.timeout_secs) as client:
        await client.subscribe(config.state_topic, qos=1)
        payload = await _next_state(client, config.state_topic, _wait(ctx))
    if payload is None:
        return {
            "device": name,
            "state": "unknown",
            "summary": f"The {name} hasn't reported its state, so I don't know it right now.",
        }
    return _describe(name, config, payload)


async def _set_device(ctx: ToolContext, device: str, state: str) -> dict:
    """Switch a home device on or off, or set a dimmer's brightness.

    Args:
        device: The device's name, exactly one of the devices listed here.
        state: "on" or "off"; for a dimmer also a brightness percentage such as "40%".
    """
    mqtt = ctx.settings.mqtt
    name, config = _find(mqtt, device, "command_topic")
    topic, payload, action, wanted = _command(name, config, state)
    async with _connect(mqtt, ctx.settings.timeout_secs) as client:
        if config.state_topic:
            # Subscribed before publishing, so the device's echo cannot be missed.
            await client.subscribe(config.state_topic, qos=1)
        await client.publish(topic, payload, qos=1)
        logger.debug(f"iot: published to {topic!r} for {name!r}")
        echo = None
        if config.state_topic:
            echo = await _next_state(client, config.state_topic, _wait(ctx), fresh_only=True)
    result: dict[str, Any] = {"device": name, "sent": wanted["state"]}
    if "brightness_percent" in wanted:
        result["sent_brightness_percent"] = wanted["brightness_percent"]
    try:
        now = _describe(name, config, echo) if echo is not None else None
    except ToolError:
        now = None  # the command went out; an unreadable echo only leaves it unconfirmed
    if now is None:
        result["confirmed"] = False
        result["summary"] = (
            f"I sent the command to {action}, but it didn't report back, "
            "so I can't be sure it worked."
            if config.state_topic
            else f"I sent the command to {action}."
        )
        return result
    confirmed = _matches(now, wanted)
    result.update(confirmed=confirmed, state=now["state"])
    if "brightness_percent" in now:
        result["brightness_percent"] = now["brightness_percent"]
    result["summary"] = (
        _summary(name, config, now, now=True)
        if confirmed
        else f"I sent the command to {action}, but {_lower_first(now['summary'])}"
    )
    return result


def _wait(ctx: ToolContext) -> float:
    """How long to wait for a state report: well inside the call's time limit."""
    return min(ctx.settings.mqtt.state_wait_secs, ctx.settings.timeout_secs / 2)


# --- Devices -------------------------------------------------------------------------------


def _with_devices(base: Tool, names: list[str], devices: Mapping[str, MqttDevice]) -> Tool:
    """The tool with the device names in its description and as the ``device`` enum."""
    if names:
        listed = "; ".join(_device_line(name, devices[name]) for name in names)
        description = f"{base.description}\n\nDevices: {listed}."
    else:
        description = f"{base.description}\n\nNo devices are configured."
    properties = {key: dict(value) for key, value in base.properties.items()}
    if names:
        properties["device"]["enum"] = list(names)
    return replace(base, description=description, properties=properties)


def _device_line(name: str, device: MqttDevice) -> str:
    what = [device.description] if device.description else []
    if not device.command_topic:
        what.append("read only")
    elif device.kind == "dimmer":
        what.append("dimmable")
    return f"{name} ({', '.join(what)})" if what else name


def _normalize(name: str) -> str:
    key = " ".join(name.split()).casefold()
    return key[4:] if key.startswith("the ") else key


def _find(mqtt: MqttSettings, device: str, topic: str) -> tuple[str, MqttDevice]:
    """The configured device the LLM named, and its settings.

    Raises:
        ToolError: The name is malformed, unknown, or the device lacks ``topic``.
    """
    known = [name for name, config in mqtt.devices.items() if getattr(config, topic)]
    listing = ", ".join(known) if known else "none"
    if len(device) > MAX_NAME_CHARS or MQTT_NAME_FORBIDDEN & set(device) or not device.strip():
        raise ToolError(
            f"That isn't a device name. The devices I know are: {listing}.",
            kind="bad_arguments",
        )
    wanted = _normalize(device)
    for name, config in mqtt.devices.items():
        if _normalize(name) == wanted:
            if getattr(config, topic):
                return name, config
            what = "be switched from here" if topic == "command_topic" else "report its state"
            raise ToolError(f"The {name} can't {what}.", kind="rejected")
    raise ToolError(
        f"I don't know a device called {device!r}. The devices I know are: {listing}.",
        kind="not_found",
    )


def _command(name: str, device: MqttDevice, state: str) -> tuple[str, str, str, dict[str, Any]]:
    """What to publish for ``state``: (topic, payload, the action said aloud, expected state).

    Raises:
        ToolError: ``state`` is neither on nor off (nor, for a dimmer, a percentage).
    """
    assert device.command_topic is not None
    word = " ".join(state.lower().split())
    if word in ("on", "turn on", "switch on"):
        return device.command_topic, device.payload_on, f"turn the {name} on", {"state": "on"}
    if word in ("off", "turn off", "switch off"):
        return device.command_topic, device.payload_off, f"turn the {name} off", {"state": "off"}
    if device.kind == "dimmer":
        percent = _percent(word)
        if percent is not None:
            if percent == 0:
                return _command(name, device, "off")
            level = max(1, round(percent * device.brightness_scale / 100))
            payload = device.payload_brightness.replace("{brightness}", str(level))
            topic = device.brightness_topic or device.command_topic
            action = f"set the {name} to {percent}% brightness"
            return topic, payload, action, {"state": "on", "brightness_percent": percent}
        raise ToolError(
            f"The {name} can be set on, off or to a brightness from 0 to 100%.",
            kind="bad_arguments",
        )
    raise ToolError(f"The {name} can only be switched on or off.", kind="bad_arguments")


def _percent(word: str) -> int | None:
    number = word.removesuffix("percent").removesuffix("%").strip()
    try:
        value = float(number)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0 <= value <= 100:
        return None
    return round(value)


# --- MQTT ----------------------------------------------------------------------------------


@asynccontextmanager
async def _connect(mqtt: MqttSettings, timeout: float) -> AsyncIterator[aiomqtt.Client]:
    """A client logged in to the broker; MQTT failures leave as ``ToolError``s."""
    if not mqtt.host:
        raise ToolError("No MQTT broker is configured.", kind="unavailable")
    client = aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        identifier=f"mindbot-{secrets.token_hex(6)}",
        tls_context=await _tls(mqtt) if mqtt.tls else None,
        # A little under the session's own limit, so that a silent broker ends here, where the
        # half-open connection is closed, rather than in a cancellation.
        timeout=timeout * 0.8,
        keepalive=max(5, math.ceil(timeout * 2)),
    )
    client._client.connect_timeout = timeout * 0.8  # noqa: SLF001 - the blocking TCP connect
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as e:
        _abandon(client)
        raise _connect_error(e) from None
    except BaseException:
        _abandon(client)
        raise
    try:
        yield client
    except aiomqtt.MqttError as e:
        logger.debug(f"iot: MQTT failed ({e})")
        message = TOO_SLOW if "timed out" in str(e) else UNREACHABLE
        kind = "timeout" if message == TOO_SLOW else "unavailable"
        raise ToolError(message, kind=kind, retryable=kind == "unavailable") from None
    finally:
        try:
            await client.__aexit__(None, None, None)
        except aiomqtt.MqttError as e:
            logger.debug(f"iot: MQTT disconnect failed ({e})")


def _abandon(client: aiomqtt.Client) -> None:
    """Close a connection that was never accepted.

    aiomqtt leaves the socket of a failed or cancelled login open and watched by the event
    loop; paho's own close also unregisters it from the loop, through aiomqtt's callbacks.
    """
    client._client._sock_close()  # noqa: SLF001 - no public way to drop a half-open connection


async def _tls(mqtt: MqttSettings) -> ssl.SSLContext:
    cafile = str(mqtt.ca_file) if mqtt.ca_file else None
    # Loading certificates reads files: off the event loop.
    return await asyncio.to_thread(ssl.create_default_context, cafile=cafile)


def _connect_error(error: aiomqtt.MqttError) -> ToolError:
    code = getattr(error, "rc", None)
    code = getattr(code, "value", code)
    logger.debug(f"iot: MQTT connection failed ({error})")
    if code in _LOGIN_REFUSED:
        return ToolError(
            "The home devices turned down my login; the MQTT username or password needs checking.",
            kind="unavailable",
        )
    if "timed out" in str(error):
        return ToolError(TOO_SLOW, kind="timeout")
    if "certificate" in str(error).lower() or "ssl" in str(error).lower():
        return ToolError(
            "I couldn't make a secure connection to the home devices.", kind="unavailable"
        )
    return ToolUnavailable(UNREACHABLE)


async def _next_state(
    client: aiomqtt.Client, topic: str, wait: float, *, fresh_only: bool = False
) -> bytes | None:
    """The next message on ``topic`` within ``wait`` seconds (``fresh_only``: not retained)."""
    try:
        async with asyncio.timeout(wait):
            async for message in client.messages:
                if not message.topic.matches(topic) or (fresh_only and message.retain):
                    continue
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    return bytes(payload)
                return b"" if payload is None else str(payload).encode()
    except TimeoutError:
        return None
    return None


# --- Reading states ------------------------------------------------------------------------

# JSON keys (lower case) → (field, how to read it). Zigbee2MQTT and Tasmota names.
_READINGS: dict[str, str] = {
    "temperature": "temperature",
    "humidity": "humidity_percent",
    "battery": "battery_percent",
    "illuminance_lux": "illuminance_lux",
    "illuminance": "illuminance_lux",
    "position": "position_percent",
    "co2": "co2_ppm",
}
_STATE_KEYS = ("state", "power", "power1")


def _describe(name: str, device: MqttDevice, payload: bytes) -> dict[str, Any]:
    """A device's payload as a small dict with a spoken ``summary``.

    Raises:
        ToolError: The payload is not text, or not a state this module can read.
    """
    unreadable = ToolError(f"The {name} sent a state I couldn't read.", kind="failed")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise unreadable from None
    if not text:
        return {
            "device": name,
            "state": "unknown",
            "summary": f"The {name} hasn't reported its state, so I don't know it right now.",
        }
    if text[0] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            raise unreadable from None
        if not isinstance(data, dict):
            raise unreadable
        result = _from_json(name, device, data)
        if result is None:
            raise unreadable
    else:
        result = _from_text(device, text)
        if result is None:
            raise unreadable
    return {"device": name, **result, "summary": _summary(name, device, result)}


def _from_text(device: MqttDevice, text: str) -> dict[str, Any] | None:
    if text.casefold() == device.payload_on.casefold():
        return {"state": "on"}
    if text.casefold() == device.payload_off.casefold():
        return {"state": "off"}
    word = _word(text)
    if word is not None:
        return {"state": word}
    number = _number(text)
    if number is not None:
        return {"state": "reading", "value": number}
    return None


def _from_json(name: str, device: MqttDevice, data: dict[str, Any]) -> dict[str, Any] | None:
    # Tasmota nests sensor readings one level down ({"AM2301": {"Temperature": ...}}).
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for inner, item in value.items():
                flat.setdefault(str(inner).lower(), item)
        else:
            flat[str(key).lower()] = value
    result: dict[str, Any] = {}
    for key in _STATE_KEYS:
        value = flat.get(key)
        if isinstance(value, bool):
            result["state"] = "on" if value else "off"
        elif isinstance(value, str):
            state = _from_text(device, value)
            if state is not None and isinstance(state.get("state"), str):
                result["state"] = state["state"]
        if "state" in result:
            break
    brightness = _number(flat.get("brightness"))
    if brightness is not None:
        result["brightness_percent"] = _clamp_percent(brightness * 100 / device.brightness_scale)
    elif (dimmer := _number(flat.get("dimmer"))) is not None:
        result["brightness_percent"] = _clamp_percent(dimmer)
    for key, field_name in _READINGS.items():
        value = _number(flat.get(key))
        if value is not None and field_name not in result:
            result[field_name] = value
    watts = _number(flat.get("power"))
    if watts is not None:
        result["power_watts"] = watts
    if isinstance(flat.get("contact"), bool):  # Zigbee2MQTT: true means the contact is closed
        result["contact"] = "closed" if flat["contact"] else "open"
    if isinstance(flat.get("occupancy"), bool):
        result["occupancy"] = "someone there" if flat["occupancy"] else "nobody there"
    if not result:
        return None
    result.setdefault("state", "reading")
    return result


def _word(text: str) -> str | None:
    lowered = text.casefold()
    if lowered in _ON:
        return "on"
    if lowered in _OFF:
        return "off"
    if (
        len(text) <= MAX_WORD_CHARS
        and text.replace(" ", "").replace("_", "").replace("-", "").isalpha()
    ):
        return lowered.replace("_", " ")
    return None


def _number(value: Any) -> float | int | None:
    number = finite_number(value)
    if number is None:
        return None
    rounded = round(number, 1)
    return int(rounded) if rounded.is_integer() else rounded


def _clamp_percent(value: float) -> int:
    return max(0, min(100, round(value)))


def _summary(name: str, device: MqttDevice, result: dict[str, Any], *, now: bool = False) -> str:
    state = result["state"]
    if state == "reading":
        parts = []
        if "value" in result:
            parts.append(f"{result['value']} {device.unit}".strip())
        parts += _reading_parts(result)
        return f"The {name} reads {', '.join(parts)}." if parts else f"The {name} is reporting."
    sentence = f"The {name} is {'now ' if now else ''}{state}"
    if state == "on" and "brightness_percent" in result:
        sentence += f" at {result['brightness_percent']}% brightness"
    extras = _reading_parts(result)
    return sentence + (f", reading {', '.join(extras)}." if extras else ".")


def _reading_parts(result: dict[str, Any]) -> list[str]:
    spoken = {
        "temperature": "{} degrees",
        "humidity_percent": "{}% humidity",
        "battery_percent": "battery {}%",
        "illuminance_lux": "{} lux",
        "position_percent": "{}% open",
        "co2_ppm": "CO2 {} ppm",
        "power_watts": "{} watts",
        "contact": "{}",
        "occupancy": "{}",
    }
    return [template.format(result[key]) for key, template in spoken.items() if key in result]


def _matches(now: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if now.get("state") != wanted["state"]:
        return False
    if "brightness_percent" in wanted and "brightness_percent" in now:
        return abs(now["brightness_percent"] - wanted["brightness_percent"]) <= 2
    return True


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
