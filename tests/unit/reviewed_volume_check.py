"""A monitoring check that exists only in the tests: how many reviewed decided cases the window
has (too few and every feedback-based verdict is thin). Registered at test time, it must reach
the verdicts, the report, summary.json, the trend page and Prometheus with no product file edited."""

from __future__ import annotations

from keel.monitoring.checks import Check, Measurement
from keel.monitoring.evidence import Evidence
from keel.monitoring.settings import MonitorSettings

__all__ = ["REVIEWED_VOLUME"]


def _reviewed_volume(ev: Evidence, s: MonitorSettings, limits: tuple[float, float] | None) -> Measurement:
    n = ev.overrides.n_reviewed_decided
    return Measurement(float(n), f"{n} reviewed decided cases in the window")


REVIEWED_VOLUME = Check(
    name="reviewed_volume",
    title="Reviewed decided cases in the window",
    direction="lower_is_worse",
    thresholds=(5000.0, 100.0),
    unit="number",
    remedy="ask the review leads to confirm or correct a sample of the model's decided cases.",
    measure=_reviewed_volume,
)
