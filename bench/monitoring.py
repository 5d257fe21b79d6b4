"""Benchmark: `keel monitor` on a large decision log (SQLite, or PostgreSQL with --log) vs
Evidently's DataDriftPreset run directly on the same rows as one pandas frame.

Each side runs in its own child process so peak memory is measured per side (VmHWM of the
child). The log holds records made by Keel's own decider: a pool of real decisions
(covariate-shift traffic) is decided and logged by the online writer, then re-logged under new
ids and times through the bulk loader (keel.decision_log.bulk: rows, hashes and heads exactly as
the writer's) until the log holds N decisions. `keel verify-log` then checks the whole chain.
Targets: keel monitor time <= 0.5x the direct run, peak memory <= 2 GB, same drifted columns.
Where the direct run cannot hold N rows (--direct-decisions M < N), it runs on the window's
first M decisions and keel monitor runs once more on that same sub-window for the comparison.

    python -m bench.monitoring [--decisions 1000000] [--log postgresql://127.0.0.1/keel_b13]
        [--reuse] [--fill-only] [--no-verify] [--direct-decisions M] [--home DIR] [--pool 20000]
        [--scenario covariate_shift]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse, urlunparse

import numpy as np

if TYPE_CHECKING:
    from keel.decision_log import Database
    from keel.decision_log.records import DecisionRecord

MODEL = "invoice_classification"
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
"""The window every run monitors; the filled decisions span one week of November in it."""


def ensure_database(url: str) -> None:
    """PostgreSQL: create the log's database if it is missing (on the same server, as its user)."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def logged_decisions(url: str) -> int:
    from keel.decision_log import Database

    db = Database(url)
    try:
        db.create_schema()
        with db.reading() as reader:
            row = reader.one("SELECT COUNT(*) FROM decisions WHERE model = ?", (MODEL,))
            return int(row[0]) if row else 0
    finally:
        db.dispose()


def build_log(
    decisions: int,
    pool: int,
    scenario: str,
    seed: int,
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC),
    span: timedelta = timedelta(days=7),
) -> dict[str, float]:
    """Train and register the model, decide a pool of cases through the online path, then bulk
    fill the decision log to `decisions` rows spread evenly over [start, start + span); returns
    the phases' seconds."""
    from keel.decision_log import Database, DecisionLog
    from keel.decision_log.bulk import BulkLoader
    from keel.feature_defs.contract import load_contract
    from keel.serving.decider import Decider
    from keel.serving.metrics import Metrics
    from keel.serving.model_set import ModelSet
    from keel.serving.settings import ServingSettings
    from keel.settings import StateSettings, prepare_state
    from keel.training.generators import generate
    from keel.training.registration import train_and_register
    from keel.training.settings import TrainingSettings

    t0 = time.perf_counter()
    state = prepare_state(StateSettings())
    settings = TrainingSettings()
    train_and_register(MODEL, generate(MODEL, settings.rows, settings.seed), state, settings)
    models = ModelSet("champion", state.home_dir / "cache", names=(MODEL,))
    models.reload()
    db = Database(state.log_url)
    log = DecisionLog(db).open()
    decider = Decider(models, log, ServingSettings(), Metrics())
    contract = load_contract(MODEL)
    frame = generate(MODEL, pool, seed, scenario)[["case_id", *contract.field_names]]
    cases = json.loads(frame.to_json(orient="records"))
    for lo in range(0, len(cases), 1000):
        decider.decide(MODEL, cases[lo : lo + 1000], caller="bench")
    records = [r["record"] for r in log.query("SELECT record FROM decisions ORDER BY seq")]
    log.close()
    t1 = time.perf_counter()

    rows = restamped(records, len(records), decisions, start, span, seed, contract.segment_fields)
    BulkLoader(db).load("decisions", rows)
    t2 = time.perf_counter()
    if db.is_postgres:
        vacuum_analyze(db, "decisions")
    db.dispose()
    return {
        "train_and_pool_seconds": round(t1 - t0, 1),
        "bulk_fill_seconds": round(t2 - t1, 1),
        "bulk_fill_rows_per_second": round((decisions - len(records)) / max(t2 - t1, 1e-9)),
        "vacuum_analyze_seconds": round(time.perf_counter() - t2, 1),
    }


_NEW_ID, _NEW_TIME = "@bench-decision-id@", "@bench-created-at@"


