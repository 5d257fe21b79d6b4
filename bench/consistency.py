"""Benchmark: a counterfactual audit of N logged decisions against scoring them with `keel score`.

For each model: train and register it in a temporary state directory (or use --home), generate N
cases into a Parquet file, run `keel score` on them twice: without `--log` (its wall time is the
yardstick) and with it (the decisions land in the decision log as batch), then
`keel consistency --include-batch --sample N` over those logged decisions. Each runs as its own
process, startup included. Target: the audit takes at most twice the scoring time. Prints JSON
with the load average: on a shared machine the figures are noise, so run it small there and for
real on a quiet one.

    python -m bench.consistency [--rows 100000] [--models discount_band ...] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keel.feature_defs.contract import load_contract
from keel.training.generators import generate


def _keel(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", *args], env=env, capture_output=True, text=True, timeout=7200
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # consistency exits 1 when an invariant field fails
        raise RuntimeError(f"keel {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def _train(env: dict[str, str], model: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "keel.cli", "train", model],
        env={**env, "KEEL_TRAIN_ROWS": "8000", "KEEL_TRAIN_ALPHA": "0.05"},
        check=True,
        capture_output=True,
        timeout=3600,
    )


def bench_model(env: dict[str, str], work: Path, model: str, rows: int, seed: int) -> dict[str, Any]:
    cases = generate(model, rows, seed + 1).drop(columns=[load_contract(model).target, "event_time"])
    source = work / f"{model}.parquet"
    cases.to_parquet(source, index=False)
    # The yardstick is scoring without the log write (the stricter one); the logged run provides
    # the decisions to audit.
    plain_s, _ = _keel(
        env, "score", model, "--input", str(source), "--output", str(work / f"{model}.plain.parquet")
    )
    score_s, _ = _keel(
        env, "score", model, "--input", str(source), "--output", str(work / f"{model}.out.parquet"), "--log"
    )
    audit_s, out = _keel(
        env, "consistency", model, "--window", "1d", "--sample", str(rows), "--include-batch", "--json"
    )
    report = json.loads(out)
    return {
        "model": model,
        "rows": rows,
        "score_seconds": round(plain_s, 2),
        "score_and_log_seconds": round(score_s, 2),
        "consistency_seconds": round(audit_s, 2),
        "ratio": round(audit_s / plain_s, 3),
        "target_ratio": 2.0,
        "audited_cases": report["cases"],
        "source": report["source"],
        "measured_fields": [f["field"] for f in report["fields"] if f["status"] == "measured"],
        "counterfactuals": sum(p["n"] for f in report["fields"] for p in f["pairs"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--models", nargs="+", default=["invoice_classification", "discount_band"])
    parser.add_argument("--home", help="an existing KEEL_HOME with the models registered (else: train)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-consistency-") as tmp:
        work = Path(tmp)
        home = Path(args.home) if args.home else work / "home"
        env = {
            **os.environ,
            "KEEL_HOME": str(home),
            # A fresh log, also with --home: the audit's window then holds exactly this run's cases.
            "KEEL_DECISION_LOG_URL": f"sqlite:///{work / 'decisions.db'}",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        results = []
        for model in args.models:
            if not args.home:
                _train(env, model)
            results.append(bench_model(env, work, model, args.rows, args.seed))
        print(json.dumps({"load_average": list(os.getloadavg()), "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
