"""An OpenTelemetry collector stand-in: a real OTLP/HTTP traces receiver on loopback.

It takes ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body (plain or
gzip, as the OTLP/HTTP exporter sends it), decodes it with ``opentelemetry.proto`` and keeps
every span, answering like a collector does (200 with an ``ExportTraceServiceResponse``)::

    with OTLPCollector() as collector:      # a thread serving on 127.0.0.1
        ...  # point the exporter at collector.traces_url
        (conversation,) = collector.spans_named("conversation")
        assert conversation.attributes["conversation.id"] == session_id

Anything else gets the status a collector gives it: 404 for another path, 415 for a body
that is not protobuf, 400 for one that does not decode.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"


@dataclass
class ReceivedSpan:
    """One span as the collector received it (ids in hex, attributes as Python values)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int


@dataclass
class _Received:
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class OTLPCollector:
    """Receives OTLP/HTTP trace exports on ``127.0.0.1`` (a random port) in a thread."""

    def __init__(self) -> None:
        self._received = _Received()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self._received))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp collector", daemon=True
        )

    @property
    def traces_url(self) -> str:
        """The URL to export traces to."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._received.lock:
            return list(self._received.spans)

    @property
    def requests(self) -> int:
        """How many export requests were accepted."""
        with self._received.lock:
            return self._received.requests

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        """The spans received with this name."""
        return [span for span in self.spans if span.name == name]

    def wait_for(self, name: str, timeout: float = 20.0) -> list[ReceivedSpan]:
        """Wait (blocking) until a span named ``name`` arrives; return those received.

        Raises:
            AssertionError: None arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not (found := self.spans_named(name)):
            if time.monotonic() > deadline:
                names = sorted({span.name for span in self.spans})
                raise AssertionError(f"no {name!r} span within {timeout}s; received: {names}")
            time.sleep(0.1)
        return found

    def start(self) -> OTLPCollector:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OTLPCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(received: _Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0] != "/v1/traces":
                self._answer(404, b"not found", "text/plain")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
                self._answer(415, b"only application/x-protobuf", "text/plain")
                return
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:
                self._answer(400, b"undecodable ExportTraceServiceRequest", "text/plain")
                return
            spans = list(_spans(request))
            with received.lock:
                received.spans.extend(spans)
                received.requests += 1
            self._answer(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # the test's output is for the test

    return Handler


def _spans(request: ExportTraceServiceRequest):
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    resource=resource,
                    scope=scope_spans.scope.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                )


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)
