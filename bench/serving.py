"""Benchmark: Keel's decide route against a bare BentoML predict endpoint, side by side. Prints JSON.

Both servers run in the same run, each in its own subprocess on 127.0.0.1: `keel serve`, and
`python -m bench.bare_service` (a plain `@bentoml.api` service sharing no code with Keel,
launched the same way: one process, uvicorn over the service's ASGI app, the same thread
count). Both use the same registered model version: the bare one reads its booster text and a
feature spec this benchmark writes from that version. Both get the contract's example invoice
case as `{"cases": [case]}`. The bare endpoint parses the body (BentoML + pydantic), encodes
the case and calls `booster.predict`; Keel's decide route also authenticates, validates the case
against the contract, explains the decided class (exact TreeSHAP), applies the policy and
commits the decision to its SQLite log (WAL, synchronous=FULL) before answering. Explanation
and durable logging cannot be turned off in Keel, so they are on in every measurement; the
benchmark checks both, and afterwards looks up every decision_id Keel answered in the log.

Measured per endpoint and round: latency at concurrency 1 (`--requests` sequential requests on
one keep-alive connection after `--warmup`), then throughput at `--concurrency` (one thread and
one keep-alive connection each, for `--duration` seconds). Rounds alternate which endpoint goes
first; reported numbers are medians over `--repeats` rounds (at least three), with each
round's ratios and load averages beside them. Non-200 answers and failed requests are counted
as errors and excluded from latencies and throughput. Each phase also records the server
process's CPU time per answered request (from /proc), the figure to judge changes by on a busy
machine, and the run records a bare 4 KiB fdatasync's latency on the log's disk before and
after the rounds: the floor under every durable commit, which the bare endpoint never pays.

The load generator (bench/http_load.py) runs in this process on the same machine.

Targets (issue 26; issue 9 asked for 1.0x, 1.0x and 1.0x): Keel's p50 <= 0.75x the bare
endpoint's and its p99 <= 1.0x, throughput at 16 connections >= 2.5x. `bench.decide_path`
splits one decide's latency into its stages and prints the floors under them.

    python -m bench.serving [--requests 1000] [--duration 5] [--concurrency 16] [--repeats 5]
                            [--keep-state DIR] [--threads 8] [--client raw|httpx] [--tracing]

With --tracing the same rounds compare Keel with OpenTelemetry on against Keel with it off
instead (bench/serving_tracing.py: targets p50 <= 1.1x, throughput >= 0.9x).

Without --keep-state the state (models trained with `keel train`, the decision log) lives in a
temporary folder removed afterwards; with it, DIR is reused (models already registered there
are not retrained) and kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_load import Client, Endpoint, HttpxClient, RawClient, latency_c1, throughput
from bench.servers import Server, base_env, free_port, keel_cli, measure_cpu, use_state, wait_ready
from keel.feature_defs.contract import MODEL_NAMES, load_contract

MODEL = "invoice_classification"
TARGET_P50_RATIO = 0.75
"""Keel's decide p50 at concurrency 1 may be at most this multiple of the bare endpoint's."""
TARGET_P99_RATIO = 1.0
"""Keel's decide p99 at concurrency 1 may be at most this multiple of the bare endpoint's."""
TARGET_THROUGHPUT_RATIO = 2.5
"""Keel's throughput at concurrency 16 must be at least this fraction of the bare endpoint's."""


def note(msg: str) -> None:
    print(f"[bench.serving] {msg}", file=sys.stderr, flush=True)


def prepare_state(home: Path, invoice_rows: int, other_rows: int, work: Path) -> str:
    """Train (unless registered already) and return a fresh decide key."""
    env = base_env(home)
    log = work / "prepare.log"
    for name in MODEL_NAMES:
        rows = invoice_rows if name == MODEL else other_rows
        note(f"keel train {name} --rows {rows} --if-missing")
        with open(log, "ab") as out:
            trained = subprocess.run(
                keel_cli("train", name, "--rows", str(rows), "--if-missing"),
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
            )  # fmt: skip
        # Exit 1: the small side model certified nothing, so it is registered as challenger only
        # and not served; the bench decides invoices, which must certify.
        if trained.returncode != 0 and (trained.returncode != 1 or name == MODEL):
            raise RuntimeError(f"keel train {name} exited {trained.returncode}; see {log}")
    key_name = f"bench-{os.getpid()}-{int(time.time() * 1000)}"
    done = subprocess.run(
        keel_cli("keys", "add", key_name, "--role", "decide"),
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("export KEEL_KEY="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no key in `keel keys add` output: {done.stdout!r}")


def filesystem_of(path: Path) -> str:
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def decision_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    finally:
        conn.close()


def missing_decisions(db: Path, ids: list[bytes]) -> int:
    """How many of the answered decision_ids the log does not hold."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("CREATE TEMP TABLE answered (decision_id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO answered VALUES (?)", ((i.decode(),) for i in ids))
        found = conn.execute(
            "SELECT COUNT(*) FROM answered a JOIN decisions d ON d.decision_id = a.decision_id"
        ).fetchone()[0]
        return len(ids) - int(found)  # a repeated id (never expected) also counts as missing
    finally:
        conn.close()


def bare_spec(home: Path, work: Path) -> Path:
    """Write the booster text and feature spec of the served invoice model for bench.bare_service."""
    out = work / "bare-spec.json"
    if out.exists():
        return out
    from keel.models.registry import load, resolve
    from keel.settings import StateSettings, prepare_state

    use_state(os.environ, home)
    prepare_state(StateSettings())
    loaded = load(resolve(MODEL, "champion"), work / "bare-cache")
    contract = loaded.model.contract
    booster = work / "bare-booster.txt"
    booster.write_text(loaded.model.tree.booster.model_to_string())
    spec = {
        "booster": str(booster),
        "model_version": loaded.ref.version,
        "classes": list(contract.classes),
        "fields": [{"name": f.name, "categories": list(f.categories)} for f in contract.fields],
        "features": [f.name for f in contract.feature_fields],
        "derived": [list(d.args) for d in contract.derived],
    }
    out.write_text(json.dumps(spec))
    return out


def log_pragmas(db: Path) -> dict[str, Any]:
    """What Keel's own connection code sets (serving.database.Database.connect)."""
    from keel.decision_log.database import Database

    conn = Database(f"sqlite:///{db}").connect()
    try:
        sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()
    return {
        "journal_mode": mode,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
    }


def fsync_probe(folder: Path, n: int = 200) -> dict[str, float]:
    """Latency of a bare 4 KiB overwrite + fdatasync in the log's folder: the disk's own floor
    under each durable commit (SQLite WAL, synchronous=FULL, syncs once per commit)."""
    path = folder / f".fsync-probe-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    took = []
    try:
        for i in range(n):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    ms = np.asarray(took) * 1000
    return {"p50_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3)}


def server_stack() -> dict[str, str]:
    """What uvicorn runs both servers on (both launch it with the same defaults: loop and HTTP
    parser "auto", so uvloop and httptools when installed, as here for both)."""
    import importlib.metadata as md
    import importlib.util

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    uvloop = importlib.util.find_spec("uvloop") is not None
    httptools = importlib.util.find_spec("httptools") is not None
    return {
        "uvicorn": version("uvicorn"),
        "loop": f"uvloop {version('uvloop')}" if uvloop else "asyncio",
        "http": f"httptools {version('httptools')}" if httptools else "h11",
        "bentoml": version("bentoml"),
    }


def answer_of(ep: Endpoint, make: Callable[[Endpoint], Client]) -> Any:
    """One request's JSON answer, which must be a 200."""
    c = make(ep)
    try:
        status, body = c.post()
    finally:
        c.close()
    if status != 200:
        raise RuntimeError(f"{ep.name}: HTTP {status}: {body[:500]!r}")
    return json.loads(body)


def check_answers(keel: Endpoint, bare: Endpoint, make: Callable[[Endpoint], Client]) -> dict[str, Any]:
    """One request each: both 200, same model version, same decided class, explanation present."""
    out = {ep.name: answer_of(ep, make) for ep in (keel, bare)}
    d = out["keel"]["decisions"][0]
    probs = out["bare"]["probabilities"][0]
    bare_class = max(probs, key=probs.get)
    keel_class = (d.get("explanation") or {}).get("class")
    if d.get("explanation_status") != "exact" or not d.get("explanation"):
        raise RuntimeError(f"keel answered without an exact explanation: {d.get('explanation_status')}")
    if str(d["versions"]["model_version"]) != str(out["bare"]["model_version"]):
        raise RuntimeError("keel and the bare endpoint serve different model versions")
    return {
        "model_version": out["bare"]["model_version"],
        "same_model_version": True,
        "same_decided_class": keel_class == bare_class,
        "decided_class": bare_class,
        "keel_explanation_status": d["explanation_status"],
        "keel_outcome": d.get("outcome"),
        "keel_abstained": d.get("abstained"),
        "keel_route": d.get("route"),
        "keel_response_bytes": len(json.dumps(out["keel"])),
        "bare_response_bytes": len(json.dumps(out["bare"])),
    }


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 3) if vals else None


def paired(rounds: list[dict[str, Any]], key: str) -> float | None:
    """The median of a ratio measured within each round: the estimate the alternating rounds are
    designed for. Both servers share one state and decision log, which grows over the run, so
    each drifts (throughput fell 17% from the first round to the last in one quiet run); a ratio
    of the two endpoints' own medians can pair values from different rounds and mixes that drift
    into the comparison. Reports print it too, as `..._ratio_of_medians`."""
    return _median([r.get(key) for r in rounds])


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# -- the run -----------------------------------------------------------------------------------
@contextlib.contextmanager
def state_dir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="keel-bench-state-") as tmp:
        yield Path(tmp)


