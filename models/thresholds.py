"""Which abstention threshold applies to a case: the overall one, or its segment's.

Read from the bundle's abstention.json, written at training (keel.training.risk_control).
A model certified per segment carries one threshold per value of its segment field; values
without their own threshold (too few calibration cases, or never seen) fall back to human
review (never decide) or to the overall threshold, as recorded at training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np

__all__ = ["NEVER_DECIDE", "OVERALL", "REVIEW", "ThresholdRule"]

NEVER_DECIDE = 2.0
"""Threshold above any probability: the model abstains on every case."""

OVERALL = "overall"
REVIEW = "review"


@dataclass(frozen=True)
class ThresholdRule:
    overall: float
    field: str | None = None
    by_value: dict[str, float] = dc_field(default_factory=dict)
    fallback: str = REVIEW

    @classmethod
    def from_abstention(cls, record: Mapping[str, Any]) -> ThresholdRule:
        seg = record.get("segment_control")
        if not seg:
            return cls(float(record["threshold"]))
        return cls(
            float(record["threshold"]),
            str(seg["field"]),
            {str(v): float(rc["threshold"]) for v, rc in seg["segments"].items()},
            str(seg["fallback"]),
        )

    def applies(self, values: Sequence[object] | None, n: int) -> tuple[np.ndarray, list[str]]:
        """Per-case thresholds and, for each, which one applied (`overall`, `region=EMEA`, ...)."""
        if self.field is None or values is None:
            return np.full(n, self.overall), [OVERALL] * n
        fallback = NEVER_DECIDE if self.fallback == REVIEW else self.overall
        thresholds = np.empty(n)
        applied: list[str] = []
        for i, value in enumerate(values):
            key = str(value)
            own = self.by_value.get(key)
            thresholds[i] = fallback if own is None else own
            label = f"{self.field}={key}"
            applied.append(label if own is not None else f"{label} (fallback: {self.fallback})")
        return thresholds, applied
