"""OpenTelemetry on the decide route, opt-in (KEEL_TRACING_*): one SERVER span per decide request.

With an endpoint configured, each decide request is a span that continues the caller's W3C trace
(the `traceparent` keel.client.context already checked: its trace id, and its span as parent)
or starts one, and carries the model, version, outcome, abstention and route of what was
decided; never a case's values. An ended span is appended to an in-memory queue whose own thread
encodes and posts batches (serving/otlp.py: hand-encoded OTLP protobuf, posted by the OTLP/HTTP
exporter's client), so a slow or absent collector costs dropped spans, never a slower or failed
decision. The SDK's span objects are not used: they cost more than the tracing budget (otlp.py).

Off (the default), nothing here imports the OpenTelemetry SDK or exporter (only its API) and
the gate's one `is None` check is the whole cost. (BentoML and MLflow import parts of the SDK
themselves; neither records nor exports a span of Keel's.)
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

# The API only (a few small modules, which BentoML imports anyway): the SDK and the exporter are
# imported by the first Tracing, so tracing off never loads them.
from opentelemetry import trace as otel
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel import __version__
from keel.client.context import parse_traceparent
from keel.serving.otlp import FinishedSpan, SpanBatcher, encode_request

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = ["DecideSpan", "Tracing", "TracingSettings", "start_tracing", "traces_url"]

log = logging.getLogger("keel.tracing")

SPAN_NAME = "POST /v1/{model}/decide"
"""The span's name: the route template (low cardinality, as OpenTelemetry's HTTP conventions ask)."""
EVENT = "keel.decision"
"""A batch's span carries one event of this name per decision (a one-case request: attributes)."""


class TracingSettings(BaseSettings):
    """Where decide spans are exported (KEEL_TRACING_*); no endpoint, no tracing."""

    model_config = SettingsConfigDict(env_prefix="KEEL_TRACING_", extra="ignore")

    endpoint: str | None = None
    """The collector's OTLP/HTTP URL (e.g. http://otel-collector:4318): spans are posted to its
    /v1/traces, or to the URL as given when it already ends so. Unset or empty: tracing is off."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent with every export, as JSON (e.g. a vendor's API key); never logged. Empty:
    the standard OTEL_EXPORTER_OTLP_HEADERS apply."""

    service_name: str = "keel"
    """The resource's `service.name` (OTEL_RESOURCE_ATTRIBUTES adds the rest)."""

    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of traces started here (requests without a valid `traceparent`) that are recorded; a
    caller's sampled flag is always followed."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    """Longest wait for the collector per export (in the exporter's thread, never a request's)."""


def traces_url(endpoint: str) -> str:
    """The URL spans are posted to: OTLP/HTTP's /v1/traces under a base URL, or the URL as given."""
    endpoint = endpoint.strip()
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def start_tracing(settings: TracingSettings, max_decisions: int) -> Tracing | None:
    """The service's tracing, or None (and no OpenTelemetry SDK imported) when no endpoint is set."""
    if not (settings.endpoint or "").strip():
        return None
    return Tracing(settings, max_decisions)


