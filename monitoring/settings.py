"""Monitoring settings (KEEL_MONITOR_*): window, sampling and every check's thresholds, as data."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """Thresholds are (warn, alert) pairs; each check names the field it reads, and its direction,
    in its `monitoring.checks` registry entry."""

    model_config = SettingsConfigDict(env_prefix="KEEL_MONITOR_", extra="ignore")

    window: str = "7d"
    """Default window length back from now (e.g. 24h, 7d, 30d)."""

    sample_rows: int = 20_000
    """Most decisions read as raw rows for the Evidently parts (the rest is aggregated in SQL)."""

    reference_rows: int = 5_000
    """Most rows of the model version's reference sample used."""

    min_reviewed: int = 30
    """Fewer reviewed decided cases than this: override and quality checks report no verdict."""

    feature_drift_share: tuple[float, float] = (0.2, 0.4)
    """Share of model features whose distribution drifted."""

    important_features: int = 3
    """Drift in any of this many most important features (reference mean |SHAP|) is an alert."""

    explanation_drift_share: tuple[float, float] = (0.2, 0.4)
    """Share of features whose SHAP contribution distribution drifted."""

    outcome_shift: tuple[float, float] = (0.05, 0.10)
    """Largest absolute change of one outcome's share versus the reference."""

    abstention_increase: tuple[float, float] = (0.05, 0.15)
    """Abstention rate minus the reference's."""

    intervention_increase: tuple[float, float] = (0.05, 0.15)
    """Policy-intervention rate minus the reference's."""

    override_rate: tuple[float, float] = (0.08, 0.15)
    """Override rate among reviewed decided cases (judged on its Wilson lower bound)."""

    reviewed_accuracy: tuple[float, float] = (0.90, 0.80)
    """Accuracy on reviewed cases (lower is worse)."""

    process_drift_p: float = 0.01
    """Holm-adjusted p-value below which a segment difference counts."""

    process_drift_ratio: tuple[float, float] = (1.5, 2.5)
    """Override-rate ratio (segment vs rest, same score bands) for warn and alert."""

    min_decisions: int = 30
    """Fewer decisions than this in the window: the monitor says it could not run (exit 3)."""

    primary_segment: str = "region"
    """Segment field that gets `primary_share` of process drift's error budget (and the
    sequential test); models without it use their first segment field."""

    primary_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    """Share of process drift's false-alarm budget spent on the primary segment's values (a
    handful of regions); the rest is split over every other field's values (dozens)."""

    segment_mix_p: float = 0.01
    """Holm-adjusted p-value (chi-squared, window vs reference) below which a segment's mix moved."""

    segment_mix_ratio: tuple[float, float] = (1.25, 2.0)
    """Largest share ratio (current / reference, or its inverse) of one value of a moved segment."""

    consistency_sample_rows: int = Field(default=500, ge=1)
    """Logged decisions of the window the decision_consistency check re-decides with every other
    value of each measured segment field (a bounded sample: `keel consistency` audits more)."""

    consistency_ratio: tuple[float, float] = (0.5, 1.0)
    """Worst invariant field's flip-rate lower bound as a multiple of its declared tolerance."""

    concept_tolerance: float = 0.05
    """Error above the certified alpha a segment may show (reviewer slips, harder segments)
    before its reviewed error on decided cases counts as the model being wrong there."""

    concept_p: float = 0.01
    """Holm-adjusted p-value below which a segment's reviewed error exceeds alpha + tolerance."""

    expected_error_ratio: tuple[float, float] = (1.5, 3.0)
    """Worst segment's expected selective error (from confidences) as a multiple of alpha."""

    sequential_alpha: float = 0.05
    """False-alarm probability of the sequential process-drift test over all runs, ever."""

    sequential_rho: float = 0.5
    """Prior variance of the log rate ratio in the sequential test's mixture (tunes its power
    to rate ratios around exp(sqrt(rho)), i.e. 2x for 0.5)."""

    sequential_detect_ratio: Annotated[float, Field(gt=1.0)] | None = None
    """Override-rate ratio the sequential test should be most powerful for. When set, the mixture
    variance is rho = log(ratio)^2 (the normal mixture over the log rate ratio is tuned to effects
    about sqrt(rho) on that scale); when unset, the model's active audit plan's --detect target
    takes its place, and without one `sequential_rho` stands. Changing it (or recording a plan
    with another target) starts a new test, as any change of design does."""

    audited_error_excess: tuple[float, float] = (0.025, 0.05)
    """How far above the certified alpha the lower 95% bound of the audited (inverse-probability
    weighted) selective error may be before it warns / alerts: reviewers slip too (about 2%), so a
    model that keeps its guarantee still shows a little more error than alpha on audits."""

    practice_p: float = 0.01
    """Level at which audited local and cross reviewers' overturn rates are read (practice vs rule)."""

    practice_reading_p: float = 0.05
    """Level at which cross reviewers overturning less than the local ones reads "review practice",
    family-wise over the segment values reported (weighted Holm): a changed rule is misread as a
    practice, in any value, at most this often. The "model wrong there" reading (the one that says
    retrain) keeps `practice_p`."""

    sequential_settle_hours: float = 0.0
    """Decisions younger than this are left to a later run, so their feedback can arrive first."""

    prometheus_file: str | None = None
    """If set, verdicts are written here in the Prometheus textfile-collector format."""

    def detect_ratio(self, planned: float | None = None) -> float | None:
        """The ratio the sequential test is tuned to: this setting, else the audit plan's target
        (`planned`), else None (`sequential_rho` stands)."""
        return self.sequential_detect_ratio if self.sequential_detect_ratio is not None else planned

    def mixture_rho(self, planned: float | None = None) -> float:
        """The sequential test's mixture variance: log(ratio)^2 for `detect_ratio(planned)` when there
        is one, else `sequential_rho`."""
        ratio = self.detect_ratio(planned)
        return math.log(ratio) ** 2 if ratio is not None else self.sequential_rho

    score_bands: list[float] = Field(default_factory=lambda: [0.0, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0001])
    """Confidence band edges used to condition process-drift comparisons."""
