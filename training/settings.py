"""Training settings (KEEL_TRAIN_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainingSettings(BaseSettings):
    """How much data to generate and how to fit, calibrate and risk-control a model."""

    model_config = SettingsConfigDict(env_prefix="KEEL_TRAIN_", extra="ignore")

    rows: int = 40_000
    """Rows generated per model when no data file is given."""

    seed: int = 7
    """Seed for the data generator, the reference sample and LightGBM."""

    alpha: float = 0.02
    """Target error rate among the cases the model decides itself."""

    delta: float = 0.05
    """Allowed probability that the alpha guarantee fails (over the risk-control draw)."""

    num_boost_round: int = 300
    """Upper bound on boosting rounds; early stopping usually ends sooner."""

    early_stopping_rounds: int = 30
    """Rounds without validation improvement before training stops."""

    learning_rate: float = 0.08
    """LightGBM shrinkage."""

    num_leaves: int = 31
    """LightGBM leaves per tree."""

    min_data_in_leaf: int = 40
    """LightGBM minimum rows per leaf."""

    reference_rows: int = 5_000
    """Rows of the held-out test split kept with the model as the drift-monitoring reference."""

    min_decided: int = 300
    """Decided risk-control cases at the most conservative threshold the search starts from."""

    risk_primary_share: float = Field(default=0.8, gt=0.0, le=1.0)
    """Share of delta on the threshold search's lowest-bound start; the rest goes to its
    expected-coverage start (training/risk_control.py), so one unlucky first test cannot end the
    search at zero coverage. 1.0: a single fixed sequence."""

    drop_invariant_features: bool = False
    """Leave segment fields the contract declares invariant out of the model's features: the
    sealed contract marks them `feature: false` (so its version differs from the file's)."""

    segment_fields: dict[str, str] = {}
    """Per-model segment field for segment-conditional risk control, e.g. {"discount_band": "region"}
    (JSON in KEEL_TRAIN_SEGMENT_FIELDS): each value with enough cases gets its own threshold."""

    segment_min_cases: int = 400
    """Risk-control cases a segment value needs for its own certified threshold."""

    segment_fallback: Literal["review", "overall"] = "review"
    """Threshold for segment values with too few cases: `review` abstains on all of them (human
    review), `overall` uses the overall threshold (certified overall, not for that segment)."""

    min_rows_per_class: int = 50
    """Fewest training rows per class; a data set with a rarer class is refused before training."""


class PromotionSettings(BaseSettings):
    """Promotion gates and the two-person rule (KEEL_PROMOTE_*)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_PROMOTE_", extra="ignore")

    coverage_tolerance: float = 0.02
    """How far the candidate's test coverage may fall below the champion's (absolute share)."""

    accuracy_tolerance: float = 0.01
    """How far the candidate's test accuracy may fall below the champion's (absolute share)."""

    override_tolerance: float = 0.02
    """How far the candidate's would-be override rate on held-out reviewed cases may exceed the
    champion's (absolute share)."""

    min_reviewed_cases: int = 50
    """Reviewed cases from the decision log (neither version trained on) needed to gate on them."""

    min_segment_decided: int = 200
    """Decided test cases a segment value needs before its selective error is gated."""

    consistency_sample: int = Field(default=2000, ge=1)
    """Held-out test cases of the candidate re-decided with other values of its invariant fields."""

    canary_auto_rollback: bool = False
    """Stop any model's canary automatically when its reviewed override rate exceeds the
    champion's beyond override_tolerance (per model: `keel canary ... --auto-rollback`)."""

    two_person: bool = False
    """Require a second actor's `keel approve` for every model (a model can also require it with
    the registered-model tag keel.two_person=true)."""