def server_env(name: str, home: Path, work: Path, threads: int) -> dict[str, str]:
    """A benchmarked server's environment: the shared state, its thread count, folders of its own."""
    env = base_env(home)
    env["KEEL_SERVE_THREADS"] = env["BARE_THREADS"] = str(threads)
    for var, sub in (("PROMETHEUS_MULTIPROC_DIR", "prom"), ("BENTOML_HOME", "bentoml")):
        d = work / f"{name}-{sub}"
        d.mkdir()
        env[var] = str(d)
    return env


def keel_server(name: str, env: dict[str, str], work: Path) -> Server:
    """`keel serve` on a free 127.0.0.1 port, started."""
    port = free_port()
    argv = keel_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    return Server(name, argv, env, work / f"{name}.log", port).start()


def measure_rounds(
    args: argparse.Namespace,
    subject: Endpoint,
    baseline: Endpoint,
    pids: dict[str, int],
    make: Callable[[Endpoint], Client],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Alternating rounds (which endpoint goes first flips each round): latency at concurrency 1,
    then throughput, per endpoint; each round's `subject` over `baseline` ratios and load.
    Returns the rounds and each endpoint's count of 200 answers."""
    over = f"{subject.name}_over_{baseline.name}"
    ok_total = {subject.name: 0, baseline.name: 0}
    tk = f"throughput_c{args.concurrency}"
    rounds: list[dict[str, Any]] = []
    for r in range(args.repeats):
        order = (baseline, subject) if r % 2 == 0 else (subject, baseline)
        rnd: dict[str, Any] = {"round": r + 1, "order": [e.name for e in order]}
        for ep in order:
            note(f"round {r + 1}: {ep.name} latency, {args.requests} requests at concurrency 1")
            res = measure_cpu(pids[ep.name], partial(latency_c1, ep, make, args.requests, args.warmup))
            rnd.setdefault(ep.name, {})["latency_c1"] = res
            ok_total[ep.name] += res.pop("ok_total")
        for ep in order:
            note(f"round {r + 1}: {ep.name} throughput, {args.duration} s at c{args.concurrency}")
            phase = partial(throughput, ep, make, args.concurrency, args.duration, args.max_requests)
            res = measure_cpu(pids[ep.name], phase)
            rnd[ep.name][tk] = res
            ok_total[ep.name] += res.pop("ok_total")
        rnd[f"p50_{over}"] = ratio(
            rnd[subject.name]["latency_c1"]["p50_ms"], rnd[baseline.name]["latency_c1"]["p50_ms"]
        )
        rnd[f"throughput_{over}"] = ratio(
            rnd[subject.name][tk]["throughput_rps"], rnd[baseline.name][tk]["throughput_rps"]
        )
        rnd["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        rounds.append(rnd)
        note(
            f"round {r + 1}: p50 ratio {rnd[f'p50_{over}']}, "
            f"throughput ratio {rnd[f'throughput_{over}']}, load {rnd['loadavg_1_5_15']}"
        )
    return rounds, ok_total


def example_body() -> bytes:
    """The body every endpoint gets: `{"cases": [case]}` with the invoice contract's example case."""
    case = load_contract(MODEL).example_case
    return json.dumps({"cases": [case]}, separators=(",", ":")).encode()


def client_and_body(args: argparse.Namespace) -> tuple[Callable[[Endpoint], Client], bytes]:
    """The client kind asked for, and the body every endpoint gets (`example_body`)."""
    make: Callable[[Endpoint], Client] = RawClient if args.client == "raw" else HttpxClient
    return make, example_body()


def prepared(args: argparse.Namespace, home: Path, work: Path) -> tuple[str, float]:
    """prepare_state with the run's sizes: a decide key and the seconds it took."""
    t0 = time.perf_counter()
    key = prepare_state(home, args.invoice_rows, args.other_rows, work)
    return key, time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    make, body = client_and_body(args)
    with state_dir(args.keep_state) as home, tempfile.TemporaryDirectory(prefix="keel-bench-run-") as tmp:
        work = Path(tmp)
        key, prepare_s = prepared(args, home, work)
        servers: list[Server] = []
        try:
            envs = {}
            for name in ("keel", "bare"):
                envs[name] = server_env(name, home, work, args.threads)
                envs[name]["BARE_SPEC"] = str(bare_spec(home, work))
            servers.append(keel_server("keel", envs["keel"], work))
            kport, bport = servers[0].port, free_port()
            servers.append(
                Server(
                    "bare",
                    [sys.executable, "-m", "bench.bare_service", "--host", "127.0.0.1", "--port", str(bport)],
                    envs["bare"],
                    work / "bare.log",
                    bport,
                ).start()
            )
            ready = wait_ready(servers)
            pids = {s.name: s.proc.pid for s in servers if s.proc is not None}
            load_before = os.getloadavg()
            note(f"servers ready: {ready}")
            json_ct = {"Content-Type": "application/json"}
            keel = Endpoint(
                "keel", kport, f"/v1/{MODEL}/decide", body, {**json_ct, "Authorization": f"Bearer {key}"}
            )
            bare = Endpoint("bare", bport, "/v1/predict", body, json_ct)
            check = check_answers(keel, bare, make)
            keel = Endpoint(keel.name, keel.port, keel.path, keel.body, keel.headers, ids=[])
            info_client = RawClient(Endpoint("bare-info", bport, "/v1/info", b"{}", json_ct))
            try:
                info = json.loads(info_client.post()[1])
            finally:
                info_client.close()
            db = home / "decisions.db"
            rows_before = decision_rows(db)
            fsync_before = fsync_probe(home)
            rounds, ok_total = measure_rounds(args, keel, bare, pids, make)
            keel_ok = ok_total["keel"]
            rows_logged = decision_rows(db) - rows_before
            assert keel.ids is not None
            missing = missing_decisions(db, keel.ids)
            load = {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            }
            fsync = {"before_rounds": fsync_before, "after_rounds": fsync_probe(home)}
            pragmas = log_pragmas(db)
        finally:
            stopped = {s.name: s.stop() for s in servers}
            note(f"servers stopped: {stopped}")
    logged = {"rows": rows_logged, "answered": keel_ok, "ids_checked": len(keel.ids), "ids_missing": missing}
    return report(args, rounds, check, info, ready, pragmas, logged, prepare_s, home, load, fsync)


def summarize(rounds: list[dict[str, Any]], name: str, concurrency: int) -> dict[str, Any]:
    """One endpoint's medians over the rounds: latency, throughput, errors, server CPU."""
    c1 = [r[name]["latency_c1"] for r in rounds]
    cn = [r[name][f"throughput_c{concurrency}"] for r in rounds]
    out = {
        "p50_ms": _median([x["p50_ms"] for x in c1]),
        "p99_ms": _median([x["p99_ms"] for x in c1]),
        "throughput_rps": _median([x["throughput_rps"] for x in cn]),
        "errors": sum(x["errors"] for x in c1 + cn),
        "error_samples": [s for x in c1 + cn for s in x["error_samples"]][:3],
        "throughput_phase_p50_ms": _median([x["p50_ms"] for x in cn]),
        "throughput_phase_p99_ms": _median([x["p99_ms"] for x in cn]),
        "server_cpu_ms_per_request_latency_phase": _median([x.get("server_cpu_ms_per_request") for x in c1]),
        "server_cpu_ms_per_request_throughput_phase": _median(
            [x.get("server_cpu_ms_per_request") for x in cn]
        ),
        "server_cpus_busy_throughput_phase": _median([x.get("server_cpus_busy") for x in cn]),
    }
    # The per-request server CPU, from the throughput phase.
    out["server_cpu_ms_per_request"] = out["server_cpu_ms_per_request_throughput_phase"]
    return out


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    check: dict[str, Any],
    info: dict[str, Any],
    ready: dict[str, float],
    pragmas: dict[str, Any],
    logged: dict[str, Any],
    prepare_s: float,
    home: Path,
    load: dict[str, list[float]],
    fsync: dict[str, dict[str, float]],
) -> dict[str, Any]:
    endpoints = {name: summarize(rounds, name, args.concurrency) for name in ("bare", "keel")}
    p50_ratio = paired(rounds, "p50_keel_over_bare")
    thr_ratio = paired(rounds, "throughput_keel_over_bare")
    p99_ratio = ratio(endpoints["keel"]["p99_ms"], endpoints["bare"]["p99_ms"])
    return {
        "benchmark": "bench.serving: Keel decide route vs bare BentoML booster.predict endpoint",
        "endpoints": endpoints,
        "ratios": {
            "p50_keel_over_bare": p50_ratio,
            "p99_keel_over_bare": p99_ratio,
            "throughput_keel_over_bare": thr_ratio,
            "p50_keel_over_bare_ratio_of_medians": ratio(
                endpoints["keel"]["p50_ms"], endpoints["bare"]["p50_ms"]
            ),
            "throughput_keel_over_bare_ratio_of_medians": ratio(
                endpoints["keel"]["throughput_rps"], endpoints["bare"]["throughput_rps"]
            ),
            "per_round_p50_keel_over_bare": [r["p50_keel_over_bare"] for r in rounds],
            "per_round_throughput_keel_over_bare": [r["throughput_keel_over_bare"] for r in rounds],
        },
        "targets": {
            "p50_keel_over_bare_at_most": TARGET_P50_RATIO,
            "p99_keel_over_bare_at_most": TARGET_P99_RATIO,
            "throughput_keel_over_bare_at_least": TARGET_THROUGHPUT_RATIO,
            "p50_met": p50_ratio is not None and p50_ratio <= TARGET_P50_RATIO,
            "p99_met": p99_ratio is not None and p99_ratio <= TARGET_P99_RATIO,
            "throughput_met": thr_ratio is not None and thr_ratio >= TARGET_THROUGHPUT_RATIO,
            "zero_errors": endpoints["keel"]["errors"] == 0 and endpoints["bare"]["errors"] == 0,
            "every_acknowledged_decision_logged": not logged["ids_missing"]
            and logged["ids_checked"] == logged["answered"],
        },
        "keel_features": {
            "explanation": "on: exact TreeSHAP of the decided class computed for every decision "
            f"(explanation_status={check['keel_explanation_status']!r} checked)",
            "durable_logging": "on: SQLite decision log "
            f"(journal_mode={pragmas['journal_mode']}, synchronous={pragmas['synchronous']}), each decision "
            "committed (group commit, hash chained) before its response",
            "disk_fdatasync_4k": fsync,
            "decisions_logged_during_run": logged["rows"],
            "keel_200s_during_run": logged["answered"],
            "decision_ids_looked_up_in_log": logged["ids_checked"],
            "decision_ids_missing_from_log": logged["ids_missing"],
            "auth": "on (Bearer key, decide role)",
        },
        "settings": {
            "model": MODEL,
            "model_version": check["model_version"],
            "same_model_version": check["same_model_version"],
            "booster_sha256": info.get("booster_sha256"),
            "booster_trees": info.get("booster_trees"),
            "invoice_train_rows": info.get("train_rows"),
            "invoice_train_rows_requested": args.invoice_rows,
            "other_models_train_rows_requested": args.other_rows,
            "case": 'contract example_case of invoice_classification, body {"cases": [case]} to both',
            "same_decided_class": check["same_decided_class"],
            "keel_answer": {k: check[k] for k in ("keel_outcome", "keel_abstained", "keel_route")},
            "response_bytes": {"keel": check["keel_response_bytes"], "bare": check["bare_response_bytes"]},
            "bare_per_request": "BentoML sync @bentoml.api: parse JSON body (pydantic request model) -> "
            "encode the case (own code, category codes from the spec file) -> "
            "booster.predict(row, num_threads=1) -> class probabilities",
            "keel_per_request": "auth -> body limit -> parse (orjson) -> contract validation -> predict -> "
            "TreeSHAP of the decided class -> policy -> durable log commit -> response",
            "servers": "one process each, uvicorn.run with the same arguments (loop and HTTP parser "
            "auto) over the service's BentoML app (Service.to_asgi(is_main=True)), workers=1, BentoML "
            "metrics middleware off in both; Keel answers its decide route in front of BentoML's "
            "middleware (serving/service.py asgi_app); bench/bare_service.py imports nothing of Keel",
            "server_stack": server_stack(),
            "threads": args.threads,
            "requests_at_c1": args.requests,
            "warmup_at_c1": args.warmup,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "max_requests_per_throughput_phase": args.max_requests,
            "repeats": args.repeats,
            "aggregation": "median over repeats; rounds alternate which endpoint goes first",
            "client": f"{args.client}: one keep-alive HTTP/1.1 connection per client thread "
            "(bench process, same machine)",
            "ready_seconds": ready,
            "prepare_seconds": round(prepare_s, 1),
            "state": {"kept": str(home) if args.keep_state else None, "filesystem": filesystem_of(home)},
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_1_5_15": load,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        },
        "rounds": rounds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="requests at concurrency 1 per round")
    p.add_argument("--warmup", type=int, default=100, help="warm-up requests before each latency phase")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput phase")
    p.add_argument("--concurrency", type=int, default=16, help="client threads in the throughput phase")
    p.add_argument("--repeats", type=int, default=5, help="rounds (each measures both endpoints; at least 3)")
    p.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per throughput phase")
    p.add_argument("--keep-state", metavar="DIR", help="state folder to reuse and keep (default: temp)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("KEEL_SERVE_THREADS", "8")))
    p.add_argument("--invoice-rows", type=int, default=40_000, help="training rows of the invoice model")
    p.add_argument("--other-rows", type=int, default=5_000, help="training rows of the two other models")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw")
    p.add_argument(
        "--tracing",
        action="store_true",
        help="compare Keel with OpenTelemetry on (KEEL_TRACING_ENDPOINT) and off instead of Keel "
        "with the bare endpoint (bench/serving_tracing.py)",
    )
    args = p.parse_args(argv)
    for name in ("requests", "concurrency", "max_requests", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.repeats < 3:
        p.error("--repeats must be at least 3 (the target is a median over three alternating rounds)")
    if not 0 < args.duration <= 600:
        p.error("--duration must be in (0, 600] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM to the benchmark still runs the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.tracing:
        from bench.serving_tracing import run_tracing

        print(json.dumps(run_tracing(args), indent=2))
    else:
        print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
