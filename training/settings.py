"""Training settings (KEEL_TRAIN_*)."""

from __future__ import annotations

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
