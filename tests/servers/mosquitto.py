"""A real Mosquitto broker for tests, and helpers to watch it and to play a device on it.

``run_mosquitto()`` starts ``/usr/sbin/mosquitto`` in the foreground on a free loopback port,
with a password file (anonymous clients refused), no persistence and a log in its temporary
folder; it is stopped by its PID (terminate, then kill) when the ``with`` block ends::

    with run_mosquitto() as broker:
        settings = ToolSettings(mqtt=broker.mqtt_settings(devices={...}))
        async with watch_messages(broker) as seen:        # everything published, in order
            async with play_device(broker, "home/light/set", "home/light", initial="OFF"):
                ...
        assert seen.on("home/light/set") == [b"ON"]

``run_mosquitto(tls=True)`` serves MQTT over TLS with a fresh self-signed certificate for
127.0.0.1 (``broker.ca_file`` verifies it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from mindbot.harness import free_port

from servers import stop_process

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@dataclass
class Broker:
    """A running broker: where it listens, who may log in, and its log."""

    host: str
    port: int
    username: str
    password: str
    folder: Path
    process: subprocess.Popen
    ca_file: Path | None = None

    @property
    def pid(self) -> int:
        """The broker's process id."""
        return self.process.pid

    @property
    def log(self) -> str:
        """What the broker has logged so far."""
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """The log, once ``text`` is in it (the broker writes its log a little later)."""
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the broker's log:\n{self.log[-2000:]}")
            time.sleep(0.02)
        return self.log

    def mqtt_settings(self, **overrides: Any) -> dict[str, Any]:
        """``tools.mqtt`` settings that reach this broker (``overrides`` win)."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
        }
        if self.ca_file is not None:
            values.update(tls=True, ca_file=self.ca_file)
        values.update(overrides)
        return values

    def client(self, **options: Any) -> aiomqtt.Client:
        """An MQTT client logged in to this broker (use it as ``async with``)."""
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=f"test-{secrets.token_hex(4)}",
            tls_context=tls,
            timeout=5,
            **options,
        )


@contextlib.contextmanager
def run_mosquitto(
    *, username: str = "mindbot", password: str | None = None, tls: bool = False
) -> Iterator[Broker]:
    """Run Mosquitto on a free loopback port until the block ends.

    Args:
        username: The one user the broker accepts.
        password: Their password; default: a random one.
        tls: Serve MQTT over TLS with a new self-signed certificate for 127.0.0.1.
    """
    if not Path(MOSQUITTO).exists():
        pytest.skip("Mosquitto is not installed (make test installs it: scripts/test-packages.sh)")
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-"))
    password = password or secrets.token_urlsafe(12)
    port = free_port()
    subprocess.run(
        [MOSQUITTO_PASSWD, "-b", "-c", str(folder / "passwords"), username, password],
        check=True,
        capture_output=True,
    )
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {folder / 'passwords'}",
        "persistence false",
        f"log_dest file {folder / 'mosquitto.log'}",
        "log_type all",
        "connection_messages true",
        # Run as root, Mosquitto would otherwise switch to a "mosquitto" user that cannot read
        # the temporary folder.
        "user root",
    ]
    ca_file = None
    if tls:
        ca_file = _self_signed(folder)
        lines += [f"certfile {ca_file}", f"keyfile {folder / 'key.pem'}"]
    (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(folder / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    broker = Broker("127.0.0.1", port, username, password, folder, process, ca_file)
    try:
        _wait_for_port(broker)
        yield broker
    finally:
        _stop(process)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


def _self_signed(folder: Path) -> Path:
    """A certificate (its own CA) for 127.0.0.1 and localhost, with its key in key.pem."""
    cert = folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(folder / "key.pem"), "-out", str(cert)),
            *("-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert


def _wait_for_port(broker: Broker, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            errors = broker.process.stderr.read().decode() if broker.process.stderr else ""
            raise RuntimeError(f"mosquitto exited early:\n{errors}\n{broker.log}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((broker.host, broker.port), 0.2),
        ):
            return
        time.sleep(0.02)
    raise RuntimeError(f"mosquitto did not listen on {broker.port}:\n{broker.log}")


def _stop(process: subprocess.Popen) -> None:
    stop_process(process)


@dataclass
class Seen:
    """The messages a watcher received, as ``(topic, payload, retained)`` in arrival order."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def on(self, topic: str) -> list[bytes]:
        """The payloads published to ``topic`` (not counting retained ones replayed)."""
        return [payload for t, payload, retained in self.messages if t == topic and not retained]

    def published(self) -> list[tuple[str, bytes]]:
        """Every message published while watching (not retained ones replayed)."""
        return [(t, payload) for t, payload, retained in self.messages if not retained]

    async def wait_for(self, topic: str, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        """The payloads on ``topic``, once at least ``count`` have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.on(topic)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} message(s) on {topic!r} not seen: {self.messages}")
            await asyncio.sleep(0.02)
        return self.on(topic)


@contextlib.asynccontextmanager
async def watch_messages(broker: Broker, topic: str = "#") -> AsyncIterator[Seen]:
    """Record every message on ``topic`` (a filter; default: all) while the block runs.

    The subscription is in place before the block starts, so nothing published in it is missed.
    Leaving the block waits a moment for messages still in flight.
    """
    seen = Seen()
    async with broker.client() as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes):
                    payload = str(payload or "").encode()
                seen.messages.append((message.topic.value, payload, bool(message.retain)))

        task = asyncio.create_task(collect())
        try:
            yield seen
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def publish(broker: Broker, topic: str, payload: str | bytes, *, retain: bool = True) -> None:
    """Publish one message (retained by default, as a device reports its state)."""
    async with broker.client() as client:
        await client.publish(topic, payload, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def play_device(
    broker: Broker,
    command_topic: str,
    state_topic: str,
    *,
    initial: str | bytes | None = None,
    reply: Callable[[bytes], str | bytes | None] | None = None,
) -> AsyncIterator[list[bytes]]:
    """Act as a device: echo each command to ``state_topic`` (retained), as real ones do.

    Args:
        broker: The broker to connect to.
        command_topic: The topic the device listens on.
        state_topic: Where it reports its state.
        initial: A retained state published before the block starts.
        reply: What to report for a command (default: the command itself); ``None`` from it
            means stay silent.

    Yields:
        The commands the device received, in order.
    """
    received: list[bytes] = []
    async with broker.client() as client:
        if initial is not None:
            await client.publish(state_topic, initial, qos=1, retain=True)
        await client.subscribe(command_topic, qos=1)

        async def serve() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                received.append(payload)
                state = reply(payload) if reply else payload
                if state is not None:
                    await client.publish(state_topic, state, qos=1, retain=True)

        task = asyncio.create_task(serve())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
