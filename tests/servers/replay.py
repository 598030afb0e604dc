"""A replay HTTP server: recorded API responses served from fixture files, on loopback.

It stands in for a web API (Open-Meteo, an RSS feed, a stock quote service) in tests. It runs
as a subprocess (a real ``http.server`` on 127.0.0.1) and is stopped by its PID. What it answers
is a list of rules, tried in order; a rule matches a request by method, path and a subset of the
query parameters, and answers with a fixture file (or an inline body), a status and an optional
delay. A rule may apply a limited number of ``times`` (then the next matching rule answers), which
is how a test says "fail once, then work". Everything it receives is recorded::

    with replay_server([Rule("/v1/search", {"name": "Berlin"}, file="weather/geo.json")]) as server:
        settings = WeatherSettings(geocoding_url=f"{server.url}/v1/search")
        ...
        server.add(Rule("/v1/search", status=500, times=1))  # the next search fails once
        server.add(Rule("/v1/forecast", body="{not json"))  # malformed
        server.add(Rule("/v1/forecast", file="weather/f.json", delay=5))  # slow
        assert server.requests("/v1/search")[0].query["name"] == "Berlin"

A request that no rule matches gets a 404 with a JSON body saying so. The control endpoints
live under ``/__replay__/`` and are not recorded. Run alone, it serves until killed::

    python tests/servers/replay.py --port 8765 --fixtures tests/fixtures/tools
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The tools' recorded responses (``weather/``, ``stocks/``, ``feeds/``).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tools"

CONTROL = "/__replay__"

_CONTENT_TYPES = {
    ".json": "application/json; charset=utf-8",
    ".xml": "application/rss+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass
class Rule:
    """One recorded answer and the requests it answers.

    Args:
        path: The request path, e.g. ``/v1/search``.
        query: Query parameters the request must have, with these values (others may be there).
        file: The answer's body: a file under the fixtures folder, e.g. ``weather/geo.json``.
        body: The answer's body as text, instead of a file (e.g. malformed JSON).
        status: The HTTP status.
        content_type: Default: from the file's suffix, else JSON.
        delay: Seconds to wait before answering.
        times: How many requests the rule answers before it is used up (``None``: all).
        method: The HTTP method.
        headers: More response headers.
    """

    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    file: str | None = None
    body: str | None = None
    status: int = 200
    content_type: str | None = None
    delay: float = 0.0
    times: int | None = None
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str
    target: str


class ReplayServer:
    """A running replay server, seen from the test: its URL, its rules, what it received.

    Args:
        url: ``http://127.0.0.1:PORT``.
        pid: The server process's id.
    """

    def __init__(self, url: str, pid: int):
        self.url = url
        self.pid = pid

    def add(self, *rules: Rule) -> None:
        """Put rules in front of the current ones (so they answer first)."""
        self._control("rules", {"rules": [asdict(r) for r in rules], "mode": "prepend"})

    def reset(self, rules: Sequence[Rule] = ()) -> None:
        """Forget the recorded requests and replace every rule with ``rules``."""
        self._control("reset", {"rules": [asdict(r) for r in rules]})

    def requests(self, path: str | None = None) -> list[Recorded]:
        """The requests received so far (those for ``path`` only, if given), oldest first."""
        recorded = [Recorded(**r) for r in self._control("requests")]
        return [r for r in recorded if path is None or r.path == path]

    def _control(self, action: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{CONTROL}/{action}", data=data)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@contextmanager
def replay_server(
    rules: Sequence[Rule] = (), *, fixtures: Path = FIXTURES, host: str = "127.0.0.1"
) -> Iterator[ReplayServer]:
    """Start a replay server process on loopback; stop it (by PID) on exit.

    Args:
        rules: The answers it starts with (more can be added with ``ReplayServer.add``).
        fixtures: The folder that rules' ``file`` paths are relative to.
        host: The address to listen on.
    """
    from mindbot.harness import free_port  # only here: the server process needs no mindbot

    port = free_port(host)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, __file__, "--host", host, "--port", str(port)]
            + ["--fixtures", str(fixtures)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            server = ReplayServer(f"http://{host}:{port}", process.pid)
            _wait_ready(server, process, errors)
            server.reset(rules)
            yield server
        finally:
            from servers import stop_process  # here: the server process itself runs this file

            stop_process(process)


def _wait_ready(server: ReplayServer, process: subprocess.Popen, errors: Any) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors.seek(0)
            raise RuntimeError(f"the replay server exited: {errors.read().decode()[-2000:]}")
        try:
            server._control("health")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise RuntimeError("the replay server did not start within 15 s")


# --- The server process ---------------------------------------------------------------------


class _State:
    def __init__(self, fixtures: Path):
        self.fixtures = fixtures.resolve()
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

    def take(self, method: str, path: str, query: dict[str, str]) -> dict[str, Any] | None:
        """The first rule that matches (counting one use of it), if any."""
        with self.lock:
            for rule in self.rules:
                if rule["method"].upper() != method or rule["path"] != path:
                    continue
                if any(query.get(k) != str(v) for k, v in rule["query"].items()):
                    continue
                if rule["times"] is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                return dict(rule)
        return None

    def body(self, rule: dict[str, Any]) -> bytes:
        if rule["body"] is not None:
            return rule["body"].encode()
        if rule["file"] is None:
            return b""
        path = (self.fixtures / rule["file"]).resolve()
        if not path.is_relative_to(self.fixtures):
            raise ValueError(f"fixture outside {self.fixtures}: {rule['file']}")
        return path.read_bytes()


def _normalized(rule: Mapping[str, Any]) -> dict[str, Any]:
    return asdict(Rule(**rule))


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: D102 (http.server's naming)
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # stderr is for startup failures only

    def _handle(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if split.path.startswith(f"{CONTROL}/"):
            self._control(split.path.removeprefix(f"{CONTROL}/"), body)
            return
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        with self.state.lock:
            self.state.requests.append(
                {
                    "method": self.command,
                    "path": split.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(errors="replace"),
                    "target": self.path,
                }
            )
        rule = self.state.take(self.command, split.path, query)
        if rule is None:
            missing = {"error": "no recorded response", "method": self.command, "path": split.path}
            self._send(404, json.dumps(missing).encode(), _CONTENT_TYPES[".json"])
            return
        if rule["delay"]:
            time.sleep(rule["delay"])
        suffix = Path(rule["file"] or "").suffix
        content_type = rule["content_type"] or _CONTENT_TYPES.get(suffix, _CONTENT_TYPES[".json"])
        self._send(rule["status"], self.state.body(rule), content_type, rule["headers"])

    def _control(self, action: str, body: bytes) -> None:
        payload = json.loads(body) if body else {}
        state = self.state
        status, answer = 200, None
        with state.lock:
            if action == "health":
                answer = {"ok": True}
            elif action == "requests":
                answer = list(state.requests)
            elif action == "reset":
                state.requests.clear()
                state.rules = [_normalized(r) for r in payload.get("rules", [])]
            elif action == "rules":
                new = [_normalized(r) for r in payload.get("rules", [])]
                state.rules = new + state.rules if payload.get("mode") == "prepend" else new
            else:
                status, answer = 404, {"error": f"unknown control action {action!r}"}
            if answer is None:
                answer = {"rules": len(state.rules)}
        self._send(status, json.dumps(answer).encode(), _CONTENT_TYPES[".json"])

    def _send(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    _Handler.state = _State(args.fixtures)
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    server.daemon_threads = True
    print(f"replay server on http://{args.host}:{args.port} (pid {os.getpid()})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
