"""OpenTelemetry on a real `keel serve`: with KEEL_TRACING_ENDPOINT set, decide spans reach a real
OTLP/HTTP receiver (bench/otlp_receiver.py, decoding ExportTraceServiceRequest) continuing the
caller's trace, describing the decisions and holding no input value; off, nothing is sent even
with the standard OTEL_EXPORTER_OTLP_* variables pointing at the receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.otlp_receiver import OtlpReceiver, ReceivedSpan
from keel.feature_defs.contract import load_contract
from tests.conftest import Store, wait_until
from tests.integration.conftest import Server, make_keys, start_server

SERVER_KIND = 2  # OTLP Span.SpanKind SPAN_KIND_SERVER
ERROR = 2  # OTLP Status.StatusCode STATUS_CODE_ERROR
QUICK_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}  # ms between the exporter thread's exports


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def _serve(store: Store, tmp: Path, env: dict[str, str]) -> Server:
    log_url = f"sqlite:///{tmp / 'decisions.db'}"
    keys = make_keys(log_url, "trace")
    # A replica of its own (its environment decides tracing); loading can be slow on a shared machine.
    srv = start_server(store, tmp, log_url, extra_env=env)
    srv.keys = keys
    return srv


def _case() -> dict[str, Any]:
    """A routing case whose values appear nowhere else: any of them in a span is a leak."""
    return {
        **load_contract("routing").example_case,
        "case_id": f"secret-case-{uuid.uuid4()}",
        "amount_at_stake": 12345.678,
        "days_open": 37,
        "prior_escalations": 5,
        "sentiment_score": -0.4321,
    }


def _traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{parent}-{'01' if sampled else '00'}", trace_id, parent


def _span_of(receiver: OtlpReceiver, trace_id: str, timeout: float = 30) -> ReceivedSpan:
    def found() -> list[ReceivedSpan]:
        return [s for s in receiver.received() if s.trace_id == trace_id]

    wait_until(
        lambda: bool(found()), timeout, lambda: f"no span of trace {trace_id}; {receiver.requests} exports"
    )
    (span,) = found()
    return span


def _assert_describes(attributes: dict[str, Any], decision: dict[str, Any]) -> None:
    assert attributes["keel.decision.id"] == decision["decision_id"]
    assert attributes["keel.model.version"] == str(decision["versions"]["model_version"])
    assert attributes["keel.model.alias"] == decision["versions"]["alias"]
    assert attributes["keel.decision.abstained"] is decision["abstained"]
    assert attributes["keel.decision.route"] == decision["route"]
    assert attributes.get("keel.decision.outcome") == decision["outcome"]  # absent on an abstention


def _assert_no_inputs(span: ReceivedSpan, cases: list[dict[str, Any]]) -> None:
    """No attribute (span, event or resource) names a case field or holds a case's value."""
    everything = [span.attributes, span.resource, *(attrs for _, attrs in span.events)]
    keys = {k for attrs in everything for k in attrs}
    values = [v for attrs in everything for v in attrs.values()]
    for case in cases:
        for name, given in case.items():
            assert not any(name in k for k in keys), (name, keys)
            if isinstance(given, str | int | float) and not isinstance(given, bool):
                assert given not in values, (name, given)
        assert not any(case["case_id"] in str(v) for v in values)


