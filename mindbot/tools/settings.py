"""The tools' settings: endpoints, credentials (``SecretStr``) and limits, one section per tool.

They live under ``Settings.tools``, so they come from the same places as every other setting:
``MINDBOT_TOOLS__<SECTION>__<FIELD>`` environment variables (``__`` separates the levels; a dict or
list is JSON), or the ``tools:`` section of the YAML settings file (``mindbot.yaml``)::

    tools:
      timezone: Europe/London
      email:
        smtp_host: smtp.example.com
        username: bot@example.com
        password: ...            # a SecretStr: never logged, never echoed in errors
      mqtt:
        host: 192.168.1.10
        devices:
          living room light: {command_topic: home/living/light/set, state_topic: home/living/light}

A tool whose section is not configured (no SMTP host, no calendar URL...) is simply not offered
to the LLM; the ones that need nothing (time, calculator, weather, news) always are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeatherSettings(_Section):
    """Open-Meteo (no key needed)."""

    geocoding_url: str = "https://geocoding-api.open-meteo.com/v1/search"
    forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    units: Literal["metric", "imperial"] = "metric"


class NewsSettings(_Section):
    """RSS/Atom feeds per topic; the first topic is the default."""

    feeds: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "top stories": ["https://feeds.bbci.co.uk/news/rss.xml"],
            "world": ["https://feeds.bbci.co.uk/news/world/rss.xml"],
            "technology": ["https://feeds.bbci.co.uk/news/technology/rss.xml"],
            "business": ["https://feeds.bbci.co.uk/news/business/rss.xml"],
            "science": ["https://feeds.bbci.co.uk/news/science_and_environment/rss.xml"],
        }
    )
    max_headlines: int = Field(default=3, ge=1, le=10)


class StocksSettings(_Section):
    """A quote provider: ``alphavantage`` (GLOBAL_QUOTE) or ``finnhub`` (/quote)."""

    provider: Literal["alphavantage", "finnhub"] = "alphavantage"
    base_url: str | None = Field(default=None, description="Default: the provider's own.")
    api_key: SecretStr | None = None


class CalendarSettings(_Section):
    """A CalDAV calendar (Radicale, Nextcloud, Fastmail, iCloud, Google's CalDAV...)."""

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    calendar: str | None = Field(default=None, description="Calendar name; default: the first.")
    working_hours: tuple[int, int] = Field(default=(9, 17), description="For free slots.")


class EmailSettings(_Section):
    """SMTP to send, IMAP to read."""

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    imap_host: str | None = None
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_security: Literal["ssl", "starttls", "none"] = "ssl"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str | None = Field(default=None, description="Default: the username.")
    tls_ca_file: Path | None = Field(
        default=None,
        description="CA bundle for servers with a private certificate; default: the system's.",
    )


class SqlDatabase(_Section):
    """One database the LLM may query."""

    url: str = Field(description="sqlite:///path/to/file.db or postgresql://user@host/db")
    password: SecretStr | None = Field(
        default=None, description="PostgreSQL password, if not in the URL (never logged)."
    )
    description: str = Field(default="", description="What it holds, told to the LLM.")
    allow_writes: bool = Field(default=False, description="Offer a write tool (with confirmation).")
    row_limit: int = Field(default=20, ge=1, le=1000)
    timeout_secs: float = Field(default=5.0, gt=0)
    max_cell_chars: int = Field(
        default=200, ge=10, le=5000, description="Longer text values are cut in query results."
    )


class SqlSettings(_Section):
    databases: dict[str, SqlDatabase] = Field(default_factory=dict)


class MqttDevice(_Section):
    """A device reached over MQTT; the LLM names it, never a topic.

    Topics are checked when the settings load: no wildcards (``+``, ``#``), no control
    characters, and no ``$`` system topics for commands.
    """

    command_topic: str | None = Field(default=None, description="Where commands are published.")
    state_topic: str | None = Field(default=None, description="Where the device reports state.")
    payload_on: str = "ON"
    payload_off: str = "OFF"
    description: str = ""
    kind: Literal["switch", "dimmer"] = Field(
        default="switch", description="A dimmer also takes a brightness, 0 to 100%."
    )
    brightness_topic: str | None = Field(
        default=None, description="Where brightness commands go; default: the command topic."
    )
    payload_brightness: str = Field(
        default='{"state": "ON", "brightness": {brightness}}',
        description="Brightness command; {brightness} is 0..brightness_scale (Zigbee2MQTT "
        "style by default; Tasmota: brightness_topic cmnd/NAME/Dimmer, payload {brightness}, "
        "scale 100).",
    )
    brightness_scale: int = Field(
        default=254, ge=1, le=65535, description="The device's full brightness (Zigbee: 254)."
    )
    unit: str = Field(default="", description="Unit of a plain number state, e.g. degrees.")

    @field_validator("command_topic", "brightness_topic")
    @classmethod
    def _publishable(cls, value: str | None) -> str | None:
        if value is not None:
            _check_topic(value)
            if value.startswith("$"):
                raise ValueError(f"{value!r}: commands cannot go to $ system topics")
        return value

    @field_validator("state_topic")
    @classmethod
    def _single_topic(cls, value: str | None) -> str | None:
        if value is not None:
            _check_topic(value)
        return value

    @model_validator(mode="after")
    def _usable(self) -> MqttDevice:
        if not self.command_topic and not self.state_topic:
            raise ValueError("a device needs a command_topic, a state_topic or both")
        if self.kind == "dimmer" and "{brightness}" not in self.payload_brightness:
            raise ValueError("payload_brightness must contain {brightness}")
        return self


def _check_topic(topic: str) -> None:
    """Raises ValueError for a topic that is not one plain MQTT topic name."""
    if not topic.strip():
        raise ValueError("a topic cannot be empty")
    if "+" in topic or "#" in topic:
        raise ValueError(f"{topic!r}: wildcards (+, #) are not allowed in a device topic")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in topic):
        raise ValueError(f"{topic!r}: control characters are not allowed in a topic")
    if len(topic.encode()) > 65535:
        raise ValueError("a topic is at most 65535 bytes")


