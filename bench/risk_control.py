"""Risk-control guarantee over many fresh draws: `python -m bench.risk_control [--draws N]`.

A model is trained once per scenario; then each draw takes fresh ordering and risk-control
splits (the sizes training uses) from a large pool of generated cases, picks the threshold(s),
and measures the selective error on a large fresh test set. Prints JSON with Clopper-Pearson
intervals (statsmodels, method="beta") for every rate.

1. discount_band, overall control: violation rate (test selective error > alpha) must be <= delta
   within its binomial allowance, and the certify-nothing rate <= 1%; the former single-start
   search is run on the same draws for comparison.
2. discount_band under `region_process_change` (EMEA's deal desk is stricter; the model does not
   see region, so EMEA is harder): segment control on region versus overall control, the hard
   region's selective error on fresh data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from keel.feature_defs.contract import load_contract
from keel.models.decision_model import DecisionModel
from keel.models.thresholds import ThresholdRule
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.risk_control import (
    NEVER_DECIDE,
    abstention_record,
    select_segment_thresholds,
    select_threshold,
)
from keel.training.settings import TrainingSettings
from scipy.stats import binom
from statsmodels.stats.proportion import proportion_confint

MODEL = "discount_band"
ALPHA, DELTA = 0.02, 0.05
SPLIT_ROWS = 4000  # calibration and risk-control splits of a default 40,000-row training


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


def draw_splits(pool: Scored, rng: np.random.Generator) -> tuple[Scored, Scored]:
    idx = rng.choice(len(pool.confidence), 2 * SPLIT_ROWS, replace=False)
    return pool.take(idx[:SPLIT_ROWS]), pool.take(idx[SPLIT_ROWS:])


def overall_draws(pool: Scored, test: Scored, draws: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {"multi_start": {}, "single_start": {}}
    for method in out.values():
        method.update(violation=[], nothing=[], coverage=[])
    for _ in range(draws):
        order, risk = draw_splits(pool, rng)
        for name, starts in (("multi_start", 3), ("single_start", 1)):
            rc = select_threshold(
                risk.confidence,
                risk.correct,
                ALPHA,
                DELTA,
                order.confidence,
                order_correct=order.correct,
                starts=starts,
            )
            err = selective_error(test, np.full(len(test.confidence), rc.threshold))
            out[name]["violation"].append(float(err is not None and err > ALPHA))
            out[name]["nothing"].append(float(rc.threshold >= NEVER_DECIDE))
            out[name]["coverage"].append(float((test.confidence >= rc.threshold).mean()))
    allowance = int(binom.ppf(0.999, draws, DELTA))
    result: dict[str, Any] = {"draws": draws, "violation_allowance": allowance}
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
        scenario = "region_process_change"
        model = trained_model(scenario, args.rows, 0, Path(tmp))
        pool, test = scored(model, args.pool, 4, scenario), scored(model, args.test, 5, scenario)
        report["segment"] = segment_draws(pool, test, args.draws, seed=6, hard="EMEA")
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
