"""Power-aware audit allocation: per-cell inclusion probabilities that catch a segment's override
increase within a given number of monitoring windows (`keel audit plan`, and bench.audit_power).

The test planned for is the one monitoring runs on audited cases: one segment value's override
rate against the rest of the model's, one-sided two-proportion z-test at the level process drift
gives one value (`value_level`; statsmodels' NormalIndPower on Cohen's h), with each cell's own
base override rate: a ratio is harder to see where the base rate is low, so equal detectable
ratios need more audits there. A cell's audits must reach the target power against
every other cell's audits, so the cells are solved together: the fewest audits in all for which
every cell's need fits (`plan_for`; a per-cell fixed point from "everything else audited in full"
can stop where a low-rate cell cannot reach the target while the others got too few). A budget
(share of decided cases audited) that the target exceeds is met by planning for the smallest
override ratio the budget affords (bisection: the minimax plan, no cell worse than that ratio),
and each cell's own detectable ratio is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from keel.monitoring.overrides import decided_reviews
from keel.monitoring.process_drift import process_drift

__all__ = [
    "Allocation",
    "CellPlan",
    "allocate",
    "detectable_ratio",
    "expected_override_rates",
    "plan_for",
    "value_level",
]

_POWER = NormalIndPower()
_MAX_RATE = 0.999


@dataclass(frozen=True)
class CellPlan:
    value: str
    decided_per_window: float
    probability: float
    audits_per_window: float
    detectable_ratio: float
    """Smallest override-rate ratio this cell's audits catch with the target power (inf: none)."""


@dataclass(frozen=True)
class Allocation:
    cells: list[CellPlan]
    audited_share: float
    planned_ratio: float
    """The ratio the probabilities were solved for (`detect`, or more when the budget binds)."""
    reaches_target: bool


Base = float | Mapping[str, float]
"""One base override rate for every cell, or one per cell (a cell not named gets their mean)."""


def _base(base: Base, cell: str) -> float:
    rate = base.get(cell, sum(base.values()) / max(len(base), 1)) if isinstance(base, Mapping) else base
    return min(max(float(rate), 1e-4), 0.5)


def expected_override_rates(
    reviewed: pd.DataFrame, field: str, bands: Sequence[float]
) -> tuple[dict[str, float], int, int]:
    """Per value of `field`, the override rate its reviewed decided cases would show if its
    reviewers overrode like everyone else's in the same score bands: the rate process drift
    measures a value's ratio against, so the one a plan must be solved on (a value's own rate
    differs where the model is better or worse there). With the overrides and reviews in all.
    It is the findings' `null_rate` (band rates pooled with the value's own reviews), the base the
    stated detection limits use: the reference's alone tilts a plan by one window's noise."""
    decided = decided_reviews(reviewed)
    report = process_drift(reviewed, [field], bands, min_n=1)
    rates = {
        f.value: f.null_rate
        for f in report.findings
        if f.metric == "override_rate" and f.field == field and f.null_rate is not None
    }
    return rates, int(decided["overridden"].sum()) if len(decided) else 0, len(decided)


def value_level(alpha: float, values: int, primary: bool, primary_share: float) -> float:
    """The one-sided level process drift tests one value of the field at when it drifts alone:
    alpha x the field's share of the budget / its values (the first step of its weighted Holm)."""
    share = primary_share if primary else 1.0 - primary_share
    return alpha * share / max(values, 1)


def _power(h: float, n1: float, n2: float, alpha: float) -> float:
    if n1 <= 0 or n2 <= 0:
        return 0.0
    return float(_POWER.power(h, nobs1=n1, alpha=alpha, ratio=n2 / n1, alternative="larger"))


def _effect(ratio: float, base: float) -> float:
    return float(proportion_effectsize(min(ratio * base, _MAX_RATE), base))


def _range(q: float, total: float) -> tuple[float, float]:
    """The audits n1 in a cell, out of `total`, with n1 (total - n1) / total >= q: the one-sided
    z-test of the cell's n1 against the other total - n1 reaches the power q stands for (an
    empty range, (inf, -inf), when no split of `total` does)."""
    if total < 4 * q:
        return math.inf, -math.inf
    half = total / 2 * math.sqrt(max(0.0, 1 - 4 * q / total))
    return total / 2 - half, total / 2 + half


