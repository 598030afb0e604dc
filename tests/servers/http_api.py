"""A stand-in for the HTTP APIs behind the shipped connectors, as its own process on loopback.

It answers like the real services do, for the requests the templates send:

- Home Assistant: ``GET /api/states/<entity_id>`` and ``POST /api/services/<domain>/<service>``
  (``Authorization: Bearer <ha_token>``; 401 without it, 404 for an unknown entity).
- Slack: ``POST /api/chat.postMessage`` (bot token; HTTP 200 with ``{"ok": false, "error"}``
  when refused) and an incoming webhook at ``webhook_path`` (plain ``ok``).
- The Free Dictionary API: ``GET /api/v2/entries/en/<word>``.
- ``/echo/...``: any method; answers with the request it got. ``/redirect?to=URL``: a 302.

Every request (but ``/_control/...``) is recorded, and the server can be told to answer 500,
malformed JSON, or slowly::

    with HttpApiServer() as api:        # or: async with HttpApiServer() as api:
        ...  # point the connector settings at api.url
        api.behave("slow", delay=2.0)
        assert api.requests()[0].path == "/api/states/light.kitchen"
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HA_TOKEN = "ha-test-token-5f1c"
SLACK_TOKEN = "xoxb-test-token-93a7"
WEBHOOK_PATH = "/services/T0TEST/B0TEST/s3cr3tW3bh00kPath"
SLACK_CHANNELS = {"C024BE91L": "team", "#team": "team"}


@dataclass
class RecordedRequest:
    """One request the server received, as it arrived."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str
    target: str = ""

    @property
    def json(self) -> Any:
        """The body as JSON (``None`` if it is not)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class HttpApiServer:
    """Starts the stand-in as a subprocess on loopback and stops it by its PID.

    Args:
        host: Where to listen.
        port: Which port; default: a free one.
    """

    host: str = "127.0.0.1"
    port: int = 0
    ha_token: str = HA_TOKEN
    slack_token: str = SLACK_TOKEN
    webhook_path: str = WEBHOOK_PATH
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> HttpApiServer:
        """Start the process and wait until it answers."""
        if not self.port:
            from mindbot.harness import free_port

            self.port = free_port(self.host)
        self._log = tempfile.TemporaryFile()
        args = [sys.executable, str(Path(__file__).resolve()), self.host, str(self.port)]
        args += [self.ha_token, self.slack_token, self.webhook_path]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._control("GET", "/_control/requests")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    why = self._stderr()
                    self.stop()
                    raise RuntimeError(f"the HTTP API stand-in did not start: {why}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process: terminate, then kill."""
        if self.process is not None:
            from servers import stop_process  # here: the server process itself runs this file

            stop_process(self.process)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def requests(self) -> list[RecordedRequest]:
        """What the server has received since the last ``reset``."""
        return [RecordedRequest(**r) for r in self._control("GET", "/_control/requests")]

    def behave(self, mode: str = "normal", *, delay: float = 0.0) -> None:
        """How to answer from now on: ``normal``, ``fail`` (500), ``malformed`` or ``slow``."""
        self._control("POST", "/_control/behave", {"mode": mode, "delay": delay})

    def reset(self) -> None:
        """Forget the requests, answer normally, and put the devices back as they were."""
        self._control("POST", "/_control/reset", {})

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def _stderr(self) -> str:
        if getattr(self, "_log", None) is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def __enter__(self) -> HttpApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> HttpApiServer:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)


# --- The server process (stdlib only) -----------------------------------------------------------


def _initial_states() -> dict[str, dict[str, Any]]:
    changed = "2026-03-14T09:26:53.589793+00:00"
    return {
        "sensor.living_room_temperature": {
            "entity_id": "sensor.living_room_temperature",
            "state": "21.5",
            "attributes": {
                "unit_of_measurement": "°C",
                "device_class": "temperature",
                "friendly_name": "Living room temperature",
            },
            "last_changed": changed,
            "last_updated": changed,
        },
        "light.kitchen": {
            "entity_id": "light.kitchen",
            "state": "off",
            "attributes": {"friendly_name": "Kitchen light", "supported_color_modes": ["onoff"]},
            "last_changed": changed,
            "last_updated": changed,
        },
        "lock.front_door": {
            "entity_id": "lock.front_door",
            "state": "unlocked",
            "attributes": {"friendly_name": "Front door"},
            "last_changed": changed,
            "last_updated": changed,
        },
    }