class Tracing:
    """Decide spans of Keel's own (never through the process-global tracer provider BentoML or
    MLflow may use), queued and posted by serving/otlp.py's SpanBatcher; `close` sends what is
    queued. Sampling is the SDK's ParentBased(TraceIdRatioBased): a caller's sampled flag is
    followed, and a trace started here is kept when the low 64 bits of its random trace id fall
    under the ratio's share of 2^64."""

    def __init__(self, settings: TracingSettings, max_decisions: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource

        assert settings.endpoint is not None
        self.url = traces_url(settings.endpoint)
        # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and the SDK's telemetry.sdk.* attributes.
        resource = dict(
            Resource.create(
                {"service.name": settings.service_name, "service.version": __version__}
            ).attributes
        )
        self._bound = round(settings.sample_ratio * ((1 << 64) - 1))
        self._max_events = max(max_decisions, 128)
        exporter = OTLPSpanExporter(
            endpoint=self.url, headers=settings.headers or None, timeout=settings.timeout_seconds
        )
        self._exporter = exporter
        self._timeout = settings.timeout_seconds

        def post(body: bytes) -> None:
            # The exporter's own HTTP client (private in 1.45; tests/unit/test_tracing.py posts
            # through it to a real receiver), so the OTEL_EXPORTER_OTLP_* variables all apply.
            result = exporter._client.export(body)
            if not result.success:
                log.warning("the collector refused %d bytes of decide spans: %s", len(body), result.error)

        def encode(spans: list[FinishedSpan]) -> bytes:
            return encode_request(spans, resource, ("keel.serving", __version__), SPAN_NAME)

        self._batcher = SpanBatcher(post, encode)

    def begin(self, headers: list[tuple[bytes, bytes]]) -> DecideSpan:
        """Start a decide request's span, as a child of the caller's span when its `traceparent`
        (keel.client.context.parse_traceparent) is valid, else as a new trace's root; a span
        that is not sampled records nothing."""
        traceparent = tracestate = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"traceparent":
                traceparent = value.decode("latin-1")
            elif lower == b"tracestate":
                tracestate = value.decode("latin-1")
        valid = parse_traceparent(traceparent)
        if valid is None:
            trace_id = random.getrandbits(128) or 1
            if (trace_id & _LOW64) >= self._bound:
                return DecideSpan(None)
            parent, state = b"", ""
        else:
            _version, trace_hex, parent_hex, flags = valid.split("-")[:4]
            if not int(flags, 16) & 1:  # the caller did not sample its trace
                return DecideSpan(None)
            trace_id, parent = int(trace_hex, 16), bytes.fromhex(parent_hex)
            state = otel.TraceState.from_header([tracestate]).to_header() if tracestate else ""
        span = FinishedSpan(
            trace_id=trace_id.to_bytes(16, "big"),
            span_id=(random.getrandbits(64) or 1).to_bytes(8, "big"),
            parent_span_id=parent,
            trace_state=state,
            start_ns=time.time_ns(),
            end_ns=0,
            attributes={},
        )
        return DecideSpan(self, span)

    def finish(self, span: FinishedSpan) -> None:
        self._batcher.add(span)

    def close(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop the exporter's thread."""
        self._batcher.close(self._timeout + 1)
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK 1.45


_LOW64 = (1 << 64) - 1
_REQUEST = {"http.request.method": "POST", "http.route": "/v1/{model}/decide"}


class DecideSpan:
    """One decide request's span: shown what was decided (`decided`, from any thread), described
    and ended once the response is sent (`end`, from the gate, off the request's latency). A span
    that is not sampled (`DecideSpan(None)`) ignores both."""

    __slots__ = ("decisions", "span", "tracing")

    def __init__(self, tracing: Tracing | None, span: FinishedSpan | None = None) -> None:
        self.tracing = tracing
        self.span = span
        self.decisions: list[DecisionRecord] | None = None

    def decided(self, decisions: list[DecisionRecord]) -> None:
        """The decisions rendered for the answer (described by `end` only if it is a 200: a
        decision whose commit failed was never acknowledged)."""
        self.decisions = decisions

    def end(self, status: int, error: str | None) -> None:
        """Describe the decisions and end the span with the response's status: a 5xx marks it
        failed, as OpenTelemetry's HTTP server conventions ask (a 4xx is the caller's); any error
        carries Keel's error name.

        A one-case request's decision is described on the span, a batch's as one event per
        decision: only what Keel decided (model, version, alias, decision id, outcome, abstained,
        route), never an input value, a case field or the caller's case id."""
        span, tracing = self.span, self.tracing
        if span is None or tracing is None:
            return
        span.end_ns = time.time_ns()
        attributes: dict[str, Any] = {**_REQUEST, "http.response.status_code": status}
        decisions = self.decisions
        if status == 200 and decisions:
            attributes["keel.model"] = decisions[0]["model"]
            attributes["keel.cases"] = len(decisions)
            if len(decisions) == 1:
                attributes.update(_described(decisions[0]))
            else:
                at = span.end_ns
                span.events = [(at, EVENT, _described(d)) for d in decisions[: tracing._max_events]]
        if status >= 400:
            attributes["error.type"] = error if error and error != "-" else str(status)
        span.attributes = attributes
        span.error = status >= 500
        tracing.finish(span)


def _described(d: DecisionRecord) -> dict[str, Any]:
    versions = d["versions"]
    out: dict[str, Any] = {
        "keel.decision.id": d["decision_id"],
        "keel.model.version": str(versions.get("model_version")),
        "keel.decision.abstained": d["abstained"],
        "keel.decision.route": d["route"],
    }
    if versions.get("alias"):
        out["keel.model.alias"] = versions["alias"]
    if d["outcome"] is not None:  # an abstention has none
        out["keel.decision.outcome"] = d["outcome"]
    return out
