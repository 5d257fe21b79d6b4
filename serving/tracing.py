"""OpenTelemetry on the decide route, opt-in (KEEL_TRACING_*): one SERVER span per decide request.

With an endpoint configured, each decide request is a span that continues the caller's W3C trace
(the `traceparent` keel.client.context already checked: its trace id, and its span as parent)
or starts one, and carries the model, version, outcome, abstention and route of what was
decided; never a case's values. Ended spans go to a BatchSpanProcessor whose own thread sends
them with the OTLP/HTTP exporter, so a request only appends its span to an in-memory queue
(a slow or absent collector costs dropped spans, never a slower or failed decision).

Off (the default), nothing here imports the OpenTelemetry SDK or exporter (only its API) and
the gate's one `is None` check is the whole cost. (BentoML and MLflow import parts of the SDK
themselves; neither records nor exports a span of Keel's.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

# The API only (a few small modules, which BentoML imports anyway): the SDK and the exporter are
# imported by the first Tracing, so tracing off never loads them.
from opentelemetry import trace as otel
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel import __version__
from keel.client.context import parse_traceparent

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from keel.decision_log.records import DecisionRecord

__all__ = ["DecideSpan", "Tracing", "TracingSettings", "start_tracing", "traces_url"]

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
    """A tracer provider of Keel's own (never the process-global one BentoML or MLflow may use)
    with an OTLP/HTTP exporter behind a BatchSpanProcessor; `close` sends what is queued."""

    def __init__(self, settings: TracingSettings, max_decisions: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        assert settings.endpoint is not None
        self.url = traces_url(settings.endpoint)
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self._provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
            # A batch's span keeps an event for each of its decisions (at most max_cases).
            span_limits=SpanLimits(max_events=max(max_decisions, 128)),
            shutdown_on_exit=False,  # `close` does it, from the service's shutdown
        )
        exporter = OTLPSpanExporter(
            endpoint=self.url, headers=settings.headers or None, timeout=settings.timeout_seconds
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("keel.serving", __version__)

    def begin(self, headers: list[tuple[bytes, bytes]]) -> DecideSpan:
        """Start a decide request's span, as a child of the caller's span when its `traceparent`
        (keel.client.context.parse_traceparent) is valid, else as a new trace's root."""
        traceparent = tracestate = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"traceparent":
                traceparent = value.decode("latin-1")
            elif lower == b"tracestate":
                tracestate = value.decode("latin-1")
        span = self._tracer.start_span(
            SPAN_NAME,
            context=_parent(traceparent, tracestate),
            kind=otel.SpanKind.SERVER,
            attributes=_REQUEST,
            start_time=time.time_ns(),
        )
        return DecideSpan(span)

    def close(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop the exporter's thread."""
        self._provider.shutdown()


_REQUEST = {"http.request.method": "POST", "http.route": "/v1/{model}/decide"}


def _parent(traceparent: str | None, tracestate: str | None) -> Any:
    """The OpenTelemetry context of the caller's span, or None (a new trace) without a valid one."""
    valid = parse_traceparent(traceparent)
    if valid is None:
        return None
    _version, trace_id, span_id, flags = valid.split("-")[:4]
    caller = otel.SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=otel.TraceFlags(int(flags, 16) & otel.TraceFlags.SAMPLED),
        trace_state=otel.TraceState.from_header([tracestate]) if tracestate else None,
    )
    return otel.set_span_in_context(otel.NonRecordingSpan(caller))


class DecideSpan:
    """One decide request's span: shown what was decided (`decided`, from any thread), described
    and ended once the response is sent (`end`, from the gate, off the request's latency)."""

    __slots__ = ("decisions", "span")

    def __init__(self, span: Span) -> None:
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
        span = self.span
        decisions = self.decisions
        attributes: dict[str, Any] = {"http.response.status_code": status}
        if status == 200 and decisions and span.is_recording():
            attributes["keel.model"] = decisions[0]["model"]
            attributes["keel.cases"] = len(decisions)
            if len(decisions) == 1:
                attributes.update(_described(decisions[0]))
            else:
                for d in decisions:
                    span.add_event(EVENT, _described(d))
        if status >= 400:
            attributes["error.type"] = error if error and error != "-" else str(status)
        span.set_attributes(attributes)  # one call: the SDK takes its lock once
        if status >= 500:
            span.set_status(otel.Status(otel.StatusCode.ERROR))
        span.end()


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
