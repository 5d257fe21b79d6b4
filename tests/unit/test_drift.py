"""Drift checks on a real small model and the foundation's scenario generators.

Scenario findings (discount_band, 3,000-row windows against the bundle's reference sample):
covariate_shift moves ARR, seats and channel; concept_shift leaves inputs and the model's own
outputs untouched, so no drift check can see it (only overrides do); region_process_change is
diluted in the whole window but plain in EMEA-only frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from keel.errors import InvalidInput
from keel.feature_defs.contract import load_contract
from keel.models.decision_model import DecisionModel
from keel.models.frames import reference_frame
from keel.monitoring.drift import (
    DriftConfig,
    NotEnoughRows,
    explanation_drift,
    feature_drift,
    prediction_drift,
)
from keel.monitoring.settings import MonitorSettings
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.settings import TrainingSettings

MODEL = "discount_band"
ROWS = 3000
ALERT_SHARE = MonitorSettings().feature_drift_share[1]
WARN_SHARE = MonitorSettings().feature_drift_share[0]
OUTCOME_ALERT = MonitorSettings().outcome_shift[1]


@dataclass
class Setup:
    model: DecisionModel
    reference: pd.DataFrame  # the bundle's reference sample (a slice of the training split)
    windows: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)

    def window(self, scenario: str, seed: int) -> pd.DataFrame:
        """A current window in the logged-frame shape (cached: several tests share windows)."""
        key = (scenario, seed)
        if key not in self.windows:
            cases = generate(MODEL, ROWS, seed=seed, scenario=scenario)
            self.windows[key] = reference_frame(self.model, "1", cases, None)
        return self.windows[key].copy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    out: Path = tmp_path_factory.mktemp("drift") / "bundle"
    settings = TrainingSettings(rows=6000, num_boost_round=80)
    result = train(load_contract(MODEL), generate(MODEL, 6000, 0), out, settings)
    model = DecisionModel.load(result.bundle_dir)
    reference = pd.read_parquet(result.bundle_dir / "reference.parquet")
    return Setup(model, reference_frame(model, "1", reference, None))


def emea(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["region"] == "EMEA"]


def test_no_drift_windows_raise_no_feature_or_outcome_alert(setup: Setup) -> None:
    cfg = DriftConfig()
    for seed in (5, 6, 7):  # three independent no-drift windows: the false-alarm count must be zero
        current = setup.window("none", seed)
        features = feature_drift(setup.reference, current, setup.model.contract, cfg)
        assert features.drifted_share < ALERT_SHARE, features.drifted_columns
        assert features.current_rows == ROWS and features.reference_rows == len(setup.reference)
        contract = setup.model.contract
        checked = {f.name for f in contract.feature_fields} | {d.name for d in contract.derived}
        assert {c.column for c in features.columns} == checked
        outcome = prediction_drift(setup.reference, current, setup.model.classes, cfg)
        assert outcome.outcome is not None and not outcome.outcome.drifted
        assert outcome.max_share_change < OUTCOME_ALERT


def test_covariate_shift_is_detected_in_feature_drift(setup: Setup) -> None:
    cfg = DriftConfig()
    result = feature_drift(setup.reference, setup.window("covariate_shift", 5), setup.model.contract, cfg)
    assert {"list_price_arr", "seats", "channel"} <= set(result.drifted_columns)
    assert result.drifted_share >= WARN_SHARE
    arr = result.column("list_price_arr")
    assert arr.kind == "numerical" and arr.method == "wasserstein" and arr.score >= (arr.threshold or 0.0)
    assert result.column("channel").kind == "categorical"
    assert result.column("competitor_present").kind == "categorical"  # bool is categorical
    assert result.snapshot is not None


def test_concept_shift_is_invisible_to_drift_checks(setup: Setup) -> None:
    """The true outcome rule moves, inputs do not: the model answers exactly as before.

    So concept_shift shows in neither feature, prediction nor explanation drift; it is only
    visible through human overrides (the override and process-drift checks).
    """
    cfg = DriftConfig()
    contract = setup.model.contract
    shifted, baseline = setup.window("concept_shift", 6), setup.window("none", 6)
    features = feature_drift(setup.reference, shifted, contract, cfg)
    assert features.drifted_share < ALERT_SHARE
    assert (
        features.to_dict()["columns"]
        == feature_drift(setup.reference, baseline, contract, cfg).to_dict()["columns"]
    )
    outcome = prediction_drift(setup.reference, shifted, setup.model.classes, cfg)
    assert outcome.outcome is not None and not outcome.outcome.drifted
    assert outcome.max_share_change < OUTCOME_ALERT
    shap = explanation_drift(setup.reference, shifted, contract, cfg)
    assert shap.drifted_columns == explanation_drift(setup.reference, baseline, contract, cfg).drifted_columns


def test_region_process_change_shows_in_emea_rows(setup: Setup) -> None:
    cfg = DriftConfig()
    contract = setup.model.contract
    current = setup.window("region_process_change", 5)
    # A fresh no-drift window as reference: per-region slices of the bundle's sample are small
    # enough for sampling noise in the categorical distances.
    reference = setup.window("none", 99)
    in_emea = feature_drift(emea(reference), emea(current), contract, cfg)
    assert {"channel", "days_in_stage"} <= set(in_emea.drifted_columns)  # partners, longer stalls
    assert in_emea.current_rows == len(emea(current)) < ROWS
    elsewhere = feature_drift(
        reference[reference["region"] == "NA"], current[current["region"] == "NA"], contract, cfg
    )
    assert elsewhere.drifted_columns == []
    whole = feature_drift(reference, current, contract, cfg)
    assert whole.drifted_share < in_emea.drifted_share  # diluted by the unchanged regions


def test_explanation_drift_against_a_held_out_reference(setup: Setup) -> None:
    """A reference the model never trained on: a no-drift window moves neither SHAP nor confidence."""
    cfg = DriftConfig()
    contract = setup.model.contract
    held_out = setup.window("none", 99)
    calm = explanation_drift(held_out, setup.window("none", 5), contract, cfg)
    assert calm.drifted_share < ALERT_SHARE
    assert calm.top_feature_changed is False and calm.importance_shift is not None
    assert calm.importance[0].reference_rank == 1 and len(calm.importance) >= cfg.top_features
    confidence = prediction_drift(held_out, setup.window("none", 5), setup.model.classes, cfg).confidence
    assert confidence is not None and not confidence.drifted
    shifted = explanation_drift(held_out, setup.window("covariate_shift", 5), contract, cfg)
    assert shifted.drifted_share > calm.drifted_share
    assert "shap__list_price_arr" in shifted.drifted_columns
    json.dumps(shifted.to_dict(), allow_nan=False)


def test_config_methods_thresholds_and_degenerate_inputs(setup: Setup) -> None:
    cfg = DriftConfig(
        cat_method="chisquare",
        per_column_method={"list_price_arr": "psi", "not_a_column": "ks"},
        per_column_threshold={"list_price_arr": 0.2},
        drift_share=0.3,
    )
    current = setup.window("none", 5)
    current["usage_growth_pct"] = float("nan")  # e.g. a field every caller stopped sending
    result = feature_drift(setup.reference, current, setup.model.contract, cfg)
    arr = result.column("list_price_arr")
    assert (arr.method, arr.threshold, arr.score_kind) == ("psi", 0.2, "distance")
    channel = result.column("channel")
    assert (channel.method, channel.score_kind) == ("chisquare", "p_value")
    assert result.skipped == {"usage_growth_pct": "no values in current"}
    assert result.drift_share_threshold == 0.3
    payload = result.to_dict()
    assert "snapshot" not in payload and payload["current_rows"] == ROWS
    json.dumps(payload, allow_nan=False)
    with pytest.raises(NotEnoughRows) as too_few:
        feature_drift(setup.reference, current.head(5), setup.model.contract, cfg)
    assert isinstance(too_few.value, InvalidInput) and "need 30 in each" in too_few.value.message
    rates = prediction_drift(setup.reference, current, setup.model.classes, cfg)
    assert rates.abstention.difference == pytest.approx(
        current["abstained"].mean() - setup.reference["abstained"].mean()
    )
    assert rates.policy_intervention.reference == 0.0  # no policy passed to reference_frame
    assert sum(s["current"] for s in rates.outcome_shares.values()) == pytest.approx(1.0)


def test_derived_features_are_drift_checked_from_their_inputs() -> None:
    """invoice's tax_rate_gap_pp (billed - expected tax rate) moves while neither input's
    distribution moves much: swapping the pairing of the inputs leaves both marginals intact."""
    contract = load_contract("invoice_classification")
    (gap,) = [d for d in contract.derived if d.name == "tax_rate_gap_pp"]
    reference = generate("invoice_classification", 2000, seed=1)
    current = generate("invoice_classification", 2000, seed=2)
    billed, expected = gap.args
    current[billed] = current[billed].sample(frac=1.0, random_state=0).to_numpy()  # break the pairing
    result = feature_drift(reference, current, contract, DriftConfig())
    assert gap.name in result.drifted_columns
    assert billed not in result.drifted_columns and expected not in result.drifted_columns