def test_decide_spans_continue_the_callers_trace_and_carry_no_inputs(
    store: Store, registered: dict[str, str], tmp_path: Path, receiver: OtlpReceiver
) -> None:
    srv = _serve(store, tmp_path, {"KEEL_TRACING_ENDPOINT": receiver.url, **QUICK_EXPORT})
    try:
        with srv.client() as c:
            # One case: the decision is described on the span, a child of the caller's span.
            traceparent, trace_id, parent = _traceparent()
            one = [_case()]
            r = c.post("/v1/routing/decide", json={"cases": one}, headers={"traceparent": traceparent})
            assert r.status_code == 200, r.text
            decision = r.json()["decisions"][0]
            span = _span_of(receiver, trace_id)
            assert (span.parent_span_id, span.kind, span.name) == (
                parent,
                SERVER_KIND,
                "POST /v1/{model}/decide",
            )
            assert span.span_id not in ("", parent) and span.scope == "keel.serving"
            assert span.attributes["keel.model"] == "routing" and span.attributes["keel.cases"] == 1
            assert span.attributes["http.route"] == "/v1/{model}/decide"
            assert span.attributes["http.response.status_code"] == 200 and span.status_code != ERROR
            _assert_describes(span.attributes, decision)
            assert span.resource["service.name"] == "keel"
            _assert_no_inputs(span, one)

            # A batch: one event per decision, in the answer's order.
            traceparent, trace_id, parent = _traceparent()
            batch = [_case() for _ in range(3)]
            r = c.post("/v1/routing/decide", json={"cases": batch}, headers={"traceparent": traceparent})
            assert r.status_code == 200, r.text
            span = _span_of(receiver, trace_id)
            assert span.parent_span_id == parent and span.attributes["keel.cases"] == 3
            assert "keel.decision.id" not in span.attributes
            assert [name for name, _ in span.events] == ["keel.decision"] * 3
            for (_, attributes), d in zip(span.events, r.json()["decisions"], strict=True):
                _assert_describes(attributes, d)
            _assert_no_inputs(span, batch)

            # A 422 is the caller's: its error name, no decision, not marked failed, no field values.
            traceparent, trace_id, _ = _traceparent()
            bad = {**_case(), "amount_at_stake": "twelve thousand"}
            r = c.post("/v1/routing/decide", json={"cases": [bad]}, headers={"traceparent": traceparent})
            assert r.status_code == 422
            span = _span_of(receiver, trace_id)
            assert span.attributes["http.response.status_code"] == 422
            assert span.attributes["error.type"] == r.json()["error"] and span.status_code != ERROR
            assert not any(k.startswith("keel.decision") for k in span.attributes)
            assert "twelve thousand" not in str(span.attributes)

            # Without a traceparent the span starts a trace; a caller's unsampled trace is not recorded.
            unsampled, unsampled_id, _ = _traceparent(sampled=False)
            r = c.post("/v1/routing/decide", json={"cases": [_case()]}, headers={"traceparent": unsampled})
            assert r.status_code == 200
            r = c.post("/v1/routing/decide", json={"cases": [_case()]})
            assert r.status_code == 200
            root_id = r.json()["decisions"][0]["decision_id"]

            def root() -> list[ReceivedSpan]:
                return [s for s in receiver.received() if s.attributes.get("keel.decision.id") == root_id]

            wait_until(lambda: bool(root()), 30, lambda: "no span for the request without traceparent")
            assert root()[0].parent_span_id == "" and root()[0].trace_id != unsampled_id
            # Spans are exported in the order they ended: the unsampled request's came first.
            assert not [s for s in receiver.received() if s.trace_id == unsampled_id]
    finally:
        srv.stop()


def test_with_tracing_off_nothing_is_sent(
    store: Store, registered: dict[str, str], tmp_path: Path, receiver: OtlpReceiver
) -> None:
    # The standard variables point at the receiver: only KEEL_TRACING_ENDPOINT turns tracing on.
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
        **QUICK_EXPORT,
    }
    srv = _serve(store, tmp_path, otel)
    try:
        with srv.client() as c:
            for _ in range(5):
                traceparent, _, _ = _traceparent()
                r = c.post(
                    "/v1/routing/decide", json={"cases": [_case()]}, headers={"traceparent": traceparent}
                )
                assert r.status_code == 200, r.text
        # 20 export intervals of the on-case; then the server's shutdown would flush a queue.
        time.sleep(2.0)
    finally:
        srv.stop()
    assert receiver.requests == 0
