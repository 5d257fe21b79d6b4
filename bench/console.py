"""Benchmark: the review console's pages and searches over a large PostgreSQL decision log.

Fills a fresh PostgreSQL database (created beside `test` on 127.0.0.1:5432, dropped afterwards
unless --keep) with N decisions over the last 7 days, as bench.monitoring fills its log (a pool
decided by Keel's own decider, re-logged under new ids and times by the bulk loader), plus
feedback on a share of the cases routed to a person and a few automatic ones (some overrides,
with reasons), also through the bulk loader. Runs `keel monitor` once so the aggregate pages
have their stored summaries, starts a real `keel serve` on 127.0.0.1, signs in through the
console's form like a browser (CSRF token, session cookie) and times every page and each search
of a fixed query mix (including searches that match nothing), K times each after one warm-up.

Times are measured by the client on 127.0.0.1 from request to the last byte of the answer
(loopback adds well under a millisecond). Prints JSON: p50/p95 per page and search, the
server's RSS before and after the requests (its process tree), and the load average.

    python -m bench.console [--decisions 10000000] [--requests 30] [--keep]
    python -m bench.console --reuse LOG_URL HOME   # time again on a kept log (no fill)

A run with --keep keeps the filled database and the home folder (registry, keys) and prints
both, so the pages can be timed again after a change without the fill (24 minutes at 10M).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np

from bench.monitoring import MODEL, build_log, child, peak_rss_wrapper, vacuum_analyze
from bench.servers import Server, base_env, free_port, keel_cli, wait_ready

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAYS = 7
REASONS = ("wrong vendor master", "PO on file", "tax code changed", "duplicate of an earlier invoice")
BUDGET_MS = 300


def create_database(admin_url: str) -> str:
    """A new database on the server of `admin_url` (connected through it); its URL."""
    import psycopg

    name = f"keel_bench_console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fill_feedback(url: str, routed_share: float, auto_every: int, seed: int) -> dict[str, Any]:
    """Feedback, as reviewers would give it, on `routed_share` of the decisions routed to a
    person and one automatic decision in `auto_every`: first answers from minutes to two days
    after the decision (never later than now), one in five decided cases overridden with a reason."""
    from keel.decision_log import Database
    from keel.decision_log.bulk import BulkLoader
    from keel.feature_defs.contract import load_contract

    classes = load_contract(MODEL).classes
    db = Database(url)
    now = datetime.now(UTC)
    rng = np.random.default_rng(seed)
    cut = int(routed_share * 100)
    sql = (
        "SELECT decision_id, model_version, outcome, abstained, created_at, seq FROM decisions "
        f"WHERE (route <> 'auto' AND mod(seq, 100) < {cut}) "
        f"OR (route = 'auto' AND mod(seq, {int(auto_every)}) = 0) "
        "ORDER BY seq"
    )

    def rows() -> Iterator[dict[str, Any]]:
        with db.reading() as reader:
            for chunk in reader.stream(sql, (), 20_000):
                delays = rng.exponential(6 * 3600, size=len(chunk)).clip(60, 2 * 86400)
                for (decision_id, version, outcome, abstained, created_at, seq), delay in zip(
                    chunk, delays, strict=True
                ):
                    at = min(datetime.fromisoformat(created_at) + timedelta(seconds=float(delay)), now)
                    if abstained:
                        final, kind = classes[seq % len(classes)], "label"
                    elif seq % 5 == 0:
                        final, kind = (
                            classes[(classes.index(outcome) + 1 + seq % 3) % len(classes)],
                            "override",
                        )
                    else:
                        final, kind = outcome, "confirmation"
                    reason = REASONS[seq % len(REASONS)] if kind == "override" else None
                    feedback_id, actor = str(uuid.uuid4()), f"reviewer-{seq % 17}"
                    record = {
                        "feedback_id": feedback_id, "decision_id": decision_id, "model": MODEL,
                        "model_version": version, "model_outcome": outcome, "abstained": bool(abstained),
                        "final_outcome": final, "kind": kind, "actor": actor, "reason": reason,
                        "reviewer_pool": None, "reviewer_segment": None, "caller": "bench",
                        "created_at": at.isoformat(), "request_hash": None, "idempotency_key": None,
                    }  # fmt: skip
                    yield {
                        "feedback_id": feedback_id, "decision_id": decision_id, "model": MODEL,
                        "created_at": at.isoformat(), "caller": "bench", "actor": actor,
                        "final_outcome": final, "kind": kind, "record": record,
                    }  # fmt: skip

    t0 = time.perf_counter()
    written = BulkLoader(db).load("feedback", rows())
    seconds = time.perf_counter() - t0
    vacuum_analyze(db, "feedback")
    db.dispose()
    return {
        "rows": written,
        "seconds": round(seconds, 1),
        "rows_per_second": round(written / max(seconds, 1e-9)),
    }


def sample_row(url: str) -> dict[str, Any]:
    """The newest overridden decision: real values for the searches that find something."""
    from keel.decision_log import Database

    db = Database(url)
    try:
        with db.reading() as reader:
            row = reader.one(
                "SELECT d.decision_id, d.case_id, d.outcome, d.route, d.segments, d.seq, f.final_outcome, "
                "d.model_version "
                "FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id "
                "WHERE f.kind = 'override' ORDER BY f.seq DESC LIMIT 1"
            )
            (max_seq,) = reader.one("SELECT MAX(seq) FROM decisions") or (0,)
    finally:
        db.dispose()
    assert row is not None, "the fill logged no override"
    keys = ("decision_id", "case_id", "outcome", "route", "segments", "seq", "final_outcome", "model_version")
    out = dict(zip(keys, row, strict=True))
    out["segments"] = json.loads(out["segments"])
    out["max_seq"] = int(max_seq)
    return out


def query_mix(hit: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The searches timed, by name: every filter of the console's search alone, with a value that
    finds something and one that finds nothing (flags: yes and no, and yes where the rest finds
    nothing), some together, and windows."""
    seg = hit["segments"]
    today = datetime.now(UTC).date()
    return {
        "default window (7 days)": {},
        "model": {"model": MODEL},
        "model, none": {"model": "no_such_model"},
        "model version": {"model_version": str(hit["model_version"])},
        "model version, none": {"model_version": "999"},
        "case_id": {"case_id": str(hit["case_id"])},
        "case_id, none": {"case_id": "no-such-case"},
        "decision_id": {"decision_id": hit["decision_id"]},
        "decision_id, none": {"decision_id": str(uuid.uuid4())},
        "caller": {"caller": "bench"},
        "caller, none": {"caller": "nobody"},
        "origin": {"origin": "live"},
        "origin, none (shadow)": {"origin": "shadow"},
        "region": {"region": str(seg.get("region"))},
        "region, none": {"region": "Atlantis"},
        "channel": {"channel": str(seg.get("channel"))},
        "channel, none": {"channel": "carrier_pigeon"},
        "entity": {"entity": str(seg.get("entity"))},
        "entity, none": {"entity": "XX99"},
        "product line, none": {"product_line": "no_such_line"},
        "outcome": {"outcome": str(hit["outcome"])},
        "outcome, none": {"outcome": "no_such_class"},
        "route": {"route": str(hit["route"])},
        "route, none": {"route": "no_such_route"},
        "abstained": {"abstained": "yes"},
        "not abstained": {"abstained": "no"},
        "to review": {"to_review": "yes"},
        "not to review": {"to_review": "no"},
        "queued": {"queued": "yes"},
        "not queued": {"queued": "no"},
        "answered": {"answered": "yes"},
        "not answered": {"answered": "no"},
        "overridden": {"overridden": "yes"},
        "not overridden": {"overridden": "no"},
        "overridden, none (version)": {"overridden": "yes", "model_version": "999"},
        "final outcome": {"final_outcome": str(hit["final_outcome"])},
        "final outcome, none": {"final_outcome": "no_such_class"},
        "open (queued, no feedback)": {"queued": "yes", "answered": "no", "origin": "live"},
        "region and overridden": {"region": str(seg.get("region")), "overridden": "yes"},
        "window: one day": {"since": today.isoformat(), "until": today.isoformat()},
        "window: none (2020)": {"since": "2020-01-01", "until": "2020-01-07"},
        "second page": {"before": str(hit["max_seq"] // 2)},
    }


def sign_in(base: str, key: str) -> httpx.Client:
    """The console's sign-in as a browser does it: the form's CSRF token, then the session cookie."""
    client = httpx.Client(base_url=base, timeout=120, follow_redirects=False)
    form = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    if token is None:
        raise RuntimeError(f"no CSRF token on the sign-in form ({form.status_code})")
    done = client.post("/console/sign-in", data={"csrf": token.group(1), "key": key})
    if done.status_code != 303 or "keel_console" not in client.cookies:
        raise RuntimeError(f"sign-in refused: {done.status_code}")
    return client


def timed(client: httpx.Client, path: str, k: int) -> dict[str, Any]:
    """One warm-up, then `k` timed requests of `path`: p50, p95 and max in ms, status, bytes."""
    client.get(path)
    times, status, size = [], 0, 0
    for _ in range(k):
        t0 = time.perf_counter()
        r = client.get(path)
        body = r.content
        times.append((time.perf_counter() - t0) * 1000)
        status, size = r.status_code, len(body)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(np.ceil(0.95 * len(times))) - 1)], 1),
        "max_ms": round(times[-1], 1),
        "status": status,
        "bytes": size,
    }


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (MB)."""
    import psutil

    proc = psutil.Process(pid)
    return round(float(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])) / 2**20, 1)


def run_monitor(env: dict[str, str]) -> dict[str, Any]:
    """`keel monitor` over the window, in a child process: its seconds, exit code and peak RSS."""
    code = (
        "from keel.cli import main; "
        f"rc = main(['monitor', '{MODEL}', '--window', '{DAYS}d', '--json']); print('EXIT', rc)"
    )
    monitored = child(peak_rss_wrapper(code), env)
    peak = [ln for ln in monitored["stdout"].splitlines() if ln.startswith("PEAK_MB ")]
    monitor: dict[str, Any] = {
        "seconds": monitored["seconds"],
        "returncode": monitored["returncode"],
        "peak_mb": round(float(peak[0].split()[1]), 1) if peak else None,
    }
    if monitored["returncode"] not in (0, 1, 2):
        monitor["stderr"] = monitored["stderr"]
    return monitor


def run(args: argparse.Namespace, home: Path, url: str) -> dict[str, Any]:
    os.environ.update({"KEEL_HOME": str(home), "KEEL_DECISION_LOG_URL": url})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    load_before = os.getloadavg()
    start = datetime.now(UTC) - timedelta(days=DAYS)
    fill: dict[str, Any] = (
        {"reused": True}
        if args.reuse
        else {
            **build_log(args.decisions, args.pool, "covariate_shift", args.seed, start, timedelta(days=DAYS)),
            "feedback": fill_feedback(url, args.routed_answered, args.auto_every, args.seed),
        }
    )
    env = {**base_env(home), "KEEL_DECISION_LOG_URL": url, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    monitor: dict[str, Any] = {"skipped": "a reused log: the kept run's stored summaries serve"}
    if not args.reuse:
        monitor = run_monitor(env)
    from keel.decision_log import Database
    from keel.monitoring import runs
    from keel.serving.keys import KeyStore

    db = Database(url)
    key = KeyStore(db).add(f"bench-console-{uuid.uuid4().hex[:6]}", ["read"])
    with db.reading() as reader:
        logged = int((reader.one("SELECT count(*) FROM decisions") or (0,))[0])
    listed = runs.runs(db, MODEL, 1)
    latest = listed[0] if listed else None
    db.dispose()
    hit = sample_row(url)
    port = free_port()
    server = Server("keel", keel_cli("serve", "--port", str(port)), env, home / "serve.log", port).start()
    try:
        wait_ready([server])
        assert server.proc is not None
        client = sign_in(f"http://127.0.0.1:{port}", key)
        rss_ready = tree_rss_mb(server.proc.pid)
        pages = {
            "overview": "/console",
            "decisions": "/console/decisions",
            "decision": f"/console/decisions/{hit['decision_id']}",
            "decisions_csv (10,000 rows)": "/console/decisions.csv",
            "monitoring": "/console/monitoring",
            "monitoring model": f"/console/monitoring/{MODEL}",
            "review queue": "/console/queue",
            "overrides": "/console/overrides",
            "changes": "/console/changes",
        }
        if latest is not None:
            pages["monitor run"] = f"/console/runs/{latest.run_id}"
        paths = {
            f"/console/decisions?{urlencode(q)}" if q else "/console/decisions": q
            for q in query_mix(hit).values()
        }
        for path in [*pages.values(), *paths]:  # one pass over everything: imports, caches, pools
            client.get(path)
        rss_before = tree_rss_mb(server.proc.pid)
        page_times = {name: timed(client, path, args.requests) for name, path in pages.items()}
        searches = {
            name: timed(client, f"/console/decisions?{urlencode(params)}" if params else "/console/decisions",
                        args.requests)
            for name, params in query_mix(hit).items()
        }  # fmt: skip
        rss_after = tree_rss_mb(server.proc.pid)
        client.close()
    finally:
        server.stop()
    worst = max([*page_times.values(), *searches.values()], key=lambda t: t["p95_ms"])
    return {
        "benchmark": "console",
        "decisions": logged,
        "window_days": DAYS,
        "requests_per_endpoint": args.requests,
        "fill": fill,
        "keel_monitor": monitor,
        "timing": "client-side on 127.0.0.1, request to last byte, after one warm-up request",
        "pages": page_times,
        "searches": searches,
        "worst_p95_ms": worst["p95_ms"],
        "budget_p95_ms": BUDGET_MS,
        "server_rss_mb": {"ready": rss_ready, "before": rss_before, "after": rss_after},
        "server_rss_note": "before: after a warm-up pass over all pages and searches; after: timed requests",
        "load_average": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in os.getloadavg()],
        },
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page and search")
    parser.add_argument("--pool", type=int, default=20_000, help="cases decided through the online path")
    parser.add_argument("--routed-answered", type=float, default=0.3, help="share of routed cases answered")
    parser.add_argument("--auto-every", type=int, default=100, help="one automatic decision in N answered")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--admin-url", default=ADMIN_URL, help="a database on the server to create the log on"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the filled database and home folder (both printed)"
    )
    parser.add_argument(
        "--reuse", nargs=2, metavar=("LOG_URL", "HOME"), help="a kept run's database and home: no fill"
    )
    args = parser.parse_args()
    if args.reuse:
        url, home = args.reuse[0], Path(args.reuse[1])
        result = run(args, home, url)
        result["log"], result["home"] = url, str(home)
    else:
        url = create_database(args.admin_url)
        home = Path(tempfile.mkdtemp(prefix="keel-bench-console-"))
        try:
            result = run(args, home, url)
        finally:
            if not args.keep:
                drop_database(args.admin_url, url)
                shutil.rmtree(home, ignore_errors=True)
        result["log"] = url if args.keep else "postgresql (dropped)"
        if args.keep:
            result["home"] = str(home)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
