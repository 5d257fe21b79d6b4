"""serving/otlp.py's hand-encoded OTLP bytes, parsed back by the protocol's own generated classes
(opentelemetry-proto) field by field, over many random spans."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bench.otlp_receiver import attributes as decoded_attributes
from keel.serving.otlp import FinishedSpan, encode_request

NAME = "POST /v1/{model}/decide"


def _value(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.random() < 0.5
    if kind == 1:
        return rng.choice(
            [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63), rng.randrange(-(10**12), 10**12)]
        )
    if kind == 2:
        return rng.choice([0.0, -1.5, 1e300, rng.random()])
    return rng.choice(["", "auto", "human_review", "É😀 décision", "x" * rng.randrange(300)])


def _attributes(rng: random.Random) -> dict[str, Any]:
    return {f"keel.attr.{i}.{rng.randrange(3)}": _value(rng) for i in range(rng.randrange(15))}


def _span(rng: random.Random) -> FinishedSpan:
    root = rng.random() < 0.3
    start = rng.randrange(2**63)
    return FinishedSpan(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        parent_span_id=b"" if root else rng.randbytes(8),
        trace_state=rng.choice(["", "vendor=abc", "a=1,b=2"]),
        start_ns=start,
        end_ns=start + rng.randrange(10**9),
        attributes=_attributes(rng),
        events=[(rng.randrange(2**63), "keel.decision", _attributes(rng)) for _ in range(rng.randrange(4))],
        error=rng.random() < 0.2,
    )


def test_random_spans_parse_back_exactly_with_the_protocols_classes() -> None:
    rng = random.Random(7)
    for _ in range(200):
        spans = [_span(rng) for _ in range(rng.randrange(1, 6))]
        resource = _attributes(rng) | {"service.name": "keel"}
        request = ExportTraceServiceRequest()
        request.ParseFromString(encode_request(spans, resource, ("keel.serving", "1.2.3"), NAME))
        (rs,) = request.resource_spans
        assert decoded_attributes(rs.resource.attributes) == resource
        (ss,) = rs.scope_spans
        assert (ss.scope.name, ss.scope.version) == ("keel.serving", "1.2.3")
        assert len(ss.spans) == len(spans)
        for got, want in zip(ss.spans, spans, strict=True):
            assert (got.trace_id, got.span_id, got.parent_span_id) == (
                want.trace_id,
                want.span_id,
                want.parent_span_id,
            )
            assert (got.trace_state, got.name, got.kind) == (want.trace_state, NAME, Span.SPAN_KIND_SERVER)
            assert (got.start_time_unix_nano, got.end_time_unix_nano) == (want.start_ns, want.end_ns)
            assert decoded_attributes(got.attributes) == want.attributes
            assert [(e.time_unix_nano, e.name, decoded_attributes(e.attributes)) for e in got.events] == [
                (t, n, a) for t, n, a in want.events
            ]
            want_status = Status.STATUS_CODE_ERROR if want.error else Status.STATUS_CODE_UNSET
            assert got.status.code == want_status
            remote = 0x200 if want.parent_span_id else 0
            assert got.flags == 0x01 | 0x100 | remote


def test_a_bool_is_not_taken_for_an_int_nor_a_cached_value_for_another_type() -> None:
    spans = [
        FinishedSpan(b"\x01" * 16, b"\x02" * 8, b"", "", 1, 2, {"k": value})
        for value in (True, 1, 1.0, "1", False, 0)
    ]
    request = ExportTraceServiceRequest()
    request.ParseFromString(encode_request(spans, {}, ("s", "v"), NAME))
    got = [decoded_attributes(s.attributes)["k"] for s in request.resource_spans[0].scope_spans[0].spans]
    assert [(type(v), v) for v in got] == [
        (bool, True),
        (int, 1),
        (float, 1.0),
        (str, "1"),
        (bool, False),
        (int, 0),
    ]
