"""A webhook receiver for the tests: a real HTTP server on loopback, scripted per request.

It runs ``http.server`` in a thread of the test process (so a test reads what it received
directly), answers each POST as the script says, and records every request with its headers,
raw body and whether its ``MindBot-Signature`` checks out. The check is its own code, written
from the documented format, not MindBot's helper::

    with WebhookReceiver() as receiver:
        receiver.script(Fail(500), Hang(5), Accept())  # then Accept() for every later request
        receiver.secrets["/hook"] = secret              # to check the signatures with
        ...
        assert [r.answer for r in receiver.received] == ["500", "hang", "200"]

``Hang`` holds the request without answering for its seconds (or until the receiver stops),
past the dispatcher's timeout. ``stop()`` (or leaving the block) shuts the server down and joins
its thread; a receiver may be started again on the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE_TOLERANCE_SECS = 300


@dataclass(frozen=True)
class Accept:
    """Answer 2xx at once."""

    status: int = 200

    @property
    def name(self) -> str:
        return str(self.status)


@dataclass(frozen=True)
class Fail:
    """Answer an error status at once."""

    status: int = 500

    @property
    def name(self) -> str:
        return str(self.status)


@dataclass(frozen=True)
class Hang:
    """Say nothing for ``secs`` (past the sender's timeout), then answer 200 if still there."""

    secs: float = 30.0

    @property
    def name(self) -> str:
        return "hang"


Behaviour = Accept | Fail | Hang


@dataclass
class ReceivedRequest:
    """One request as it arrived, and how it was answered."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answer: str
    signature_valid: bool | None  # None: no secret registered for the path
    received_at: float  # time.monotonic()
    answered_at: float | None = None

    @property
    def event(self) -> dict[str, Any]:
        """The JSON body."""
        return json.loads(self.body)

    @property
    def event_type(self) -> str | None:
        """The ``MindBot-Event`` header."""
        return self.headers.get("mindbot-event")

    @property
    def delivery_id(self) -> str | None:
        """The ``MindBot-Delivery`` header."""
        return self.headers.get("mindbot-delivery")


def check_signature(secret: str, header: str | None, body: bytes) -> bool:
    """The receiver's own check of ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``."""
    if not header:
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE_SECS:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), given)


@dataclass
class WebhookReceiver:
    """The receiver; ``url(path)`` is where to subscribe.

    Args:
        host: Where to listen.
        port: Which port (0: a free one, kept across ``stop()`` and ``start()``).
    """

    host: str = "127.0.0.1"
    port: int = 0
    secrets: dict[str, str] = field(default_factory=dict)
    """Path → the secret its signatures are checked with."""
    received: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._scripts: dict[str | None, deque[Behaviour]] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://{self.host}:{self.port}{path}"

    def script(self, *behaviours: Behaviour, path: str | None = None) -> None:
        """How the next requests (to ``path``, or to any path) are answered, in order; once
        the script is used up, requests are accepted."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(behaviours)

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """What was received (at ``path``), in order."""
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def start(self) -> WebhookReceiver:
        """Listen and serve in a thread."""
        self._release.clear()
        server = ThreadingHTTPServer((self.host, self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving, close the socket and join the thread."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _next(self, path: str) -> Behaviour:
        with self._lock:
            for key in (path, None):
                if self._scripts.get(key):
                    return self._scripts[key].popleft()
        return Accept()

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.received.append(request)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                secret = receiver.secrets.get(path)
                valid = (
                    None
                    if secret is None
                    else check_signature(secret, headers.get("mindbot-signature"), body)
                )
                behaviour = receiver._next(path)
                request = ReceivedRequest(
                    path, headers, body, behaviour.name, valid, time.monotonic()
                )
                receiver._record(request)
                if isinstance(behaviour, Hang):
                    receiver._release.wait(behaviour.secs)
                status = 200 if isinstance(behaviour, Hang) else behaviour.status
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting
                request.answered_at = time.monotonic()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: the test reads ``received``

        return Handler
