"""Risk-control guarantee over many fresh draws: `python -m bench.risk_control [--draws N]`.

A model is trained once per scenario; then each draw takes fresh ordering and risk-control
splits (the sizes training uses) from a large pool of generated cases, picks the threshold(s),
and measures the selective error on a large fresh test set. Prints JSON with Clopper-Pearson
intervals (statsmodels, method="beta") for every rate.

1. discount_band, overall control: violation rate (test selective error > alpha) must be <= delta
   within its binomial allowance, and the certify-nothing rate <= 1%. On the same draws, for
   comparison: the former search (3 fixed sequences at delta/3 each, Bonferroni) and a single
   fixed sequence from the lowest-bound start at the full delta.
2. The same at a small size (a model trained on 8,000 rows: 800-row splits), where splitting
   delta costs the most power.
3. discount_band under `region_process_change` (EMEA's deal desk is stricter; the model does not
   see region, so EMEA is harder): segment control on region versus overall control, the hard
   region's selective error on fresh data.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom
from statsmodels.stats.proportion import proportion_confint

from keel.feature_defs.contract import load_contract
from keel.models.decision_model import DecisionModel
from keel.models.thresholds import ThresholdRule
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.risk_control import (
    NEVER_DECIDE,
    abstention_record,
    candidate_thresholds,
    clopper_pearson_upper,
    decided_counts,
    select_segment_thresholds,
    select_threshold,
)
from keel.training.settings import TrainingSettings

MODEL = "discount_band"
ALPHA, DELTA = 0.02, 0.05
SPLIT_ROWS = 4000  # calibration and risk-control splits of a default 40,000-row training
SMALL_ROWS = 8000  # a small training: 800-row splits


@dataclass
class Scored:
    """A generated set scored once by the trained model."""

    confidence: np.ndarray
    correct: np.ndarray
    region: np.ndarray

    def take(self, idx: np.ndarray) -> Scored:
        return Scored(self.confidence[idx], self.correct[idx], self.region[idx])


def trained_model(scenario: str, rows: int, seed: int, tmp: Path) -> DecisionModel:
    settings = TrainingSettings(rows=rows, seed=seed)
    result = train(load_contract(MODEL), generate(MODEL, rows, seed, scenario), tmp / scenario, settings)
    return DecisionModel.load(result.bundle_dir)


def scored(model: DecisionModel, n: int, seed: int, scenario: str) -> Scored:
    contract = model.contract
    frame = generate(MODEL, n, seed, scenario)
    batch = model.predict_frame(frame)
    y, _ = contract.encode_target(list(frame[contract.target]))
    return Scored(batch.confidence, batch.predicted == y, frame["region"].astype(str).to_numpy())


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
    return {"count": k, "n": n, "rate": k / n, "ci95": [float(lo), float(hi)]}


def selective_error(test: Scored, thresholds: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    decided = test.confidence >= thresholds
    if mask is not None:
        decided &= mask
    return float((~test.correct[decided]).mean()) if decided.any() else None


def draw_splits(pool: Scored, rng: np.random.Generator, rows: int = SPLIT_ROWS) -> tuple[Scored, Scored]:
    idx = rng.choice(len(pool.confidence), 2 * rows, replace=False)
    return pool.take(idx[:rows]), pool.take(idx[rows:])


def bonferroni_three_starts(order: Scored, risk: Scored) -> float:
    """The former search, kept here as the baseline: 3 fixed sequences at delta/3 each (Bonferroni),
    starting at the lowest-bound candidate and two points spread towards the most conservative."""
    starts, level = 3, DELTA / 3
    min_decided = max(300, math.ceil(math.log(starts / DELTA) / ALPHA))
    candidates = candidate_thresholds(order.confidence, len(risk.confidence), min_decided, 200)
    n_o, k_o = decided_counts(candidates, order.confidence, ~order.correct)
    bounds = [clopper_pearson_upper(int(k), int(n), level) for k, n in zip(k_o, n_o, strict=True)]
    easiest = max(i for i, b in enumerate(bounds) if b == min(bounds))
    spread = np.linspace(0, easiest, starts + 1)[1:-1]
    n_r, k_r = decided_counts(candidates, risk.confidence, ~risk.correct)
    best = NEVER_DECIDE
    for s in sorted({easiest, *(round(i) for i in spread)}):
        for j in range(s, len(candidates)):
            if clopper_pearson_upper(int(k_r[j]), int(n_r[j]), level) > ALPHA:
                break
            best = min(best, float(candidates[j]))
    return best


METHODS: dict[str, Callable[[Scored, Scored], float]] = {
    "fallback": lambda order, risk: select_threshold(
        risk.confidence, risk.correct, ALPHA, DELTA, order.confidence, order_correct=order.correct
    ).threshold,
    "bonferroni_3_starts": bonferroni_three_starts,
    "single_start": lambda order, risk: select_threshold(
        risk.confidence, risk.correct, ALPHA, DELTA, order.confidence, order_correct=order.correct,
        primary_share=1.0,
    ).threshold,
}  # fmt: skip
"""`fallback` is what training runs; the others are the comparisons on the same draws."""


def overall_draws(
    pool: Scored, test: Scored, draws: int, seed: int, rows: int = SPLIT_ROWS
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ranked = np.argsort(-test.confidence)
    wrong_before = np.concatenate([[0], np.cumsum(~test.correct[ranked])])
    sorted_conf = -test.confidence[ranked]
    out: dict[str, dict[str, list[float]]] = {
        name: {"violation": [], "nothing": [], "coverage": []} for name in METHODS
    }
    for _ in range(draws):
        order, risk = draw_splits(pool, rng, rows)
        for name, method in METHODS.items():
            threshold = method(order, risk)
            decided = int(np.searchsorted(sorted_conf, -threshold, side="right"))
            err = wrong_before[decided] / decided if decided else None
            out[name]["violation"].append(float(err is not None and err > ALPHA))
            out[name]["nothing"].append(float(threshold >= NEVER_DECIDE))
            out[name]["coverage"].append(decided / len(test.confidence))
    allowance = int(binom.ppf(0.999, draws, DELTA))
    result: dict[str, Any] = {"draws": draws, "split_rows": rows, "violation_allowance": allowance}
    for name, m in out.items():
        v, z = int(sum(m["violation"])), int(sum(m["nothing"]))
        result[name] = {
            "violations": rate(v, draws),
            "certify_nothing": rate(z, draws),
            "mean_test_coverage": float(np.mean(m["coverage"])),
            "violations_within_allowance": v <= allowance,
        }
    return result


def segment_draws(pool: Scored, test: Scored, draws: int, seed: int, hard: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    regions = sorted(set(pool.region.tolist()))
    hard_ok_segment, hard_bad_overall, any_bad_segment, coverage_hard = 0, 0, 0, []
    for _ in range(draws):
        order, risk = draw_splits(pool, rng)
        control = select_segment_thresholds(
            risk.confidence,
            risk.correct,
            risk.region.tolist(),
            order.confidence,
            order.correct,
            order.region.tolist(),
            field_name="region",
            alpha=ALPHA,
            delta=DELTA,
            min_cases=400,
            known_values=regions,
        )
        rule = ThresholdRule.from_abstention(abstention_record(control.overall, control))
        per_case, _ = rule.applies(test.region.tolist(), len(test.confidence))
        errors = {r: selective_error(test, per_case, test.region == r) for r in regions}
        hard_ok_segment += int((errors[hard] or 0.0) <= ALPHA)
        any_bad_segment += int(any((e or 0.0) > ALPHA for e in errors.values()))
        coverage_hard.append(float((test.confidence >= per_case)[test.region == hard].mean()))
        # Overall control at the full delta, as a model without segment control is trained.
        rc = select_threshold(
            risk.confidence, risk.correct, ALPHA, DELTA, order.confidence, order_correct=order.correct
        )
        overall_err = selective_error(test, np.full(len(test.confidence), rc.threshold), test.region == hard)
        hard_bad_overall += int((overall_err or 0.0) > ALPHA)
    return {
        "draws": draws,
        "hard_region": hard,
        "segment_control_hard_region_within_alpha": rate(hard_ok_segment, draws),
        "segment_control_any_region_above_alpha": rate(any_bad_segment, draws),
        "segment_control_hard_region_mean_coverage": float(np.mean(coverage_hard)),
        "overall_control_hard_region_above_alpha": rate(hard_bad_overall, draws),
        "required_within_alpha_rate": 1 - DELTA,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--rows", type=int, default=40_000, help="training rows per model")
    parser.add_argument("--pool", type=int, default=80_000, help="generated cases the splits are drawn from")
    parser.add_argument("--test", type=int, default=80_000, help="fresh cases measuring selective error")
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {"model": MODEL, "alpha": ALPHA, "delta": DELTA, "split_rows": SPLIT_ROWS}
    with tempfile.TemporaryDirectory(prefix="keel-bench-rc-") as tmp:
        model = trained_model("none", args.rows, 0, Path(tmp))
        pool, test = scored(model, args.pool, 1, "none"), scored(model, args.test, 2, "none")
        report["overall"] = overall_draws(pool, test, args.draws, seed=3)
        small = trained_model("none", SMALL_ROWS, 0, Path(tmp) / "small")
        pool, test = scored(small, args.pool, 11, "none"), scored(small, args.test, 12, "none")
        report["small"] = overall_draws(pool, test, args.draws, seed=13, rows=SMALL_ROWS // 10)
        scenario = "region_process_change"
        model = trained_model(scenario, args.rows, 0, Path(tmp))
        pool, test = scored(model, args.pool, 4, scenario), scored(model, args.test, 5, scenario)
        report["segment"] = segment_draws(pool, test, args.draws, seed=6, hard="EMEA")
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
