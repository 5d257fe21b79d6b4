"""Benchmark: training time, per-row predict and per-row explanation cost. Prints JSON.

Explanation of the decided class (DecisionModel, per-class TreeSHAP) is compared in the same
run with LightGBM's own all-class `pred_contrib=True` and with `shap.TreeExplainer`, on the
same booster and the same rows. Target: decided-class explanation <= 0.25x all-class contrib
on the 6-class invoice model, exact to 1e-6.

    python -m bench.models [--rows 40000] [--reps 300] [--models invoice_classification ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import shap

from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.models.decision_model import DecisionModel
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.settings import TrainingSettings


def per_call_us(fn: Callable[[], object], reps: int) -> float:
    """Median of 5 blocks of reps/5 calls, in microseconds per call."""
    fn()
    block = max(1, reps // 5)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        times.append((time.perf_counter() - t0) / block)
    return float(np.median(times) * 1e6)


def bench_model(name: str, rows: int, reps: int, work: Path) -> dict[str, object]:
    contract = load_contract(name)
    settings = TrainingSettings(rows=rows)
    frame = generate(name, rows, settings.seed)
    t0 = time.perf_counter()
    result = train(contract, frame, work / name, settings)
    train_s = time.perf_counter() - t0
    model = DecisionModel.load(result.bundle_dir)
    tree = model.tree
    cases = generate(name, 200, seed=123)
    matrix = contract.validate_frame(cases, extra_ok=list(cases.columns)).matrix
    assert matrix is not None
    rows_1 = [matrix[i : i + 1] for i in range(len(matrix))]
    k = tree.raw_scores(matrix).argmax(axis=1)
    idx = iter(range(10**9))

    def row() -> tuple[np.ndarray, int]:
        i = next(idx) % len(rows_1)
        return rows_1[i], int(k[i])

    explainer = shap.TreeExplainer(tree.booster)
    predict_us = per_call_us(lambda: tree.raw_scores(row()[0]), reps)
    decide_us = per_call_us(lambda: model.predict_matrix(row()[0], explain=False), reps)
    explain_us = per_call_us(lambda: tree.contributions(*_one(row())), reps)
    decide_explain_us = per_call_us(lambda: model.predict_matrix(row()[0], explain=True), reps)
    all_class_us = per_call_us(lambda: tree.all_class_contributions(row()[0]), reps)
    shap_us = per_call_us(lambda: explainer.shap_values(row()[0]), max(20, reps // 10))

    ours = tree.contributions(matrix, k)
    theirs = np.asarray(explainer.shap_values(matrix))
    max_abs_diff = float(max(np.abs(ours[i, :-1] - theirs[i, :, k[i]]).max() for i in range(len(matrix))))
    return {
        "model": name,
        "classes": len(contract.classes),
        "rows": rows,
        "trees": tree.booster.num_trees(),
        "train_seconds": round(train_s, 2),
        "test_accuracy": round(result.metrics["accuracy"], 4),
        "coverage": round(result.metrics["coverage"], 4),
        "selective_error": round(result.metrics["selective_error"], 4),
        "predict_us_per_row": round(predict_us, 1),
        "decide_us_per_row_no_explanation": round(decide_us, 1),
        "decide_us_per_row_with_explanation": round(decide_explain_us, 1),
        "explain_decided_class_us_per_row": round(explain_us, 1),
        "lightgbm_all_class_pred_contrib_us_per_row": round(all_class_us, 1),
        "shap_tree_explainer_us_per_row": round(shap_us, 1),
        "ratio_explain_vs_all_class_contrib": round(explain_us / all_class_us, 3),
        "ratio_explain_vs_shap_tree_explainer": round(explain_us / shap_us, 3),
        "max_abs_diff_vs_shap": max_abs_diff,
    }


def _one(r: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
    return r[0], np.array([r[1]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=TrainingSettings().rows)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_model(m, args.rows, args.reps, Path(tmp)) for m in args.models]
    json.dump({"benchmark": "models", "results": results}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