_SERVICES = {
    ("light", "turn_on"): "on",
    ("light", "turn_off"): "off",
    ("switch", "turn_on"): "on",
    ("switch", "turn_off"): "off",
    ("lock", "lock"): "locked",
    ("lock", "unlock"): "unlocked",
}

_DICTIONARY = {
    "serendipity": [
        {
            "word": "serendipity",
            "phonetic": "/ˌsɛɹənˈdɪpɪti/",
            "phonetics": [{"text": "/ˌsɛɹənˈdɪpɪti/", "audio": ""}],
            "meanings": [
                {
                    "partOfSpeech": "noun",
                    "definitions": [
                        {
                            "definition": "A combination of events which have come together "
                            "by chance to make a surprisingly good or wonderful outcome.",
                            "example": "It was pure serendipity that we met.",
                            "synonyms": [],
                            "antonyms": [],
                        }
                    ],
                    "synonyms": ["chance", "fluke"],
                    "antonyms": [],
                }
            ],
            "license": {
                "name": "CC BY-SA 3.0",
                "url": "https://creativecommons.org/licenses/by-sa/3.0",
            },
            "sourceUrls": ["https://en.wiktionary.org/wiki/serendipity"],
        }
    ],
    "hello": [
        {
            "word": "hello",
            "phonetic": "həˈləʊ",
            "meanings": [
                {
                    "partOfSpeech": "exclamation",
                    "definitions": [
                        {
                            "definition": "used as a greeting or to begin a phone conversation.",
                            "example": "hello there, Katie!",
                        }
                    ],
                },
                {
                    "partOfSpeech": "noun",
                    "definitions": [{"definition": "an utterance of ‘hello’; a greeting."}],
                },
                {
                    "partOfSpeech": "verb",
                    "definitions": [{"definition": "say or shout ‘hello’."}],
                },
                {
                    "partOfSpeech": "interjection",
                    "definitions": [{"definition": "a greeting (salutation)."}],
                },
            ],
        }
    ],
}

_NO_DEFINITIONS = {
    "title": "No Definitions Found",
    "message": "Sorry pal, we couldn't find definitions for the word you were looking for.",
    "resolution": "You can try the search again at later time or head to the web instead.",
}


