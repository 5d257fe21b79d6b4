"""Benchmark: `keel monitor` on a 1M-decision SQLite log vs Evidently's DataDriftPreset run directly.

Both run in one invocation, each in its own child process so peak memory is measured per
side (ru_maxrss of the child). The log is written by Keel's own decision-log writer with
records made by Keel's own decider: a pool of real decisions (covariate-shift traffic) is
decided once, then re-logged under new ids and times until the log holds N decisions. The
direct run loads the same N rows as one pandas frame. Targets: time <= 0.5x the direct run,
peak memory <= 2 GB, same drift verdicts.

    python -m bench.monitoring [--decisions 1000000] [--pool 20000] [--scenario covariate_shift]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "invoice_classification"


def build_log(home: Path, decisions: int, pool: int, scenario: str, seed: int) -> tuple[datetime, datetime]:
    """Train and register the model, then fill the decision log; returns the window."""
    os.environ["KEEL_HOME"] = str(home)
    from keel.feature_defs.contract import load_contract
    from keel.serving.database import Database
    from keel.serving.decider import Decider
    from keel.serving.decision_log import DecisionLog
    from keel.serving.metrics import Metrics
    from keel.serving.model_set import ModelSet
    from keel.serving.settings import ServingSettings
    from keel.training.generators import generate
    from keel.training.registration import train_and_register
    from keel.training.settings import TrainingSettings

    from keel.settings import StateSettings, prepare_state

    state = prepare_state(StateSettings())
    settings = TrainingSettings()
    train_and_register(MODEL, generate(MODEL, settings.rows, settings.seed), state, settings)
    models = ModelSet("champion", state.home_dir / "cache", names=(MODEL,))
    models.reload()
    log = DecisionLog(Database(state.log_url)).open()
    decider = Decider(models, log, ServingSettings(), Metrics())
    contract = load_contract(MODEL)
    frame = generate(MODEL, pool, seed, scenario)[["case_id", *contract.field_names]]
    cases = json.loads(frame.to_json(orient="records"))
    records = []
    for lo in range(0, len(cases), 1000):
        decider.decide(MODEL, cases[lo : lo + 1000], caller="bench")
    records = [r["record"] for r in log.query("SELECT record FROM decisions ORDER BY seq")]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    step = timedelta(days=7) / decisions
    written = len(records)
    batch: list[dict[str, Any]] = []
    i = 0
    # Random picks from the pool: a cyclic order would alias with the systematic sample.
    picks = np.random.default_rng(seed).integers(0, len(records), size=decisions)
    while written < decisions:
        base = records[int(picks[i])]
        i += 1
        at = (start + step * written).isoformat()
        record = {**base, "decision_id": str(uuid.uuid4()), "created_at": at}
        batch.append(Decider.log_row(record, 0, "bench", None, None, contract.segment_fields))
        written += 1
        if len(batch) == 5000:
            log.append("decisions", batch)
            batch = []
    if batch:
        log.append("decisions", batch)
    log.close()
    return datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child process; wall time, peak RSS of that child, and its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3000, check=False)
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


DIRECT = """
import json, time, pandas as pd
from keel.feature_defs.contract import load_contract
from keel.models import registry
from keel.settings import StateSettings, prepare_state
from keel.monitoring.drift import DriftConfig, feature_drift
from keel.monitoring.frames import typed
from keel.monitoring.settings import MonitorSettings
from keel.serving.database import Database
state = prepare_state(StateSettings())
contract = load_contract("{model}")
names = [f.name for f in contract.feature_fields]
t0 = time.perf_counter()
conn = Database(state.log_url).connect()
cur = conn.execute("SELECT json_extract(record, '$.inputs') FROM decisions")
rows = []
while batch := cur.fetchmany(20000):
    rows.extend(json.loads(r[0]) for r in batch)
current = typed(pd.DataFrame(rows, columns=names), contract)
del rows
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--scenario", default="covariate_shift")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--home", help="keep the state here; reuse its log if it already holds one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-mon-") as tmp:
        home = Path(args.home) if args.home else Path(tmp) / "home"
        t0 = time.perf_counter()
        if (home / "decisions.db").exists():
            start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
        else:
            start, end = build_log(home, args.decisions, args.pool, args.scenario, args.seed)
        build_s = time.perf_counter() - t0
        env = {**os.environ, "KEEL_HOME": str(home), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        window = f"{start.isoformat()}..{end.isoformat()}"
        keel_code = (
            "import sys; from keel.cli import main; "
            f"rc = main(['monitor', '{MODEL}', '--window', '{window}', '--json']); print('RC', rc)"
        )
        keel = child(peak_rss_wrapper(keel_code), env)
        direct = child(peak_rss_wrapper(DIRECT.format(model=MODEL)), env)
    result = {
        "benchmark": "monitoring",
        "decisions": args.decisions,
        "scenario": args.scenario,
        "log_build_seconds": round(build_s, 1),
        "keel_monitor": _summarise(keel),
        "evidently_direct": _summarise(direct),
    }
    k, d = result["keel_monitor"], result["evidently_direct"]
    if k.get("seconds") and d.get("evidently_seconds"):
        # Conservative: the direct side is charged only for Evidently itself, not for loading rows.
        result["time_ratio_keel_over_direct_evidently"] = round(k["seconds"] / d["evidently_seconds"], 3)
        result["time_ratio_keel_over_direct_total"] = round(k["seconds"] / d["seconds"], 3)
    result["same_drift_verdicts"] = k.get("drifted") == d.get("drifted")
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
    if run["returncode"] not in (0, 1, 2):
        out["stderr"] = run["stderr"]
    return out


if __name__ == "__main__":
    sys.exit(main())
