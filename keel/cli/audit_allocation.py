"""Power-aware audit allocation: per-cell inclusion probabilities that catch a segment's override
increase within a given number of monitoring windows.

The test planned for is the one monitoring runs on audited cases: one segment value's override
rate against the rest of the model's, one-sided two-proportion z-test at the monitoring alpha
(statsmodels' NormalIndPower on Cohen's h). A cell's audits must reach the target power against
every other cell's audits, so the cells are solved together: starting from every other cell
audited in full, each cell's smallest sufficient probability is found and the rest updated until
nothing moves (the least fixed point). A budget (share of decided cases audited) that the target
exceeds is met by planning for the smallest override ratio the budget affords (bisection), and
each cell's own detectable ratio is reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.optimize import brentq
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

__all__ = ["Allocation", "CellPlan", "allocate", "detectable_ratio", "plan_for"]

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


def _power(h: float, n1: float, n2: float, alpha: float) -> float:
    if n1 <= 0 or n2 <= 0:
        return 0.0
    return float(_POWER.power(h, nobs1=n1, alpha=alpha, ratio=n2 / n1, alternative="larger"))


def _effect(ratio: float, base: float) -> float:
    return float(proportion_effectsize(min(ratio * base, _MAX_RATE), base))


def _cell_need(h: float, m: float, others: float, alpha: float, power: float) -> float:
    """Smallest probability for a cell of `m` decided cases (over the horizon) against `others`
    audits elsewhere; 1.0 when even a full audit falls short."""
    if m <= 0:
        return 0.0
    if _power(h, m, others, alpha) < power:
        return 1.0
    n1 = brentq(lambda n: _power(h, n, others, alpha) - power, 1e-6, m, xtol=1e-3)
    return min(1.0, float(n1) / m)


def plan_for(
    volumes: Mapping[str, float], base: float, ratio: float, within: int, alpha: float, power: float
) -> dict[str, float]:
    """Per-cell probabilities so a `ratio`-fold override rate in any one cell is caught."""
    horizon = {v: n * within for v, n in volumes.items()}
    h = _effect(ratio, base)
    p = dict.fromkeys(horizon, 1.0)
    for _ in range(60):
        nxt = {}
        for v, m in horizon.items():
            others = sum(p[o] * horizon[o] for o in horizon if o != v)
            nxt[v] = _cell_need(h, m, others, alpha, power)
        moved = max(abs(nxt[v] - p[v]) for v in p)
        p = nxt
        if moved < 1e-5:
            break
    return p


def detectable_ratio(
    volumes: Mapping[str, float],
    probabilities: Mapping[str, float],
    cell: str,
    base: float,
    within: int,
    alpha: float,
    power: float,
) -> float:
    """The smallest override-rate ratio in `cell` caught with `power` under `probabilities`."""
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
    base: float,
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
        lo, hi = detect, 1.0 / base  # hi: the cell's override rate at 1
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
