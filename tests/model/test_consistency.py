"""Counterfactual consistency on real trained models.

- a model trained to depend on `region` fails the promotion gate when its contract declares
  `region` invariant, and passes it when the contract does not;
- the re-decisions are the serving path's decisions of the altered cases, and an altered
  region brings one of its own entities;
- on the session's shipped models, the report states every segment field's flip rates (or that
  nothing reads it), and `keel consistency` says it audited the test split when the log is empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keel.feature_defs.contract import MODEL_NAMES, Contract, load_contract, load_contract_text
from keel.models import registry
from keel.models.consistency_report import DECISION, held_out_audit
from keel.models.counterfactual import KINDS, Nesting, audit_frame
from keel.models.decision_model import DecisionModel
from keel.serving.decision_record import decide_valid
from keel.serving.model_set import Served
from keel.training.generators import generate
from keel.training.generators.common import ENTITIES
from keel.training.promotion import Criterion, evaluate, facts
from keel.training.settings import PromotionSettings, TrainingSettings
from tests.conftest import Store, cli_env, run_keel

GATE = "invariant segment fields"


@pytest.fixture(scope="module", autouse=True)
def _regional_models_leave_with_the_module(store: Store) -> Iterator[None]:
    """The models these tests register go when the module ends: the session store is shared
    with the service tests on this pytest-xdist worker, whose reloads load every champion."""
    yield
    from mlflow import MlflowClient

    client = MlflowClient()
    for found in client.search_registered_models("name LIKE 'regional_%'"):
        client.delete_registered_model(found.name)


REGION = "    segment: true\n    feature: false\n    description: Region of the receiving legal entity."


def _regional_contract(name: str, invariant: bool) -> Contract:
    """The invoice contract under another name, with `region` read by the model as a feature."""
    text = load_contract("invoice_classification").source.replace(
        "name: invoice_classification", f"name: {name}", 1
    )
    declared = "    invariant: {tolerance: 0.02}\n" if invariant else ""
    assert REGION in text
    return load_contract_text(
        text.replace(
            REGION, "    segment: true\n" + declared + "    description: Region of the receiving entity."
        )
    )


def _regional_data(rows: int, seed: int) -> pd.DataFrame:
    """Invoices whose path depends on the region: LATAM invoices mostly take the tax_issue path."""
    frame = generate("invoice_classification", rows, seed)
    latam = (frame["region"] == "LATAM").to_numpy() & (np.random.default_rng(seed).random(rows) < 0.8)
    frame.loc[latam, "exception_path"] = "tax_issue"
    return frame


@pytest.fixture(scope="module")
def regional(store: Store) -> dict[bool, tuple[str, str]]:
    """invariant declared -> (model name, version), each trained on the same region-dependent data."""
    from keel.settings import StateSettings
    from keel.training.registration import train_and_register

    settings = TrainingSettings(rows=5000, num_boost_round=60, seed=5, alpha=0.1, min_decided=100)
    frame = _regional_data(settings.rows, settings.seed)
    out = {}
    for invariant in (True, False):
        name = f"regional_{'invariant' if invariant else 'free'}"
        contract = _regional_contract(name, invariant)
        version = train_and_register(name, frame, StateSettings(), settings, contract=contract).version
        out[invariant] = (name, version)
    return out


def _gate(store: Store, name: str, version: str) -> Criterion:
    candidate = facts(name, version, store.home / "cache")
    criteria = evaluate(candidate, None, None, PromotionSettings(consistency_sample=600))
    (gate,) = [c for c in criteria if c.criterion == GATE]
    return gate


def test_a_model_that_reads_region_fails_the_gate_only_when_region_is_declared_invariant(
    store: Store, regional: dict[bool, tuple[str, str]]
) -> None:
    failed = _gate(store, *regional[True])
    assert not failed.passed, failed.detail
    assert failed.detail.startswith("region: ") and "vs tolerance 2.00%" in failed.detail
    assert "entity invariant by construction" not in failed.detail  # entity is not declared
    assert failed.line().startswith("  FAIL  invariant segment fields")

    passed = _gate(store, *regional[False])
    assert passed.passed and passed.detail == "the contract declares no segment field invariant"


def test_re_decisions_are_the_serving_paths_decisions_of_the_altered_cases(
    store: Store, regional: dict[bool, tuple[str, str]]
) -> None:
    name, version = regional[False]
    loaded = registry.load(registry.get_version(name, version), store.home / "cache")
    model = loaded.model
    cases = generate("invoice_classification", 150, seed=77).drop(columns=["exception_path", "event_time"])
    nesting = Nesting.read(generate("invoice_classification", 3000, seed=78), model.contract.segment_fields)
    ids = cases["case_id"].tolist()
    flips, found = audit_frame(model, version, cases, ids, nesting, seed=1)
    assert {c.field: c.measured for c in found} == {"channel": True, "region": True, "entity": True}
    assert "the model reads region as a feature (region moves with entity)" in found[2].reasons

    # Redo each altered case by hand through the online path's own code.
    served = Served(loaded)
    records = cases.to_dict(orient="records")
    original = _serve(served, model, records)
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    rng = np.random.default_rng(0)
    rows = flips.table[flips.table["field"] == "region"]
    picked = rows.iloc[rng.choice(len(rows), 60, replace=False)]
    for row in picked.to_dict(orient="records"):
        case = records[by_id[row["case"]]]
        assert case["region"] == row["from"]
        for entity in sorted(e for e, (r, _, _) in ENTITIES.items() if r == row["to"]):
            altered = {**case, "region": row["to"], "entity": entity}
            again = _serve(served, model, [altered])[0]
            base = original[by_id[row["case"]]]
            changed = {
                "outcome": again["outcome"] != base["outcome"],
                "route": again["route"] != base["route"],
                "abstention": again["abstained"] != base["abstained"],
            }
            # region is the feature; entity is not read, so any of the region's entities decides alike
            assert changed == {k: bool(row[k]) for k in KINDS}


def _serve(served: Served, model: DecisionModel, cases: list[dict[str, object]]) -> list[dict[str, object]]:
    checked = model.contract.validate_records(cases)
    assert checked.matrix is not None, checked.errors
    return [dict(r) for r in decide_valid(served, cases, checked.matrix, top_k=3)]


def test_an_altered_region_brings_one_of_its_own_entities(
    store: Store, regional: dict[bool, tuple[str, str]]
) -> None:
    from keel.models.counterfactual import _variants

    name, version = regional[False]
    model = registry.load(registry.get_version(name, version), store.home / "cache").model
    cases = generate("invoice_classification", 80, seed=79).drop(columns=["exception_path", "event_time"])
    nesting = Nesting.read(generate("invoice_classification", 3000, seed=80), model.contract.segment_fields)
    matrix = model.contract.validate_frame(cases[model.contract.field_names]).matrix
    assert matrix is not None
    records = cases[model.contract.field_names].to_dict(orient="records")
    for moved in ("region", "entity"):
        skipped: list[str] = []
        v = _variants(
            model, moved, records, matrix, nesting.parents, nesting.weights, np.random.default_rng(2), skipped
        )
        assert skipped == [] and len(v.cases) == sum(
            len(model.contract.spec(moved).categories) - 1 for _ in records
        )
        assert all(ENTITIES[c["entity"]][0] == c["region"] for c in v.cases)
        assert all(c[moved] == t for c, t in zip(v.cases, v.target, strict=True))
        # the encoded row is what validating the altered case gives
        again = model.contract.validate_records(v.cases[:200]).matrix
        assert again is not None and np.array_equal(again, v.matrix[:200], equal_nan=True)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_shipped_models_report_states_each_segment_fields_flip_rates(
    store: Store, registered: dict[str, str], name: str
) -> None:
    loaded = registry.load(registry.get_version(name, registered[name]), store.home / "cache")
    report = held_out_audit(loaded.model, registered[name], 400, seed=3)
    assert [f.field for f in report.fields] == loaded.model.contract.segment_fields
    for f in report.fields:
        features = f.field in loaded.model.contract.feature_names
        assert f.status == ("measured" if features else "invariant_by_construction"), f
        if features:
            assert f.cases == 400 and set(f.flips) == {*KINDS, DECISION}
            d = f.flips[DECISION]
            assert d.low <= d.rate <= d.high and d.n == 400
            assert {(p.start, p.target) for p in f.pairs} <= {
                (a, b)
                for a in loaded.model.contract.spec(f.field).categories
                for b in loaded.model.contract.spec(f.field).categories
                if a != b
            }
        assert f.sentence().startswith(f.field)


def test_keel_consistency_audits_the_test_split_when_the_log_is_empty(
    store: Store, registered: dict[str, str]
) -> None:
    empty = "2000-01-01..2000-01-02"  # no test logs decisions in 2000
    done = run_keel(
        cli_env(store), "consistency", "discount_band", "--sample", "300", "--json", "--window", empty
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "test_split" and "no decision of discount_band logged" in report["note"]
    fields = {f["field"]: f for f in report["fields"]}
    assert set(fields) == set(load_contract("discount_band").segment_fields)
    assert fields["channel"]["status"] == "measured" and fields["channel"]["flips"]["decision"]["n"] == 300
    assert fields["region"]["status"] == "invariant_by_construction"
    table = run_keel(cli_env(store), "consistency", "discount_band", "--sample", "200", "--window", empty)
    assert (
        table.returncode == 0
        and "Segment fields" in table.stdout
        and "invariant by construction" in table.stdout
    )


def test_keel_consistency_re_decides_logged_decisions_with_the_version_that_made_them(
    store: Store, registered: dict[str, str], tmp_path: Path
) -> None:
    """Batch decisions logged by `keel score --log` are audited from the log: each unaltered
    re-decision reproduces its logged decision, and the examples are decision ids."""
    cases = generate("invoice_classification", 300, seed=91).drop(columns=["exception_path", "event_time"])
    source = tmp_path / "cases.parquet"
    cases.to_parquet(source, index=False)
    env = cli_env(store)
    scored = run_keel(
        env,
        "score",
        "invoice_classification",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "out.parquet"),
        "--log",
    )
    assert scored.returncode == 0, scored.stderr
    done = run_keel(
        env,
        "consistency",
        "invoice_classification",
        "--window",
        "1h",
        "--include-batch",
        "--json",
        "--sample",
        "5000",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "decision_log" and report["cases"] >= 300
    assert report["reproduced"] == report["cases"]
    assert registered["invoice_classification"] in report["versions"]
    channel = next(f for f in report["fields"] if f["field"] == "channel")
    assert channel["status"] == "measured" and channel["cases"] == report["cases"]
    logged = {str(i) for i in pd.read_parquet(tmp_path / "out.parquet")["decision_id"]}
    examples = [e for p in channel["pairs"] for e in p["examples"]]
    assert all(len(e) == 36 for e in examples)  # decision ids (UUIDs), some of them this run's
    assert not examples or logged & set(examples) or report["cases"] > 300


def test_training_can_leave_invariant_fields_out_of_the_features_and_then_passes(store: Store) -> None:
    from keel.settings import StateSettings
    from keel.training.registration import train_and_register

    name = "regional_dropped"
    settings = TrainingSettings(
        rows=5000, num_boost_round=60, seed=5, alpha=0.1, min_decided=100, drop_invariant_features=True
    )
    contract = _regional_contract(name, invariant=True)
    assert "region" in contract.feature_names
    reg = train_and_register(
        name, _regional_data(settings.rows, settings.seed), StateSettings(), settings, contract=contract
    )
    assert reg.result.extra["invariant_left_out"] == ["region"]
    sealed = registry.load(registry.get_version(name, reg.version), store.home / "cache").model.contract
    assert "region" not in sealed.feature_names and sealed.invariant_fields == {"region": 0.02}
    gate = _gate(store, name, reg.version)
    assert gate.passed and gate.detail == "region invariant by construction", gate.detail


def test_the_rules_alone_counterfactual_finds_a_rule_that_reads_region(store: Store) -> None:
    """A version whose sealed policy reviews LATAM invoices over 5,000 USD: holding the model's
    outputs, moving a case into or out of LATAM changes its route exactly when the amount is
    over 5,000 (and no rule reads channel)."""
    from keel.models.counterfactual import rule_flips
    from keel.monitoring.policy_adherence import rules_alone
    from keel.settings import StateSettings
    from keel.training.registration import train_and_register

    name = "regional_policy"
    policy = f"""