def restamped(
    records: list[dict[str, Any]],
    first: int,
    decisions: int,
    start: datetime,
    span: timedelta,
    seed: int,
    segment_fields: Sequence[str],
) -> Iterator[dict[str, Any]]:
    """Log rows for decisions `first` to `decisions` - 1, spread evenly over [start, start + span):
    each a random pick from `records` (logged decision records) under a new id and time.

    Each pool record's row and strict-JSON text are built once, with placeholders for the id and
    time; a restamped row splices the new values (plain strings JSON writes unescaped) into that
    text, which is what strict_json.dumps writes for the restamped record, and hands it to the
    bulk loader as such (JSONText) instead of re-encoding kilobytes of JSON per row."""
    from keel.decision_log.rows import log_row
    from keel.decision_log.strict_json import JSONText, dumps

    templates = []
    for base in records:
        # cast: a logged decision record (read back as JSON), restamped.
        record = cast("DecisionRecord", {**base, "decision_id": _NEW_ID, "created_at": _NEW_TIME})
        a, x, b, _, c = re.split(f"({_NEW_ID}|{_NEW_TIME})", dumps(record))
        templates.append((log_row(record, 0, "bench", None, None, segment_fields), a, b, c, x == _NEW_ID))
    step = span / decisions
    # Random picks from the pool: a cyclic order would alias with the systematic sample.
    picks = np.random.default_rng(seed).integers(0, len(records), size=decisions)
    for written in range(first, decisions):
        row, a, b, c, id_first = templates[int(picks[written])]
        decision_id, at = str(uuid.uuid4()), (start + step * written).isoformat()
        text = a + decision_id + b + at + c if id_first else a + at + b + decision_id + c
        yield {**row, "decision_id": decision_id, "created_at": at, "record": JSONText(text)}


def vacuum_analyze(db: Database, table: str) -> None:
    """After a bulk load, as after any large import (PostgreSQL): statistics for the planner, and
    the visibility map that lets an index answer without touching the table."""
    raw: Any = db.engine.raw_connection()
    raw.driver_connection.autocommit = True
    raw.driver_connection.execute(f"VACUUM (ANALYZE) {table}")
    raw.driver_connection.autocommit = False  # back to the pool as it came
    raw.close()


def window_end_after(url: str, n: int) -> datetime:
    """The end bound of the window's first `n` decisions (time order)."""
    from keel.decision_log import Database

    db = Database(url)
    try:
        with db.reading() as reader:
            row = reader.one(
                "SELECT created_at FROM decisions WHERE model = ? AND created_at >= ? "
                "ORDER BY created_at LIMIT 1 OFFSET ?",
                (MODEL, START.isoformat(), n),
            )
    finally:
        db.dispose()
    return datetime.fromisoformat(row[0]) if row else END


def child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child process; wall time, peak RSS of that child, and its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=5400, check=False)
    seconds = time.perf_counter() - t0
    return {
        "seconds": round(seconds, 2),
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr[-2000:],
    }


def peak_rss_wrapper(code: str) -> list[str]:
    """python -c that runs `code` then prints its own peak RSS (MB) as the last line.

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report the
    parent's peak; VmHWM belongs to the new address space.
    """
    tail = (
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "print('PEAK_MB', int(hwm.split()[1]) / 1024)"
    )
    return [sys.executable, "-c", f"{code}\n{tail}"]


# The direct run as a user of Evidently alone would write it: the window's inputs into one frame
# (chunked, a server-side cursor on PostgreSQL), then DataDriftPreset against the reference.
DIRECT = """
import json, time, pandas as pd
from keel.feature_defs.contract import load_contract
from keel.models import registry
from keel.settings import StateSettings, prepare_state
from keel.monitoring.drift import DriftConfig, feature_drift
from keel.models.frames import typed
from keel.monitoring.settings import MonitorSettings
from keel.decision_log import Database
state = prepare_state(StateSettings())
contract = load_contract("{model}")
names = [f.name for f in contract.feature_fields]
t0 = time.perf_counter()
db = Database(state.log_url)
inputs = "(record::json)->>'inputs'" if db.is_postgres else "json_extract(record, '$.inputs')"
sql = f"SELECT {{inputs}} FROM decisions WHERE model = ? AND created_at >= ? AND created_at < ?"
parts = []
with db.reading() as reader:
    for chunk in reader.stream(sql, ("{model}", "{start}", "{end}"), 20000):
        parts.append(pd.DataFrame([json.loads(r[0]) for r in chunk], columns=names))
current = typed(pd.concat(parts, ignore_index=True), contract)
del parts
load_s = time.perf_counter() - t0
ref = registry.load_alias("{model}", "champion", state.home_dir / "cache")
reference = typed(pd.read_parquet(ref.model.bundle.path / "reference.parquet")[names], contract)
t1 = time.perf_counter()
cfg = DriftConfig(drift_share=MonitorSettings().feature_drift_share[1])
result = feature_drift(reference, current, contract, cfg)
print("EVIDENTLY_SECONDS", time.perf_counter() - t1)
print("LOAD_SECONDS", load_s)
print("ROWS", len(current))
print("DRIFTED", json.dumps(sorted(result.drifted_columns)))
"""


def keel_monitor(env: dict[str, str], end: datetime) -> dict[str, Any]:
    window = f"{START.isoformat()}..{end.isoformat()}"
    code = (
        "import sys; from keel.cli import main; "
        f"rc = main(['monitor', '{MODEL}', '--window', '{window}', '--json']); print('EXIT', rc)"
    )
    return _summarise(child(peak_rss_wrapper(code), env))


def direct(env: dict[str, str], end: datetime) -> dict[str, Any]:
    code = DIRECT.format(model=MODEL, start=START.isoformat(), end=end.isoformat())
    return _summarise(child(peak_rss_wrapper(code), env))