def plan_for(
    volumes: Mapping[str, float], base: Base, ratio: float, within: int, alpha: float, power: float
) -> dict[str, float]:
    """Per-cell probabilities, fewest audits in all, so a `ratio`-fold override rate in any one
    cell is caught; 1.0 everywhere when even auditing every case would not do.

    The test reaches `power` when h / sqrt(1/n1 + 1/n2) >= z(1 - alpha) + z(power) (the arcsine
    z-test NormalIndPower computes), i.e. n1 n2 / (n1 + n2) >= q = ((z_a + z_b) / h)^2, where n2
    is every audit outside the cell. With N audits in all, a cell's n1 must lie in
    N/2 (1 -+ sqrt(1 - 4q/N)) (and within its cases): N is feasible when those ranges can add up
    to N. The smallest feasible N (bisection) is the cheapest plan; its audits go to each cell's
    least, the rest spread over the cells' room."""
    horizon = {v: n * within for v, n in volumes.items()}
    z = float(norm.ppf(1 - alpha) + norm.ppf(power))
    q = {v: (z / max(_effect(ratio, _base(base, v)), 1e-9)) ** 2 for v in horizon if horizon[v] > 0}
    everything = sum(horizon.values())

    def ranges(total: float) -> dict[str, tuple[float, float]] | None:
        out = {v: _range(qv, total) for v, qv in q.items()}
        low = sum(lo for lo, _ in out.values())
        high = sum(min(hi, horizon[v]) for v, (_, hi) in out.items())
        if any(lo > horizon[v] for v, (lo, _) in out.items()) or not low <= total <= high:
            return None
        return out

    if not q or ranges(everything) is None:
        return dict.fromkeys(horizon, 1.0)
    lo_n, hi_n = 4 * max(q.values()), everything
    for _ in range(60):
        mid = (lo_n + hi_n) / 2
        lo_n, hi_n = (mid, hi_n) if ranges(mid) is None else (lo_n, mid)
    found = ranges(hi_n)
    assert found is not None  # hi_n stays feasible throughout the bisection
    least = {v: lo for v, (lo, _) in found.items()}
    room = {v: min(hi, horizon[v]) - least[v] for v, (_, hi) in found.items()}
    spare = hi_n - sum(least.values())
    spread = spare / sum(room.values()) if sum(room.values()) > 0 else 0.0
    return {v: min(1.0, (least[v] + spread * room[v]) / horizon[v]) if v in q else 0.0 for v in horizon}


def detectable_ratio(
    volumes: Mapping[str, float],
    probabilities: Mapping[str, float],
    cell: str,
    base: Base,
    within: int,
    alpha: float,
    power: float,
) -> float:
    """The smallest override-rate ratio in `cell` caught with `power` under `probabilities`."""
    base = _base(base, cell)
    n1 = probabilities[cell] * volumes[cell] * within
    n2 = sum(probabilities[o] * volumes[o] * within for o in volumes if o != cell)
    top = _effect(1.0 / base, base)  # the cell's rate at (almost) 1
    if _power(top, n1, n2, alpha) < power:
        return math.inf
    h = float(brentq(lambda e: _power(e, n1, n2, alpha) - power, 1e-9, top, xtol=1e-6))
    rate = math.sin(math.asin(math.sqrt(base)) + h / 2) ** 2
    return rate / base


def allocate(
    volumes: Mapping[str, float],
    base: Base,
    detect: float,
    within: int,
    power: float,
    alpha: float,
    budget: float | None = None,
) -> Allocation:
    """Probabilities per cell for `detect` (or the smallest ratio `budget` affords)."""
    if not volumes or sum(volumes.values()) <= 0:
        raise ValueError("no decided cases to plan from")
    total = sum(volumes.values())

    def share(p: Mapping[str, float]) -> float:
        return sum(p[v] * volumes[v] for v in volumes) / total

    ratio = detect
    p = plan_for(volumes, base, detect, within, alpha, power)
    if budget is not None and share(p) > budget:
        lo, hi = detect, 1.0 / max(_base(base, v) for v in volumes)  # hi: some cell's rate at 1
        if share(plan_for(volumes, base, hi, within, alpha, power)) > budget:
            lo = hi
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                if share(plan_for(volumes, base, mid, within, alpha, power)) > budget:
                    lo = mid
                else:
                    hi = mid
        ratio = hi
        p = plan_for(volumes, base, ratio, within, alpha, power)
        if share(p) > budget:  # not even the largest ratio fits: spread the budget evenly
            p = dict.fromkeys(volumes, budget)
        # What the bisection leaves of a binding budget is spent evenly: more audits never hurt.
        for _ in range(5):
            spare = budget - share(p)
            if spare <= 1e-9:
                break
            open_ = [v for v in volumes if p[v] < 1.0]
            if not open_:
                break
            step = spare * total / sum(volumes[v] for v in open_)
            p = {v: min(1.0, p[v] + step) if v in open_ else p[v] for v in volumes}
    cells = [
        CellPlan(
            value=v,
            decided_per_window=volumes[v],
            probability=p[v],
            audits_per_window=p[v] * volumes[v],
            detectable_ratio=detectable_ratio(volumes, p, v, base, within, alpha, power),
        )
        for v in sorted(volumes, key=lambda k: -volumes[k])
    ]
    reaches = all(c.detectable_ratio <= detect * (1 + 1e-3) for c in cells)
    return Allocation(cells, share(p), ratio, reaches)
