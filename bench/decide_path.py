"""Benchmark: where one decide's time goes at concurrency 1, and the floors under it. Prints JSON.

`bench.serving` gives decide's latency over HTTP; this splits it. In this process, on the real
runtime `keel serve` builds (serving.runtime.Runtime over a state trained with `keel train`: the
registered models, the SQLite decision log with its group-committing writer thread), one invoice
case at a time is taken through the same calls as the decide route's inline path
(serving.decider.Decider.decide_async), each timed:

- parse: the request body (serving.body_check.parse_request);
- plan: validation, model, exact explanation, policy, audit draw, records and log rows
  (Decider._plan);
- submit: the rows' column values, content digests and queueing (DecisionLog.submit);
- render: the response body, while the writer commits;
- wait: from the rows queued to the loop resumed, split into the writer's own batch time
  (commit: its `on_commit` figure, BEGIN to durable COMMIT) and the hand-offs (waking the
  writer thread and then the event loop).

Medians, and each stage's 99th percentile apart (`p99`): which stage a slow request was slow in.

`decide_async` itself is timed the same way in alternate requests, so the stages can be checked
against the real call. Each runs two ways: back to back, and paced (an idle `--pause-ms` on the
event loop between requests, as a server at concurrency 1 idles while the answer and the next
request cross the network): a CPU that has idled runs the same code slower afterwards, which
is the case a latency measurement at concurrency 1 sees.

Floors beside them: the HTTP stack alone (bench/noop_app.py served as `keel serve` serves Keel,
with bench.serving's client and body: p50/p99 at concurrency 1, throughput at 16 connections,
server CPU per request), and the disk's bare 4 KiB fdatasync (the floor under every durable
commit).

    python -m bench.decide_path [--requests 2000] [--pause-ms 0.5] [--keep-state DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.http_load import Endpoint, RawClient, latency_c1, throughput
from bench.servers import Server, base_env, free_port, measure_cpu, use_state, wait_ready
from bench.serving import MODEL, example_body, fsync_probe, prepare_state, state_dir

if TYPE_CHECKING:
    from keel.serving.runtime import Runtime

__all__ = ["main"]

STAGES = ("parse", "plan", "submit", "render", "wait", "commit", "hand_offs")


def note(msg: str) -> None:
    print(f"[bench.decide_path] {msg}", file=sys.stderr, flush=True)


def start_runtime(home: Path, prom: Path) -> Runtime:
    """The runtime `keel serve` builds, in this process, over the state in `home`."""
    use_state(os.environ, home)
    # As `keel serve` does before Prometheus' client is imported: its metric values then live
    # in per-process files, as the server's do.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(prom))
    from keel.serving.keys import KeySettings
    from keel.serving.runtime import Runtime
    from keel.serving.settings import ServingSettings
    from keel.settings import StateSettings

    rt = Runtime.start(StateSettings(), ServingSettings(), KeySettings(), None)
    if not rt.loaded.wait(300):
        rt.close()
        raise RuntimeError("the models did not load within 300 s")
    return rt


def _us(values: list[float], q: float = 50) -> float:
    return round(float(np.percentile(values, q)) * 1e6, 1)


async def _path(rt: Runtime, body: bytes, n: int, pause: float) -> dict[str, Any]:
    """`n` staged requests and `n` decide_async calls, alternating; medians in microseconds."""
    from keel.serving.body_check import parse_request
    from keel.serving.decide_endpoint import render
    from keel.serving.decision_record import public

    decider, log = rt.decider, rt.decisions
    commits: list[float] = []
    hook = log.on_commit

    def on_commit(rows: int, seconds: float) -> None:
        commits.append(seconds)
        if hook is not None:
            hook(rows, seconds)

    log.on_commit = on_commit
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    whole: list[float] = []
    try:
        for i in range(2 * n):
            if pause:
                await asyncio.sleep(pause)
            seen = len(commits)
            t0 = time.perf_counter()
            if i % 2:
                await decider.decide_async(MODEL, parse_request(body)[0], "bench", render=render)
                t5 = time.perf_counter()
            else:
                cases, _ = parse_request(body)
                t1 = time.perf_counter()
                plan = decider._plan(MODEL, cases, "bench", None)
                t2 = time.perf_counter()
                committed = log.submit("decisions", plan.rows)
                t3 = time.perf_counter()
                render([public(r["record"]) for r in plan.rows])
                t4 = time.perf_counter()
                await committed
                t5 = time.perf_counter()
            await asyncio.sleep(0)  # the writer's hook runs on the loop after the wake-up
            if len(commits) != seen + 1:  # each commit is this request's alone
                raise RuntimeError("expected one commit per request at concurrency 1")
            if i % 2:
                whole.append(t5 - t0)
                continue
            for name, took in zip(STAGES[:5], (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                stages[name].append(took)
            stages["commit"].append(commits[-1])
            stages["hand_offs"].append((t5 - t3) - commits[-1])
    finally:
        log.on_commit = hook
    out: dict[str, Any] = {f"{name}_us": _us(values) for name, values in stages.items()}
    out["stages_sum_us"] = round(sum(out[f"{s}_us"] for s in STAGES[:5]), 1)
    out["decide_async_us"] = _us(whole)
    out["p99"] = {f"{name}_us": _us(values, 99) for name, values in stages.items()}
    out["p99"]["decide_async_us"] = _us(whole, 99)
    return out


def _model_us(rt: Runtime, body: bytes, n: int, pause: float) -> float:
    """Predict, calibration and the exact explanation of one validated case (no log, no records)."""
    from keel.serving.body_check import parse_request

    served = rt.models.get(MODEL)
    model = served.loaded.model
    checked = model.contract.validate_records(parse_request(body)[0])
    assert checked.matrix is not None
    took = []
    for _ in range(n):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        model.predict_matrix(checked.matrix)
        took.append(time.perf_counter() - t0)
    return _us(took)


def http_floor(body: bytes, work: Path, requests: int, duration: float) -> dict[str, Any]:
    """bench/noop_app.py over HTTP with bench.serving's client: what the stack costs by itself."""
    port = free_port()
    env = base_env(work)
    server = Server(
        "noop", [sys.executable, "-m", "bench.noop_app", "--port", str(port)], env, work / "noop.log", port
    )
    server.start()
    try:
        wait_ready([server])
        assert server.proc is not None
        pid = server.proc.pid
        ep = Endpoint("noop", port, f"/v1/{MODEL}/decide", body, {"Content-Type": "application/json"})
        c1 = measure_cpu(pid, partial(latency_c1, ep, RawClient, requests, 200))
        c16 = measure_cpu(pid, partial(throughput, ep, RawClient, 16, duration, 10**7))
    finally:
        server.stop()
    return {
        "p50_ms": c1["p50_ms"],
        "p99_ms": c1["p99_ms"],
        "server_cpu_ms_per_request_c1": c1.get("server_cpu_ms_per_request"),
        "throughput_rps_c16": c16["throughput_rps"],
        "server_cpu_ms_per_request_c16": c16.get("server_cpu_ms_per_request"),
        "errors": c1["errors"] + c16["errors"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    body = example_body()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    with state_dir(args.keep_state) as home, tempfile.TemporaryDirectory(prefix="keel-bench-path-") as tmp:
        work = Path(tmp)
        prepare_state(home, args.invoice_rows, args.other_rows, work)
        note("HTTP floor: bench.noop_app")
        floor = http_floor(body, work, args.requests, args.duration)
        fsync = fsync_probe(home)
        prom = work / "prom"
        prom.mkdir()
        rt = start_runtime(home, prom)
        try:
            result: dict[str, Any] = {}

            async def measure() -> None:
                await _path(rt, body, max(200, args.requests // 10), 0.0)  # warm-up
                for name, pause in (("back_to_back", 0.0), ("paced", args.pause_ms / 1000)):
                    note(f"{name}: {args.requests} staged requests and {args.requests} decide_async calls")
                    result[name] = await _path(rt, body, args.requests, pause)
                    result[name]["model_predict_and_explain_us"] = _model_us(rt, body, args.requests, pause)

            import uvloop  # as uvicorn runs `keel serve` (loop "auto")

            uvloop.run(measure())
        finally:
            rt.close()
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "benchmark": "bench.decide_path: one invoice decide at concurrency 1, stage by stage, in-process",
        "model": MODEL,
        "requests_per_measure": args.requests,
        "pause_ms": args.pause_ms,
        **result,
        "floors": {"http_noop_app": floor, "disk_fdatasync_4k": fsync},
        "load_average_1_5_15": load,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=2000, help="requests per measure")
    p.add_argument("--pause-ms", type=float, default=0.5, help="idle time between paced requests")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the HTTP floor's load at 16")
    p.add_argument("--keep-state", default=None, help="reuse and keep this state folder")
    p.add_argument("--invoice-rows", type=int, default=40000)
    p.add_argument("--other-rows", type=int, default=5000)
    args = p.parse_args(argv)
    if args.requests < 10:
        p.error("--requests must be at least 10")
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