def verify_log(env: dict[str, str]) -> dict[str, Any]:
    code = "from keel.cli import main; rc = main(['verify-log']); print('EXIT', rc)"
    run = child(peak_rss_wrapper(code), env)
    out = _summarise(run)
    out["output"] = next((ln for ln in run["stdout"].splitlines() if ln.startswith("decision log")), None)
    return out


def compare(keel: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Drifted-columns agreement and time ratios of a keel monitor run and a direct run."""
    k, d = set(keel.get("drifted", [])), set(ref.get("drifted", []))
    out: dict[str, Any] = {
        "rows": ref.get("rows"),
        "same_drifted_columns": "drifted" in keel and "drifted" in ref and k == d,
        "only_keel": sorted(k - d),
        "only_direct": sorted(d - k),
    }
    if keel.get("seconds") and ref.get("evidently_seconds"):
        # Conservative: the direct side is charged only for Evidently itself, not for loading rows.
        out["time_ratio_keel_over_direct_evidently"] = round(keel["seconds"] / ref["evidently_seconds"], 3)
        out["time_ratio_keel_over_direct_total"] = round(keel["seconds"] / ref["seconds"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--scenario", default="covariate_shift")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--log", help="decision log URL (postgresql://...); the database is created if missing"
    )
    parser.add_argument("--home", help="keep the state (registry) here; needed to --reuse a log")
    parser.add_argument("--reuse", action="store_true", help="skip the fill if the log holds --decisions")
    parser.add_argument("--no-verify", action="store_true", help="skip the keel verify-log run")
    parser.add_argument(
        "--fill-only", action="store_true", help="fill the log (and print the fill's figures), then stop"
    )
    parser.add_argument(
        "--direct-decisions", type=int, help="run direct Evidently on the window's first M decisions only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-mon-") as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "home"
        log_url = args.log or f"sqlite:///{home / 'decisions.db'}"
        os.environ["KEEL_HOME"] = str(home)
        os.environ["KEEL_DECISION_LOG_URL"] = log_url
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if log_url.startswith("postgres"):
            ensure_database(log_url)
        reused = args.reuse and (home / "mlflow.db").exists() and logged_decisions(log_url) == args.decisions
        if not reused and logged_decisions(log_url):
            raise SystemExit(f"the log at {log_url} holds decisions already; drop it or use --reuse")
        fill = {"reused": True} if reused else build_log(args.decisions, args.pool, args.scenario, args.seed)
        if args.fill_only:
            json.dump({"benchmark": "monitoring", "decisions": args.decisions, "fill": fill}, sys.stdout)
            print()
            return 0
        env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        n_direct = min(args.direct_decisions or args.decisions, args.decisions)
        keel = keel_monitor(env, END)
        result: dict[str, Any] = {
            "benchmark": "monitoring",
            "decisions": args.decisions,
            "log": "postgresql" if log_url.startswith("postgres") else "sqlite",
            "scenario": args.scenario,
            "fill": fill,
            "keel_monitor": keel,
        }
        if n_direct < args.decisions:
            end = window_end_after(log_url, n_direct)
            result["direct_note"] = (
                f"direct Evidently run on the window's first {n_direct} decisions (up to {end.isoformat()}), "
                f"not all {args.decisions}; keel monitor ran once more on that sub-window to compare"
            )
            result["keel_monitor_at_direct_size"] = small = keel_monitor(env, end)
            result["evidently_direct"] = ref = direct(env, end)
            result["comparison"] = compare(small, ref)
            result["comparison_full_keel_vs_direct_subset"] = compare(keel, ref)
        else:
            result["evidently_direct"] = ref = direct(env, END)
            result["comparison"] = compare(keel, ref)
        if not args.no_verify:
            result["verify_log"] = verify_log(env)
    result["targets"] = {"time_ratio_max": 0.5, "peak_mb_max": 2048}
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


def _summarise(run: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": run["seconds"], "returncode": run["returncode"]}
    for line in run["stdout"].splitlines():
        if line.startswith("EXIT "):
            out["exit_status"] = int(line.split()[1])
        elif line.startswith("PEAK_MB "):
            out["peak_mb"] = round(float(line.split()[1]), 1)
        elif line.startswith("DRIFTED "):
            out["drifted"] = json.loads(line[len("DRIFTED ") :])
        elif line.startswith(("EVIDENTLY_SECONDS ", "LOAD_SECONDS ")):
            key = line.split()[0].lower()
            out[key] = round(float(line.split()[1]), 2)
        elif line.startswith("ROWS "):
            out["rows"] = int(line.split()[1])
        elif line.startswith("{") and '"feature_drift"' in line:
            summary = json.loads(line)
            out["drifted"] = sorted(summary["feature_drift"]["drifted_columns"])
            out["sampled_rows"] = summary.get("sample_rows")
            out["decisions"] = summary.get("decisions")
    if run["returncode"] not in (0, 1, 2):
        out["stderr"] = run["stderr"]
    return out


if __name__ == "__main__":
    sys.exit(main())
