"""`python -m bench.serving --tracing`: the decide route with OpenTelemetry on against off, same run.

Two `keel serve` processes on the same state and decision log, launched as bench.serving
launches Keel: one with KEEL_TRACING_ENDPOINT pointing at an OTLP/HTTP receiver in this process
(bench/otlp_receiver.py, counting the spans it decodes), one without it. Both get the same body
and the same headers, a sampled W3C `traceparent` included, so every traced request records and
exports a span and the only difference is tracing. Rounds alternate which goes first
(bench.serving's `measure_rounds`); each ratio is the median of the per-round ratios (traced
over untraced in the same round: bench.serving's `paired`), with the ratio of the two
endpoints' medians beside it.

Targets (issue 28, item 4): p50 at concurrency 1 <= 1.1x, throughput at --concurrency >= 0.9x.
The traced server is stopped before the spans are counted (its shutdown exports what is queued),
so "spans exported" should equal its 200 answers: a shortfall is spans the exporter's queue
dropped under load (OTEL_BSP_MAX_QUEUE_SIZE), which the request never waited for.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.http_load import Client, Endpoint
from bench.otlp_receiver import OtlpReceiver
from bench.servers import Server, wait_ready
from bench.serving import (
    MODEL,
    answer_of,
    client_and_body,
    decision_rows,
    keel_server,
    measure_rounds,
    missing_decisions,
    note,
    paired,
    prepared,
    ratio,
    server_env,
    state_dir,
    summarize,
)

__all__ = ["run_tracing"]

TARGET_P50_RATIO = 1.1
"""Decide p50 at concurrency 1 with tracing on may be at most this multiple of it with tracing off."""
TARGET_THROUGHPUT_RATIO = 0.9
"""Throughput with tracing on must be at least this fraction of it with tracing off."""
TRACED, PLAIN = "keel_tracing", "keel"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _check(ep: Endpoint, make: Callable[[Endpoint], Client]) -> dict[str, Any]:
    """One request: a 200 with an exact explanation (the two servers decide alike)."""
    d = answer_of(ep, make)["decisions"][0]
    if d.get("explanation_status") != "exact":
        raise RuntimeError(f"{ep.name} answered without an exact explanation: {d.get('explanation_status')}")
    return {k: d.get(k) for k in ("outcome", "abstained", "route")} | {
        "model_version": d["versions"]["model_version"]
    }


def run_tracing(args: argparse.Namespace) -> dict[str, Any]:
    make, body = client_and_body(args)
    with (
        state_dir(args.keep_state) as home,
        tempfile.TemporaryDirectory(prefix="keel-bench-run-") as tmp,
        OtlpReceiver(keep=False) as sink,
    ):
        work = Path(tmp)
        key, prepare_s = prepared(args, home, work)
        servers: list[Server] = []
        try:
            traced_env = server_env(TRACED, home, work, args.threads)
            traced_env["KEEL_TRACING_ENDPOINT"] = sink.url
            servers.append(keel_server(TRACED, traced_env, work))
            servers.append(keel_server(PLAIN, server_env(PLAIN, home, work, args.threads), work))
            ready = wait_ready(servers)
            pids = {s.name: s.proc.pid for s in servers if s.proc is not None}
            note(f"servers ready: {ready}")
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {key}",
                "traceparent": TRACEPARENT,
            }
            traced, plain = (
                Endpoint(s.name, s.port, f"/v1/{MODEL}/decide", body, headers, ids=[]) for s in servers
            )
            answers = {ep.name: _check(ep, make) for ep in (traced, plain)}
            load_before = os.getloadavg()
            db = home / "decisions.db"
            rows_before = decision_rows(db)
            rounds, ok_total = measure_rounds(args, traced, plain, pids, make)
            rows_logged = decision_rows(db) - rows_before
            assert traced.ids is not None and plain.ids is not None
            missing = missing_decisions(db, traced.ids + plain.ids)
            load_after = os.getloadavg()
        finally:
            stopped = {s.name: s.stop() for s in servers}
            note(f"servers stopped: {stopped}")
        spans, exports = sink.span_count, sink.requests
    endpoints = {name: summarize(rounds, name, args.concurrency) for name in (PLAIN, TRACED)}
    over = f"{TRACED}_over_{PLAIN}"
    p50 = paired(rounds, f"p50_{over}")
    thr = paired(rounds, f"throughput_{over}")
    traced_200s = ok_total[TRACED] + 1  # warm-ups are in ok_total; + the check request
    return {
        "benchmark": "bench.serving --tracing: Keel decide route with OpenTelemetry on vs off",
        "endpoints": endpoints,
        "ratios": {
            f"p50_{over}": p50,
            f"p99_{over}": ratio(endpoints[TRACED]["p99_ms"], endpoints[PLAIN]["p99_ms"]),
            f"throughput_{over}": thr,
            f"p50_{over}_ratio_of_medians": ratio(endpoints[TRACED]["p50_ms"], endpoints[PLAIN]["p50_ms"]),
            f"throughput_{over}_ratio_of_medians": ratio(
                endpoints[TRACED]["throughput_rps"], endpoints[PLAIN]["throughput_rps"]
            ),
            f"per_round_p50_{over}": [r[f"p50_{over}"] for r in rounds],
            f"per_round_throughput_{over}": [r[f"throughput_{over}"] for r in rounds],
        },
        "targets": {
            f"p50_{over}_at_most": TARGET_P50_RATIO,
            f"throughput_{over}_at_least": TARGET_THROUGHPUT_RATIO,
            "p50_met": p50 is not None and p50 <= TARGET_P50_RATIO,
            "throughput_met": thr is not None and thr >= TARGET_THROUGHPUT_RATIO,
            "zero_errors": endpoints[TRACED]["errors"] == 0 and endpoints[PLAIN]["errors"] == 0,
            "every_acknowledged_decision_logged": not missing,
        },
        "tracing": {
            "exporter": "OTLP/HTTP protobuf, Keel's batcher (serving/otlp.py; SDK defaults: 5 s delay, "
            "512 per export, queue 2048) to a receiver in the bench process on 127.0.0.1",
            "traced_200s": traced_200s,
            "spans_exported": spans,
            "export_requests": exports,
            "answers": answers,
        },
        "logged": {"rows": rows_logged, "ids_checked": len(traced.ids) + len(plain.ids), "missing": missing},
        "settings": {
            "model": MODEL,
            "case": 'contract example_case of invoice_classification, body {"cases": [case]} to both, '
            "with a sampled traceparent header",
            "threads": args.threads,
            "requests_at_c1": args.requests,
            "warmup_at_c1": args.warmup,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "aggregation": "median over repeats; rounds alternate which server goes first",
            "client": args.client,
            "ready_seconds": ready,
            "prepare_seconds": round(prepare_s, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after],
            },
        },
        "rounds": rounds,
    }
