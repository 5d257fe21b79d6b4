"""serving/tracing.py without a server: off means no OpenTelemetry SDK at all; on, the real SDK
and exporter send to a real OTLP/HTTP receiver (bench/otlp_receiver.py) in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from bench.otlp_receiver import OtlpReceiver, ReceivedSpan
from keel.serving.tracing import Tracing, TracingSettings, traces_url

ERROR = 2  # OTLP Status.StatusCode STATUS_CODE_ERROR
TRACE_ID, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


def test_the_endpoint_is_a_base_url_or_the_traces_url_itself() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url(" http://collector:4318/ ") == "http://collector:4318/v1/traces"
    assert traces_url("https://vendor.example/otlp/v1/traces") == "https://vendor.example/otlp/v1/traces"


def test_off_imports_neither_the_sdk_nor_the_exporter() -> None:
    """Without an endpoint the OpenTelemetry SDK and exporter are not imported (a fresh
    interpreter: pytest's own process has the SDK loaded by other tests' imports)."""
    code = (
        "import sys\n"
        "from keel.serving.tracing import TracingSettings, start_tracing\n"
        "assert start_tracing(TracingSettings(), 1000) is None\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))]\n"
        "print(sorted(loaded))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_TRACING_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    env["KEEL_TRACING_ENDPOINT"] = "  "
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def _exported(headers: list[tuple[bytes, bytes]], status: int, error: str | None) -> list[ReceivedSpan]:
    """One span begun with `headers`, shown a decision and ended with `status`; close flushes it."""
    with OtlpReceiver() as receiver:
        tracing = Tracing(TracingSettings(endpoint=receiver.url, service_name="keel-unit"), 1000)
        span = tracing.begin(headers)
        span.decided([_decision()])
        span.end(status, error)
        tracing.close()
        return receiver.received()


def _decision() -> Any:
    return {
        "decision_id": "d-1",
        "model": "routing",
        "versions": {"model_version": "4", "alias": "champion"},
        "outcome": None,
        "abstained": True,
        "route": "human_review",
    }


def test_a_caller_span_with_tracestate_is_continued_and_an_abstention_has_no_outcome() -> None:
    headers = [(b"traceparent", f"00-{TRACE_ID}-{PARENT}-01".encode()), (b"tracestate", b"vendor=abc")]
    (span,) = _exported(headers, 200, None)
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (TRACE_ID, PARENT, "vendor=abc")
    assert span.resource["service.name"] == "keel-unit"
    assert span.attributes["keel.decision.abstained"] is True
    assert span.attributes["keel.decision.route"] == "human_review"
    assert "keel.decision.outcome" not in span.attributes and "error.type" not in span.attributes


def test_a_5xx_is_a_failed_span_without_the_unacknowledged_decision() -> None:
    (span,) = _exported([(b"traceparent", b"00-not-a-trace-01")], 503, "LogUnavailable")
    assert span.parent_span_id == "" and span.trace_id != TRACE_ID  # a malformed one starts a trace
    assert span.status_code == ERROR and span.attributes["error.type"] == "LogUnavailable"
    assert not any(k.startswith("keel.") for k in span.attributes)


def test_an_unsampled_caller_trace_is_not_exported() -> None:
    assert _exported([(b"traceparent", f"00-{TRACE_ID}-{PARENT}-00".encode())], 200, None) == []


def test_the_sample_ratio_keeps_its_share_of_traces_started_here_and_never_overrides_a_caller() -> None:
    with OtlpReceiver() as receiver:
        for ratio, started in ((0.0, 0), (1.0, 40)):
            tracing = Tracing(TracingSettings(endpoint=receiver.url, sample_ratio=ratio), 10)
            for _ in range(40):
                span = tracing.begin([])
                span.decided([_decision()])
                span.end(200, None)
            span = tracing.begin([(b"traceparent", f"00-{TRACE_ID}-{PARENT}-01".encode())])
            span.end(200, None)
            tracing.close()
            got = receiver.received()
            receiver.spans.clear()
            assert len([s for s in got if s.parent_span_id == ""]) == started
            assert [s.trace_id for s in got if s.parent_span_id] == [TRACE_ID]
        half = Tracing(TracingSettings(endpoint=receiver.url, sample_ratio=0.5), 10)
        for _ in range(2000):
            half.begin([]).end(200, None)
        half.close()
        # Binomial(2000, 0.5): outside [900, 1100] with probability about 1e-5.
        assert 900 <= len(receiver.received()) <= 1100
