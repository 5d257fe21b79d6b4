"""Benchmark: `keel score` throughput and peak memory, local and Spark, next to the model's own cost.

For each model: train and register it in a temporary MLflow store, generate N cases into a
Parquet file, then run `keel score` as its own process once per engine (peak memory is sampled
over the whole process tree: the driver, and for Spark its JVM and Python workers). The model's
own in-process cost per row is what bench/models.py measures (one row: predict + exact
explanation of the decided class). Beside it, LightGBM's all-class `pred_contrib` over the same
rows (the same file, read and encoded in the same chunks; `num_threads=1`, one core) gives the
yardstick of issue 26: `--engine local`, its worker processes on every core, decides (with
explanations, policy and validation) at >= 2x its rows/s. Also: `--engine local` adds at most
25% to the model's own cost per core; Spark's decisions equal local's (floats to 1e-9). Prints
JSON.

    python -m bench.batch [--rows 1000000] [--models routing ...] [--engines local spark]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from bench.models import per_call_us
from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.models import registry
from keel.training.generators import generate
from keel.training.settings import TrainingSettings

VOLATILE = ("decision_id", "created_at")


def peak_rss_mb(proc: subprocess.Popen[bytes], every: float = 0.2) -> float:
    """Waits for `proc`; the largest summed RSS of it and its descendants seen while it ran."""
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        except psutil.Error:
            break
        peak = max(peak, total)
        time.sleep(every)
    return round(peak / 2**20, 1)


def run_score(env: dict[str, str], model: str, source: Path, out: Path, engine: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    with (out.parent / f"{out.stem}.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keel.cli",
                "score",
                model,
                "--input",
                str(source),
                "--output",
                str(out),
                "--engine",
                engine,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        box: dict[str, float] = {}
        sampler = threading.Thread(target=lambda: box.setdefault("mb", peak_rss_mb(proc)))
        sampler.start()
        stdout, _ = proc.communicate(timeout=4 * 3600)
        sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"keel score --engine {engine} failed:\n{(out.parent / f'{out.stem}.log').read_text()[-3000:]}"
        )
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    return {"summary": summary, "wall_seconds": round(wall, 2), "peak_rss_mb": box.get("mb", 0.0)}


def differences(a: Path, b: Path, batch: int = 20000) -> dict[str, Any]:
    """Compares two decision files row by row (all but decision_id/created_at; floats to 1e-9)."""
    rows = mismatched = 0
    worst = 0.0
    left = pq.ParquetFile(a).iter_batches(batch_size=batch, columns=["row", "decision"])
    right = pq.ParquetFile(b).iter_batches(batch_size=batch, columns=["row", "decision"])
    for x, y in zip(left, right, strict=True):
        for rx, ry, dx, dy in zip(
            x.column("row").to_pylist(), y.column("row").to_pylist(),
            x.column("decision").to_pylist(), y.column("decision").to_pylist(), strict=True,
        ):  # fmt: skip
            rows += 1
            diff = _diff(_stable(json.loads(dx)), _stable(json.loads(dy)))
            if rx != ry or diff is None:
                mismatched += 1
            else:
                worst = max(worst, diff)
    return {"rows_compared": rows, "mismatched_rows": mismatched, "max_abs_float_diff": worst}


def _stable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in VOLATILE}


def _diff(a: Any, b: Any) -> float | None:
    """Largest float difference, or None if anything else differs or a float is off by > 1e-9."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return None
        d = abs(float(a) - float(b))
        return d if d <= 1e-9 or (math.isnan(a) and math.isnan(b)) else None
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return None
        parts = [_diff(a[k], b[k]) for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return None
        parts = [_diff(x, y) for x, y in zip(a, b, strict=True)]
    else:
        return 0.0 if a == b else None
    found = [p for p in parts if p is not None]
    return None if len(found) < len(parts) else max(found, default=0.0)


def model_cost_us(name: str, home: Path, reps: int) -> tuple[float, float]:
    """bench/models' decide_us_per_row_with_explanation on the registered champion: (wall, CPU) us.

    CPU time is the fair yardstick on a shared machine, where other work steals wall time."""
    model = registry.load_alias(name, registry.CHAMPION, home / "cache").model
    contract = load_contract(name)
    cases = generate(name, 200, seed=123)
    matrix = contract.validate_frame(cases, extra_ok=list(cases.columns)).matrix
    assert matrix is not None
    rows = [matrix[i : i + 1] for i in range(len(matrix))]
    idx = iter(range(10**9))

    def one() -> object:
        return model.predict_matrix(rows[next(idx) % len(rows)], explain=True)

    wall = per_call_us(one, reps)
    cpu = time.process_time()
    for _ in range(reps):
        one()
    return wall, (time.process_time() - cpu) / reps * 1e6


def pred_contrib_rate(name: str, home: Path, source: Path, chunk_rows: int, limit: int) -> dict[str, Any]:
    """LightGBM's all-class pred_contrib on one thread over the file's first `limit` rows, read and
    encoded chunk by chunk as `keel score` reads them; rows/s by wall and by CPU (encoding apart)."""
    from keel.serving.batch_io import read_chunks

    model = registry.load_alias(name, registry.CHAMPION, home / "cache").model
    booster = model.tree.booster
    contract = load_contract(name)
    rows, wall, cpu = 0, 0.0, 0.0
    for chunk in read_chunks(source, contract, chunk_rows):
        cases = chunk.cases[: limit - rows]
        matrix = contract.validate_records(cases).matrix
        assert matrix is not None
        w, c = time.perf_counter(), time.process_time()
        booster.predict(matrix, pred_contrib=True, num_threads=1)
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        rows += len(cases)
        if rows >= limit:
            break
    per_wall, per_cpu = round(rows / wall, 1), round(rows / cpu, 1)
    return {"rows": rows, "rows_per_second": per_wall, "rows_per_cpu_second": per_cpu}


def bench_model(name: str, args: argparse.Namespace, home: Path, env: dict[str, str]) -> dict[str, Any]:
    from keel.settings import StateSettings
    from keel.training.registration import train_and_register

    settings = TrainingSettings(rows=args.train_rows)
    train_and_register(name, generate(name, settings.rows, settings.seed), StateSettings(), settings)
    contract = load_contract(name)
    source = home / f"{name}.parquet"
    t0 = time.perf_counter()
    frame = generate(name, args.rows, seed=99)
    frame[["case_id", *contract.field_names]].to_parquet(source, row_group_size=100_000)
    del frame
    generate_s = time.perf_counter() - t0
    own_us, own_cpu_us = model_cost_us(name, home, args.reps)
    contrib = pred_contrib_rate(name, home, source, args.chunk_rows, args.contrib_rows or args.rows)
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "model": name,
        "rows": args.rows,
        "generate_seconds": round(generate_s, 1),
        "model_us_per_row_predict_and_explain": round(own_us, 1),
        "model_cpu_us_per_row_predict_and_explain": round(own_cpu_us, 1),
        "lightgbm_pred_contrib_one_core": contrib,
        "cores": cores,
    }
    for engine in args.engines:
        run = run_score(env, name, source, home / f"{name}-{engine}.parquet", engine)
        s = run["summary"]
        rate = s["rows"] / s["seconds"]
        # local decides in its worker processes (one per core by default); Spark over every core.
        used = s["extra"].get("workers", 1) if engine == "local" else cores
        per_core_us = used * 1e6 / rate
        cpu_us = s["extra"]["cpu_seconds"] * 1e6 / s["rows"] if "cpu_seconds" in s["extra"] else None
        out[engine] = {
            "rows_per_second": round(rate, 1),
            "rows_per_second_over_pred_contrib_one_core": round(rate / contrib["rows_per_second"], 3),
            "cores_used": used,
            "us_per_row_per_core": round(per_core_us, 1),
            "added_vs_model_cost": round(per_core_us / own_us - 1, 3),
            **(
                {
                    "cpu_us_per_row": round(cpu_us, 1),
                    "added_vs_model_cpu_cost": round(cpu_us / own_cpu_us - 1, 3),
                }
                if cpu_us
                else {}
            ),
            "seconds": s["seconds"],
            "wall_seconds_with_startup": run["wall_seconds"],
            "peak_rss_mb_process_tree": run["peak_rss_mb"],
            "decided": s["decided"],
            "abstained": s["abstained"],
            "rejected": s["rejected"],
            **({"spark": s["extra"]} if engine == "spark" else {}),
        }
    if {"local", "spark"} <= set(args.engines):
        out["spark_vs_local"] = differences(home / f"{name}-local.parquet", home / f"{name}-spark.parquet")
    for engine in args.engines:
        (home / f"{name}-{engine}.parquet").unlink(missing_ok=True)
    source.unlink()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="generated cases per model")
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    parser.add_argument("--engines", nargs="*", default=["local", "spark"], choices=["local", "spark"])
    parser.add_argument("--train-rows", type=int, default=TrainingSettings().rows)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--chunk-rows", type=int, default=5000, help="KEEL_BATCH_CHUNK_ROWS of the runs")
    parser.add_argument(
        "--contrib-rows", type=int, default=0, help="rows the pred_contrib yardstick reads (0: all of them)"
    )
    args = parser.parse_args()
    start_load = [round(x, 1) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="keel-bench-batch-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "KEEL_HOME": str(home), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        env["KEEL_BATCH_CHUNK_ROWS"] = str(args.chunk_rows)
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update({k: env[k] for k in ("KEEL_HOME", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")})
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from keel.settings import StateSettings, prepare_state

        prepare_state(StateSettings())
        results = [bench_model(m, args, home, env) for m in args.models]
    machine = {
        "cores": os.cpu_count(),
        "load_average_at_start": start_load,
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
    }
    json.dump({"benchmark": "batch", "machine": machine, "results": results}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
