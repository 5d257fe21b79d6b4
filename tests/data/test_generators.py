"""Tests for the seeded synthetic-data generators (training.generators)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml

from keel.training.generators import MODELS, SCENARIOS, generate, true_outcome

FEATURE_DEFS = Path(__file__).resolve().parents[2] / "feature_defs"
SIZE_COLUMN = {
    "invoice_classification": "amount",
    "discount_band": "list_price_arr",
    "routing": "amount_at_stake",
}


@cache
def contract(model: str) -> dict[str, Any]:
    with open(FEATURE_DEFS / f"{model}.yaml", encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


def target(model: str) -> str:
    return str(contract(model)["target"]["name"])


def non_features(model: str) -> list[str]:
    return [f["name"] for f in contract(model)["fields"] if f.get("feature", True) is False]


@cache
def frame(model: str, n: int, seed: int, scenario: str = "none") -> pd.DataFrame:
    return generate(model, n, seed, scenario)


def test_api_surface_and_errors() -> None:
    assert SCENARIOS == (
        "none",
        "covariate_shift",
        "concept_shift",
        "segment_overrides",
        "region_process_change",
    )
    assert set(MODELS) == {p.stem for p in FEATURE_DEFS.glob("*.yaml")}
    with pytest.raises(ValueError):
        generate("no_such_model", 10, 0)
    with pytest.raises(ValueError):
        generate("routing", 10, 0, scenario="no_such_scenario")
    with pytest.raises(ValueError):
        true_outcome("routing", frame("routing", 10, 0), 0, scenario="nope")


@pytest.mark.parametrize("model", MODELS)
def test_deterministic_per_seed(model: str) -> None:
    a, b = generate(model, 2000, 7), generate(model, 2000, 7)
    pd.testing.assert_frame_equal(a, b)
    c = generate(model, 2000, 8)
    assert not a.drop(columns="case_id").equals(c.drop(columns="case_id"))


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("model", MODELS)
def test_frame_satisfies_contract(model: str, scenario: str) -> None:
    spec = contract(model)
    df = frame(model, 5000, 3, scenario)
    names = [f["name"] for f in spec["fields"]]
    assert list(df.columns) == ["case_id", "event_time", *names, target(model)]
    for field in spec["fields"]:
        col, kind = df[field["name"]], field["type"]
        values = col.dropna()
        if not field.get("nullable", False):
            assert col.notna().all(), field["name"]
        if kind == "bool":
            assert col.dtype == np.bool_, field["name"]
        elif kind == "int":
            assert col.dtype == np.int64, field["name"]
        elif kind == "float":
            assert col.dtype == np.float64, field["name"]
        else:
            assert col.dtype == object, field["name"]
            assert all(type(v) is str for v in values), field["name"]
            assert set(values) <= set(field["categories"]), field["name"]
        if "minimum" in field:
            assert values.min() >= field["minimum"], field["name"]
        if "maximum" in field:
            assert values.max() <= field["maximum"], field["name"]
    labels = df[target(model)]
    assert labels.dtype == object and all(type(v) is str for v in labels)
    assert set(labels) <= set(spec["target"]["classes"])


@pytest.mark.parametrize("model", MODELS)
def test_case_ids_and_event_times(model: str) -> None:
    df = frame(model, 5000, 3)
    assert df["case_id"].is_unique and all(type(v) is str for v in df["case_id"])
    times = df["event_time"]
    assert str(times.dt.tz) == "UTC" and times.is_monotonic_increasing and times.is_unique
    assert times.iloc[0] >= pd.Timestamp("2026-01-01", tz="UTC")
    assert 85 <= (times.iloc[-1] - times.iloc[0]).days <= 90
    moved = generate(model, 10, 3, start=datetime(2026, 6, 1, tzinfo=UTC))
    assert moved["event_time"].min() >= pd.Timestamp("2026-06-01", tz="UTC")


@pytest.mark.parametrize("model", MODELS)
def test_class_balance(model: str) -> None:
    shares = frame(model, 20000, 0)[target(model)].value_counts(normalize=True)
    assert set(shares.index) == set(contract(model)["target"]["classes"])
    assert shares.min() >= 0.01
    assert 0.25 <= shares.max() <= 0.7
    if model == "invoice_classification":
        assert shares.idxmax() == "clean" and 0.55 <= shares["clean"] <= 0.67


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("model", MODELS)
def test_true_outcome_reproduces_generated_labels(model: str, scenario: str) -> None:
    df = frame(model, 5000, 3, scenario)
    np.testing.assert_array_equal(true_outcome(model, df, 3, scenario), df[target(model)])


@pytest.mark.parametrize("model", MODELS)
def test_segment_overrides_is_none(model: str) -> None:
    pd.testing.assert_frame_equal(frame(model, 5000, 3, "segment_overrides"), frame(model, 5000, 3))


@pytest.mark.parametrize("model", MODELS)
def test_covariate_shift_moves_inputs(model: str) -> None:
    base, shifted = frame(model, 20000, 0), frame(model, 20000, 0, "covariate_shift")
    size = SIZE_COLUMN[model]
    assert shifted[size].median() >= 1.3 * base[size].median()
    mix = pd.concat(
        [base["channel"].value_counts(normalize=True), shifted["channel"].value_counts(normalize=True)],
        axis=1,
    ).fillna(0.0)
    assert 0.5 * (mix.iloc[:, 0] - mix.iloc[:, 1]).abs().sum() >= 0.15


@pytest.mark.parametrize("model", MODELS)
def test_concept_shift_moves_labels_not_inputs(model: str) -> None:
    base, moved = frame(model, 20000, 0), frame(model, 20000, 0, "concept_shift")
    pd.testing.assert_frame_equal(base.drop(columns=target(model)), moved.drop(columns=target(model)))
    before = pd.Series(true_outcome(model, base, 0, "none"))
    after = pd.Series(true_outcome(model, base, 0, "concept_shift"))
    assert (before != after).mean() >= 0.03
    if model == "invoice_classification":
        assert (after == "price_variance").mean() > (before == "price_variance").mean() + 0.02
    elif model == "discount_band":
        comp = base["competitor_present"].to_numpy()
        classes = contract(model)["target"]["classes"]
        rank = {c: i for i, c in enumerate(classes)}
        assert after[comp].map(rank).mean() > before[comp].map(rank).mean() + 0.5
        assert (after[~comp] == before[~comp]).all()
    else:
        disputes = (base["exception_type"] == "billing_dispute").to_numpy()
        assert (after[disputes] == "finance_credit").mean() > 0.8
        assert (after[~disputes] == before[~disputes]).all()


@pytest.mark.parametrize("model", MODELS)
def test_region_process_change_moves_emea_only(model: str) -> None:
    base, moved = frame(model, 20000, 0), frame(model, 20000, 0, "region_process_change")
    emea = (base["region"] == "EMEA").to_numpy()
    pd.testing.assert_series_equal(base["region"], moved["region"])
    pd.testing.assert_frame_equal(base[~emea], moved[~emea])
    label = target(model)
    assert (base.loc[emea, label] != moved.loc[emea, label]).mean() >= 0.05
    inputs = [c for c in base.columns if c not in ("case_id", "event_time", label)]
    assert not base.loc[emea, inputs].equals(moved.loc[emea, inputs])
    # the EMEA rule itself moved too, not only its inputs
    rule_moved = true_outcome(model, base, 0, "region_process_change") != base[label].to_numpy()
    assert rule_moved[emea].mean() >= 0.02 and not rule_moved[~emea].any()


@pytest.mark.parametrize("scenario", ["none", "covariate_shift", "concept_shift"])
@pytest.mark.parametrize("model", MODELS)
def test_label_ignores_non_feature_fields(model: str, scenario: str) -> None:
    df = frame(model, 5000, 3, scenario)
    rng = np.random.default_rng(11)
    shuffled = df.copy()
    for col in non_features(model):
        shuffled[col] = rng.permutation(df[col].to_numpy())
    np.testing.assert_array_equal(
        true_outcome(model, shuffled, 3, scenario), true_outcome(model, df, 3, scenario)
    )


def encode(df: pd.DataFrame, model: str) -> tuple[pd.DataFrame, list[str]]:
    """Model features only: categories as contract-order codes, bools as ints, derived added."""
    spec, columns, categorical = contract(model), {}, []
    for field in spec["fields"]:
        if field.get("feature", True) is False:
            continue
        name, col = field["name"], df[field["name"]]
        if field["type"] == "category":
            columns[name] = pd.Categorical(col, categories=field["categories"]).codes
            categorical.append(name)
        else:
            columns[name] = col.astype(float).to_numpy()
    for derived in spec.get("derived", []):
        a, b = derived["args"]
        columns[derived["name"]] = df[a].astype(float).to_numpy() - df[b].astype(float).to_numpy()
    return pd.DataFrame(columns), categorical


@pytest.mark.parametrize("model", MODELS)
def test_lightgbm_learns_with_confident_majority(model: str) -> None:
    classes = contract(model)["target"]["classes"]
    train, test = frame(model, 20000, 0), generate(model, 10000, 1)
    x_train, categorical = encode(train, model)
    x_test, _ = encode(test, model)
    y_train = pd.Categorical(train[target(model)], categories=classes).codes
    y_test = pd.Categorical(test[target(model)], categories=classes).codes
    params = {
        "objective": "multiclass",
        "num_class": len(classes),
        "verbosity": -1,
        "num_threads": 1,
        "seed": 0,
    }
    data = lgb.Dataset(x_train, y_train, categorical_feature=categorical)
    booster = lgb.train(params, data, num_boost_round=100)
    proba = np.asarray(booster.predict(x_test))
    pred, confident = proba.argmax(axis=1), proba.max(axis=1) >= 0.95
    accuracy = (pred == y_test).mean()
    coverage = confident.mean()
    selective_error = (pred[confident] != y_test[confident]).mean()
    print(f"{model}: accuracy={accuracy:.4f} coverage@0.95={coverage:.3f} error@0.95={selective_error:.4f}")
    assert accuracy >= 0.90
    assert coverage >= 0.50
    assert selective_error <= 0.02


@pytest.mark.parametrize("model", MODELS)
def test_generation_is_fast(model: str) -> None:
    started = time.perf_counter()
    generate(model, 100_000, 5)
    assert time.perf_counter() - started < 5.0
