"""Benchmark: how often reviewer agreement reads a value as agreeing less, over simulated windows.

Each window is shaped like `keel simulate --scenario reviewer_disagreement` as the integration
test runs it: 450 cases reviewed twice, four regions (EMEA about 28% of cases), entities inside
regions, four product lines and five channels drawn apart from the region. EMEA's reviewers pick
a random class on `--erratic` of their reviews, everyone else on 2%. Per window it records
whether region EMEA was read (power) and whether any value outside EMEA was (a false reading;
EMEA's entities are EMEA's), for the current rule (keel.monitoring.reviewer_agreement: one-sided
z test, Holm over the values compared, values of other fields already read set aside) and for
the rule before it (two 95% intervals apart, no family). With `--erratic 0.02` nobody is erratic
and any reading is false. Rates with Clopper-Pearson 95% intervals. Prints JSON.

    python -m bench.reviewer_agreement [--windows 1000] [--pairs 450] [--erratic 0.35] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta

from keel.monitoring.reviewer_agreement import agreement_report

SEGMENTS = ["channel", "product_line", "region", "entity"]


def window(
    rng: np.random.Generator, n: int, erratic: float, emea_share: dict[str, float] | None = None
) -> pd.DataFrame:
    """One window's pairs: EMEA's reviewers slip on `erratic` of their reviews, the others on 2%;
    EMEA's share of each product line's cases is 28%, or as `emea_share` says."""
    classes = np.array(["a", "b", "c", "d", "e"])
    product = rng.choice(np.array(["p1", "p2", "p3", "p4"]), n)
    emea = rng.random(n) < np.array([(emea_share or {}).get(p, 0.28) for p in product])
    region = np.where(emea, "EMEA", rng.choice(["NA", "APAC", "LATAM"], n, p=[0.6, 0.25, 0.15]))
    truth = classes[rng.integers(0, 5, n)]

    def reviewer() -> np.ndarray:
        slip = rng.random(n) < np.where(emea, erratic, 0.02)
        return np.where(slip, classes[rng.integers(0, 5, n)], truth)

    return pd.DataFrame({
        "case": [f"c{i}" for i in range(n)], "source": "duplicate_case", "first": reviewer(),
        "second": reviewer(), "first_actor": "r1", "second_actor": "r2", "region": region,
        "entity": [f"{r}-{i}" for r, i in zip(region, rng.integers(0, 3, n), strict=True)],
        "product_line": product, "channel": rng.choice(list("vwxyz"), n),
    })  # fmt: skip


def old_rule(by_segment: dict[str, list[dict[str, Any]]], min_pairs: int = 50) -> set[tuple[str, str]]:
    """The rule before 2026-12-08: at least 50 pairs each side, the value's interval wholly below."""
    return {
        (name, v["value"])
        for name, values in by_segment.items()
        for v in values
        if v["kappa"]["n"] >= min_pairs
        and v["rest"]["n"] >= min_pairs
        and v["kappa"]["kappa"] is not None
        and v["rest"]["kappa"] is not None
        and v["kappa"]["high"] < v["rest"]["low"]
    }


def rate(k: int, n: int) -> dict[str, Any]:
    low = float(beta.ppf(0.025, k, n - k + 1)) if k else 0.0
    high = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return {"count": k, "rate": round(k / n, 4), "cp95": [round(low, 4), round(high, 4)]}


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--windows", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=450)
    p.add_argument("--erratic", type=float, default=0.35)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    counts = {"new_false": 0, "old_false": 0, "new_emea": 0, "old_emea": 0}
    quiet = args.erratic <= 0.02

    def false(read: set[tuple[str, str]]) -> bool:
        if quiet:
            return bool(read)
        return any(not (v == "EMEA" or (f == "entity" and v.startswith("EMEA-"))) for f, v in read)

    for _ in range(args.windows):
        report = agreement_report(window(rng, args.pairs, args.erratic), SEGMENTS)
        for name, read in (("new", set(report.lower)), ("old", old_rule(report.by_segment))):
            counts[f"{name}_false"] += false(read)
            counts[f"{name}_emea"] += ("region", "EMEA") in read
    out = {
        "benchmark": "reviewer_agreement",
        "settings": vars(args),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **{k: rate(v, args.windows) for k, v in counts.items()},
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
