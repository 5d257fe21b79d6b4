"""Monitoring settings (KEEL_MONITOR_*): window, sampling and every check's thresholds, as data."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """Thresholds are (warn, alert) pairs; a check's direction is fixed in `monitoring.checks`."""

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

    score_bands: list[float] = Field(default_factory=lambda: [0.0, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0001])
    """Confidence band edges used to condition process-drift comparisons."""