#: Characters a device name may not contain (MQTT wildcards, topic levels, control characters).
MQTT_NAME_FORBIDDEN = frozenset("#+/\\") | frozenset(map(chr, [*range(0x20), 0x7F]))


class MqttSettings(_Section):
    """An MQTT broker and the devices on it the assistant may read or switch."""

    host: str | None = None
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = Field(
        default=None, description="CA certificate for TLS; default: the system's."
    )
    state_wait_secs: float = Field(
        default=1.5,
        gt=0,
        le=10,
        description="How long to wait for a device that has no retained state, or its echo.",
    )
    devices: dict[str, MqttDevice] = Field(default_factory=dict)

    @field_validator("devices")
    @classmethod
    def _distinct_names(cls, devices: dict[str, MqttDevice]) -> dict[str, MqttDevice]:
        seen: set[str] = set()
        for name in devices:
            key = " ".join(name.split()).casefold()
            if not key:
                raise ValueError("a device name cannot be empty")
            if MQTT_NAME_FORBIDDEN & set(name):
                raise ValueError(f"device name {name!r}: no /, \\, +, # or control characters")
            if key in seen:
                raise ValueError(f"two devices are called {name!r} (names ignore case)")
            seen.add(key)
        return devices


class ConnectorSettings(_Section):
    """HTTP connectors declared in YAML, and the values their templates refer to."""

    dirs: list[Path] = Field(
        default_factory=list, description="More folders of connector YAML files."
    )
    values: dict[str, str] = Field(
        default_factory=dict, description="Values for {values.NAME} in connector templates."
    )
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Secrets for {secrets.NAME} in connector templates."
    )


class ToolSettings(_Section):
    """Settings shared by every tool, and one section per built-in tool."""

    timeout_secs: float = Field(default=8.0, gt=0, description="Default per-attempt timeout.")
    retries: int = Field(default=2, ge=0, le=5, description="Retries of read-only tools.")
    filler_after_secs: float = Field(
        default=0.7, ge=0, description="Say a filler when a tool has not answered by then."
    )
    filler: str = "One moment, let me check."
    confirm_within_secs: float = Field(
        default=120.0, gt=0, description="How long a proposed action waits for a spoken yes."
    )
    timezone: str = Field(default="UTC", description="For callers who have not set their own.")
    modules: list[str] = Field(
        default_factory=list,
        description="More tools: importable modules or .py files that define @tool functions.",
    )
    weather: WeatherSettings = Field(default_factory=WeatherSettings)
    news: NewsSettings = Field(default_factory=NewsSettings)
    stocks: StocksSettings = Field(default_factory=StocksSettings)
    calendar: CalendarSettings = Field(default_factory=CalendarSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    sql: SqlSettings = Field(default_factory=SqlSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    connectors: ConnectorSettings = Field(default_factory=ConnectorSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value
