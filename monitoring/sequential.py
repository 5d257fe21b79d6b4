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

State is one row per model and field of the decision log's `monitor_sequential` table
(keel.decision_log.monitor_runs), so every machine and replica running the monitor adds to the
same evidence. `accumulate` updates it by compare-and-swap on the row's revision: a monitor that
lost a race reloads the state, asks for its chunk again from the new `consumed_until` (the
winner's chunk is not read twice) and retries, so two monitors at once never count a chunk twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from keel.decision_log import monitor_runs as sql
from keel.decision_log.database import Database
from keel.errors import Conflict
from keel.monitoring.overrides import decided_reviews
from keel.monitoring.stats import band_index

__all__ = [
    "Chunk",
    "SequentialState",
    "ValueEvidence",
    "accumulate",
    "chunk_statistics",
    "e_value",
    "load_state",
]

Chunk = tuple[dict[str, tuple[float, float, int, int]], str, str]
"""A chunk's per-value (S, V, n, events), and the [start, end) it covers (ISO 8601)."""
MAX_ATTEMPTS = 50
"""Lost races before giving up: each loss means another monitor stored a chunk meanwhile."""


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
    tuned_to: str = ""
    """What the mixture is tuned to, for the verdict ("" : `sequential_rho`); not part of the design
    (`rho` is), so it is neither compared nor needed when the state is restored."""

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
    def restore(
        cls, raw: dict[str, Any] | None, model: str, field_name: str, alpha: float, rho: float
    ) -> SequentialState:
        """The state `to_dict` stored, or a new test when there is none or its design differs."""
        if (
            raw is None
            or raw.get("field") != field_name
            or raw.get("alpha") != alpha
            or raw.get("rho") != rho
        ):
            # Changed settings start a new test: mixing evidence across designs voids the bound.
            return cls(model, field_name, alpha, rho)
        values = {k: ValueEvidence(**v) for k, v in raw.get("values", {}).items()}
        return cls(model, field_name, alpha, rho, raw.get("consumed_until"), raw.get("chunks", []), values)


def load_state(db: Database, model: str, field_name: str, alpha: float, rho: float) -> SequentialState:
    """The stored evidence of `model` on `field_name` (a new test if none, or another design)."""
    row = sql.read_sequential(db, model, field_name)
    raw = json.loads(row.state) if row is not None else None
    return SequentialState.restore(raw, model, field_name, alpha, rho)


def accumulate(
    db: Database,
    model: str,
    field_name: str,
    alpha: float,
    rho: float,
    next_chunk: Callable[[SequentialState], Chunk | None],
) -> SequentialState:
    """Fold `next_chunk(state)` (None: nothing to add yet) into the stored evidence and store it
    by compare-and-swap; on a lost race reload and ask `next_chunk` again on the new state."""
    for _ in range(MAX_ATTEMPTS):
        row = sql.read_sequential(db, model, field_name)
        raw = json.loads(row.state) if row is not None else None
        state = SequentialState.restore(raw, model, field_name, alpha, rho)
        chunk = next_chunk(state)
        if chunk is None:
            return state
        state.add_chunk(*chunk)
        now = datetime.now(UTC).isoformat()
        revision = row.revision if row is not None else None
        if sql.swap_sequential(db, model, field_name, json.dumps(state.to_dict()), revision, now):
            return state
    raise Conflict(
        f"sequential evidence of {model} ({field_name}) changed under this monitor {MAX_ATTEMPTS} times "
        "in a row; run it again"
    )


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
