"""Anytime-valid process drift: evidence that accumulates over consecutive windows.

Each monitor run consumes only the decisions it has not consumed before (a non-overlapping
chunk [consumed_until, end)), so running the monitor hourly, daily or twice in a row never
re-uses a case. Per value of the primary segment field (region) the chunk adds its
Cochran–Mantel–Haenszel numerator S (observed minus expected overrides of that value, within
score bands) and variance V to running totals. Under "no difference in the same score bands"
S is a sum of centred hypergeometric terms, and

    e = 2 / sqrt(1 + rho V) * exp(rho S^2 / (2 (1 + rho V))) * Phi(S sqrt(rho / (1 + rho V)))

is Robbins' normal-mixture e-process restricted to increases (theta ~ half-normal with
variance rho on the log-rate scale). By Ville's inequality P(sup_t e_t >= 1/a) <= a, so an
alarm when any value's e reaches K/alpha (Bonferroni over K values) keeps the false-alarm
probability <= alpha over every run there will ever be. Hand-written: no library we use
ships mixture sequential tests over stratified 2x2 tables.

State is a JSON file per model under the reports folder (`<reports>/<model>/sequential.json`),
replaced atomically; the decision log's tables are not touched.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from keel.monitoring.overrides import decided_reviews
from keel.monitoring.stats import band_index

__all__ = ["SequentialState", "ValueEvidence", "chunk_statistics", "e_value", "state_path"]


@dataclass
class ValueEvidence:
    s: float = 0.0
    v: float = 0.0
    n: int = 0
    events: int = 0
    e: float = 1.0
    max_e: float = 1.0
    """Largest e so far: once past the bar, the alarm stands (that is what the guarantee covers)."""


@dataclass
class SequentialState:
    model: str
    field: str
    alpha: float
    rho: float
    consumed_until: str | None = None
    chunks: list[dict[str, Any]] = dc_field(default_factory=list)
    values: dict[str, ValueEvidence] = dc_field(default_factory=dict)

    @property
    def bar(self) -> float:
        """e needed for an alarm: K / alpha over the K values seen so far (at least one)."""
        return max(1, len(self.values)) / self.alpha

    @property
    def alarms(self) -> list[str]:
        return sorted((v for v, ev in self.values.items() if ev.max_e >= self.bar), key=self._rank)

    def _rank(self, value: str) -> float:
        return -self.values[value].max_e

    def add_chunk(self, stats: dict[str, tuple[float, float, int, int]], start: str, end: str) -> None:
        """Fold one chunk's per-value (S, V, n, events) into the running evidence."""
        for value, (s, v, n, k) in stats.items():
            ev = self.values.setdefault(value, ValueEvidence())
            ev.s, ev.v, ev.n, ev.events = ev.s + s, ev.v + v, ev.n + n, ev.events + k
            ev.e = e_value(ev.s, ev.v, self.rho)
            ev.max_e = max(ev.max_e, ev.e)
        self.chunks.append({"start": start, "end": end, "values": len(stats)})
        self.consumed_until = end

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"bar": self.bar, "alarms": self.alarms}

    @classmethod
    def load(cls, path: Path, model: str, field_name: str, alpha: float, rho: float) -> SequentialState:
        if not path.exists():
            return cls(model, field_name, alpha, rho)
        raw = json.loads(path.read_text())
        if raw.get("field") != field_name or raw.get("alpha") != alpha or raw.get("rho") != rho:
            # Changed settings start a new test: mixing evidence across designs voids the bound.
            return cls(model, field_name, alpha, rho)
        values = {k: ValueEvidence(**v) for k, v in raw.get("values", {}).items()}
        return cls(model, field_name, alpha, rho, raw.get("consumed_until"), raw.get("chunks", []), values)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)  # a crash mid-write leaves the previous state, never half of one


def state_path(reports: Path, model: str) -> Path:
    return reports / model / "sequential.json"


def e_value(s: float, v: float, rho: float) -> float:
    """One-sided normal-mixture e-value for the running CMH numerator s with variance v."""
    if v <= 0:
        return 1.0
    scale = 1.0 + rho * v
    log_e = math.log(2.0) - 0.5 * math.log(scale) + rho * s * s / (2 * scale)
    return float(math.exp(min(log_e, 700.0)) * norm.cdf(s * math.sqrt(rho / scale)))


def chunk_statistics(
    reviewed: pd.DataFrame, field_name: str, bands: Sequence[float]
) -> dict[str, tuple[float, float, int, int]]:
    """Per value of `field_name`: CMH numerator, its variance, cases and overrides in the chunk,
    each value against all the others within score bands."""
    decided = decided_reviews(reviewed)
    if decided.empty or field_name not in decided:
        return {}
    decided = decided[decided["confidence"].notna() & decided[field_name].notna()]
    codes, uniques = pd.factorize(decided[field_name].astype(str))
    band = band_index(decided["confidence"].to_numpy(dtype="float64"), bands)
    n = np.zeros((len(uniques), len(bands) - 1))
    e = np.zeros_like(n)
    np.add.at(n, (codes, band), 1.0)
    np.add.at(e, (codes, band), decided["overridden"].to_numpy(dtype=float))
    big, m = n.sum(axis=0), e.sum(axis=0)
    out = {}
    for i, value in enumerate(uniques):
        a, n1 = e[i], n[i]
        n2 = big - n1
        ok = (big > 1) & (n1 > 0) & (n2 > 0)
        expected = np.where(ok, n1 * m / np.maximum(big, 1), a)
        var = np.where(ok, n1 * n2 * m * (big - m) / np.maximum(big * big * (big - 1), 1), 0.0)
        out[str(value)] = (float((a - expected).sum()), float(var.sum()), int(n1.sum()), int(a.sum()))
    return out