model: {name}
rules:
  - id: latam_review
    when:
      all:
        - {{field: region, op: eq, value: LATAM}}
        - {{field: amount, op: gt, value: 5000}}
    route: human_review
    reason_code: POLICY_LATAM_REVIEW
"""
    settings = TrainingSettings(rows=4000, num_boost_round=40, seed=6, alpha=0.1, min_decided=100)
    contract = _regional_contract(name, invariant=False)
    frame = generate("invoice_classification", settings.rows, settings.seed)
    reg = train_and_register(name, frame, StateSettings(), settings, contract=contract, policy_text=policy)
    model = registry.load(registry.get_version(name, reg.version), store.home / "cache").model
    cases = generate("invoice_classification", 200, seed=93).drop(columns=["exception_path", "event_time"])
    matrix = model.contract.validate_frame(cases[model.contract.field_names]).matrix
    assert matrix is not None
    records = cases[model.contract.field_names].to_dict(orient="records")
    nesting = Nesting.read(generate("invoice_classification", 3000, seed=94), model.contract.segment_fields)
    table, readers = rule_flips(model, records, matrix, cases["case_id"].tolist(), nesting)
    assert readers == {"region": ["latam_review"], "entity": ["latam_review"]}
    region = table[table["field"] == "region"]
    big = dict(zip(cases["case_id"], cases["amount"] > 5000, strict=True))
    into_or_out = (region["from"] == "LATAM") | (region["to"] == "LATAM")
    expected = into_or_out & region["case"].map(big)
    # a case the model abstains on is routed to review whatever the rules say
    assert (region["route"] <= expected).all() and region["route"].sum() > 0
    assert (region["rules"] == expected).all()
    out = {a["field"]: a for a in rules_alone(table, readers, model.contract.segment_fields, 0.95)}
    assert out["channel"]["status"] == "invariant_by_construction" and out["region"]["status"] == "measured"