class _State:
    def __init__(self, ha_token: str, slack_token: str, webhook_path: str):
        self.ha_token, self.slack_token, self.webhook_path = ha_token, slack_token, webhook_path
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode, self.delay = "normal", 0.0
        self.states = _initial_states()
        self.messages: list[dict[str, Any]] = []


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            if isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body, ensure_ascii=False).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (a timeout test): nothing to tell it
                pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            split = urlsplit(self.path)
            path, query = split.path, parse_qs(split.query, keep_blank_values=True)
            if path.startswith("/_control/"):
                return self._control(path, body)
            with state.lock:
                state.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "query": query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                        "target": self.path,
                    }
                )
                mode, delay = state.mode, state.delay
            if mode == "slow":
                time.sleep(delay)
            if mode == "fail":
                return self._send(500, "500 Internal Server Error", "text/plain")
            if mode == "malformed":
                return self._send(200, '{"state": "on", "attributes": {', "application/json")
            self._route(path, query, body)

        def _control(self, path: str, body: str) -> None:
            if path == "/_control/requests":
                with state.lock:
                    return self._send(200, list(state.requests))
            if path == "/_control/behave":
                wanted = json.loads(body)
                with state.lock:
                    state.mode, state.delay = wanted["mode"], float(wanted.get("delay", 0))
                return self._send(200, {"mode": state.mode})
            if path == "/_control/reset":
                with state.lock:
                    state.reset()
                return self._send(200, {"reset": True})
            self._send(404, {"message": "Not found"})

        def _route(self, path: str, query: dict[str, list[str]], body: str) -> None:
            parts = path.split("/")
            if path.startswith("/echo/") or path == "/echo":
                return self._send(
                    200,
                    {
                        "method": self.command,
                        "path": path,
                        "segments": [unquote(p) for p in parts[2:]],
                        "query": {k: v[0] for k, v in query.items()},
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    },
                )
            if path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query.get("to", ["/"])[0])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if path.startswith("/api/v2/entries/en/") and len(parts) == 6:
                word = unquote(parts[5]).lower()
                if self.command == "GET" and word in _DICTIONARY:
                    return self._send(200, _DICTIONARY[word])
                return self._send(404, _NO_DEFINITIONS)
            if path == state.webhook_path or path.startswith("/services/"):
                return self._webhook(path, body)
            if path == "/api/chat.postMessage":
                return self._slack(body)
            if path.startswith("/api/"):
                return self._home_assistant(parts, body)
            self._send(404, {"message": "Not found"})

        def _home_assistant(self, parts: list[str], body: str) -> None:
            if self.headers.get("Authorization") != f"Bearer {state.ha_token}":
                return self._send(401, "401: Unauthorized", "text/plain")
            if parts == ["", "api", ""]:
                return self._send(200, {"message": "API running."})
            if len(parts) == 4 and parts[2] == "states" and self.command == "GET":
                with state.lock:
                    found = state.states.get(unquote(parts[3]))
                if found is None:
                    return self._send(404, {"message": "Entity not found."})
                return self._send(200, found)
            if len(parts) == 5 and parts[2] == "services" and self.command == "POST":
                domain, service = unquote(parts[3]), unquote(parts[4])
                if (domain, service) not in _SERVICES:
                    return self._send(400, {"message": f"Service {domain}.{service} not found."})
                try:
                    data = json.loads(body) if body else {}
                except ValueError:
                    return self._send(400, {"message": "Data should be valid JSON."})
                changed = []
                with state.lock:
                    entity = state.states.get(str(data.get("entity_id")))
                    new = _SERVICES[(domain, service)]
                    if entity is not None and entity["entity_id"].startswith(domain + "."):
                        if entity["state"] != new:
                            entity["state"] = new
                            entity["last_changed"] = "2026-03-14T10:00:00.000000+00:00"
                            changed.append(entity)
                return self._send(200, changed)
            self._send(404, {"message": "Not found"})

        def _slack(self, body: str) -> None:
            auth = self.headers.get("Authorization")
            if not auth:
                return self._send(200, {"ok": False, "error": "not_authed"})
            if auth != f"Bearer {state.slack_token}":
                return self._send(200, {"ok": False, "error": "invalid_auth"})
            try:
                data = json.loads(body)
            except ValueError:
                return self._send(200, {"ok": False, "error": "invalid_json"})
            channel = data.get("channel")
            if channel not in SLACK_CHANNELS:
                return self._send(200, {"ok": False, "error": "channel_not_found"})
            if not data.get("text"):
                return self._send(200, {"ok": False, "error": "no_text"})
            ts = f"{1773480413 + len(state.messages)}.000200"
            message = {"type": "message", "text": data["text"], "bot_id": "B0BOT", "ts": ts}
            with state.lock:
                state.messages.append(message)
            self._send(200, {"ok": True, "channel": "C024BE91L", "ts": ts, "message": message})

        def _webhook(self, path: str, body: str) -> None:
            if path != state.webhook_path or self.command != "POST":
                return self._send(404, "no_service", "text/html")
            try:
                data = json.loads(body)
            except ValueError:
                return self._send(400, "invalid_payload", "text/html")
            if not isinstance(data, dict) or not data.get("text"):
                return self._send(400, "no_text", "text/html")
            self._send(200, "ok", "text/html")

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler


def _serve(host: str, port: int, ha_token: str, slack_token: str, webhook_path: str) -> None:
    server = ThreadingHTTPServer(
        (host, port), _handler(_State(ha_token, slack_token, webhook_path))
    )
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
