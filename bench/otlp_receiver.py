"""A tiny OTLP/HTTP trace receiver on 127.0.0.1, for the tracing test and bench.serving --tracing.

It answers POST /v1/traces as a collector does (ExportTraceServiceRequest in, an empty
ExportTraceServiceResponse out, protobuf, gzip or not) and keeps what it decoded, so a test can
look at exactly the spans `keel serve` exported. Hand-written because the only real collector
(opentelemetry-collector) is a Go binary: this is the protocol's receiving end in ~100 lines,
decoded with the protocol's own generated classes (opentelemetry-proto).
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedSpan"]

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    """32 hex digits."""
    span_id: str
    parent_span_id: str
    """16 hex digits, or "" for a trace's root span."""
    trace_state: str
    """The W3C `tracestate` the span carries ("" for none)."""
    name: str
    kind: int
    """The protocol's Span.SpanKind number (2: SERVER)."""
    status_code: int
    """The protocol's Status.StatusCode number (0 unset, 1 ok, 2 error)."""
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    """The resource attributes of the batch the span came in (service.name, ...)."""
    scope: str
    """The instrumentation scope's name (the tracer's)."""


def value(v: AnyValue) -> Any:
    """An OTLP attribute value as Python (arrays as lists)."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(kvs)
    return {kv.key: value(kv.value) for kv in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    """Every span of one ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        trace_state=s.trace_state,
                        name=s.name,
                        kind=int(s.kind),
                        status_code=int(s.status.code),
                        attributes=attributes(s.attributes),
                        events=[(e.name, attributes(e.attributes)) for e in s.events],
                        resource=resource,
                        scope=ss.scope.name,
                    )
                )
    return out


@dataclass
class OtlpReceiver:
    """Serves in a thread from `start` (or `with`) to `close`; `keep=False` only counts spans."""

    keep: bool = True
    requests: int = 0
    """POSTs answered, whatever their path."""
    span_count: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, as KEEL_TRACING_ENDPOINT takes it (spans are posted to its /v1/traces)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and self.headers.get("Content-Type") == PROTOBUF
                spans = decode(body) if ok else []
                with receiver._lock:
                    receiver.requests += 1
                    receiver.span_count += len(spans)
                    if receiver.keep:
                        receiver.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString() if ok else b"unsupported"
                self.send_response(200 if ok else 415)
                self.send_header("Content-Type", PROTOBUF if ok else "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per export on stderr would drown a test's output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def received(self) -> list[ReceivedSpan]:
        """A copy of the spans decoded so far."""
        with self._lock:
            return list(self.spans)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
