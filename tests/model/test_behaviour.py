"""Behavioural tests on the session's registered champions (Made-With-ML style).

Invariance: fields that are logged but are not model features never change a decision.
Directional: cases that follow the generators' documented story move the right way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keel.feature_defs.contract import MODEL_NAMES
from keel.models import registry
from keel.models.decision_model import DecisionModel
from keel.training.generators import generate
from tests.conftest import Store


@pytest.fixture(scope="module")
def champions(store: Store, registered: dict[str, str]) -> dict[str, DecisionModel]:
    return {n: registry.load_alias(n, registry.CHAMPION, store.home / "cache").model for n in MODEL_NAMES}


def decide(model: DecisionModel, frame: pd.DataFrame) -> np.ndarray:
    batch = model.predict_frame(frame, explain=False)
    return np.array([batch.outcome(i) for i in range(len(batch))], dtype=object)


def proba(model: DecisionModel, frame: pd.DataFrame, label: str) -> np.ndarray:
    return model.predict_frame(frame).probabilities[:, model.classes.index(label)]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_non_feature_fields_never_change_the_decision(champions: dict[str, DecisionModel], name: str) -> None:
    model = champions[name]
    frame = generate(name, 300, seed=41)
    base = model.predict_frame(frame)
    for spec in model.contract.fields:
        if spec.feature:
            continue
        rolled = frame.assign(**{spec.name: np.roll(frame[spec.name].to_numpy(), 1)})
        other = frame.assign(**{spec.name: spec.categories[-1]})
        for changed in (rolled, other):
            np.testing.assert_array_equal(model.predict_frame(changed).probabilities, base.probabilities)


def test_a_missing_po_never_makes_an_invoice_clean(champions: dict[str, DecisionModel]) -> None:
    model = champions["invoice_classification"]
    frame = generate("invoice_classification", 400, seed=42)
    frame = frame[frame["amount"] >= 1000].assign(
        po_present=False, po_amount_delta_pct=np.nan, gr_quantity_delta_pct=np.nan
    )
    assert len(frame) > 100
    assert "clean" not in set(decide(model, frame))


def test_a_tax_gap_raises_the_tax_issue_probability(champions: dict[str, DecisionModel]) -> None:
    model = champions["invoice_classification"]
    frame = generate("invoice_classification", 400, seed=43)
    clean = frame[frame["exception_path"] == "clean"]
    gap = clean.assign(billed_tax_rate=(clean["expected_tax_rate"] + 4.0).clip(upper=40))
    assert (proba(model, gap, "tax_issue") > proba(model, clean, "tax_issue")).mean() > 0.9


def test_a_competitor_never_lowers_the_expected_discount(champions: dict[str, DecisionModel]) -> None:
    model = champions["discount_band"]
    frame = generate("discount_band", 400, seed=44)
    bands = np.arange(len(model.classes))

    def expected_band(f: pd.DataFrame) -> np.ndarray:
        return model.predict_frame(f).probabilities @ bands

    with_comp = expected_band(frame.assign(competitor_present=True))
    without = expected_band(frame.assign(competitor_present=False))
    assert (with_comp >= without - 0.05).mean() > 0.95
    assert with_comp.mean() > without.mean() + 0.2


@pytest.mark.parametrize(
    ("exception_type", "queue"),
    [
        ("vendor_onboarding", "procurement"),
        ("contract_clause", "legal"),
        ("provisioning_failure", "support_tier2"),
        ("credit_hold", "finance_credit"),
    ],
)
def test_routing_follows_the_exception_type(
    champions: dict[str, DecisionModel], exception_type: str, queue: str
) -> None:
    model = champions["routing"]
    frame = generate("routing", 200, seed=45).assign(exception_type=exception_type)
    outcomes = decide(model, frame)
    decided = outcomes[outcomes != None]  # noqa: E711  (None marks an abstention)
    assert len(decided) > 100 and (decided == queue).mean() > 0.97
