"""The sealed decision spec: policies compiled against the contract they are sealed with, and the
code and requirements a registered model carries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keel.errors import InvalidInput
from keel.feature_defs.contract import load_contract, load_contract_text
from keel.feature_defs.policy import packaged_policy_text
from keel.models.model_code import keel_code_tree, public_requirements
from keel.models.spec import seal_policy

RENAMED = re.compile(r"\bamount\b")


def renamed_contract_text() -> str:
    """The invoice contract with `amount` renamed to `invoice_amount` (the issue's case)."""
    return RENAMED.sub("invoice_amount", load_contract("invoice_classification").source)


def test_packaged_policy_is_refused_for_a_contract_that_renamed_its_field() -> None:
    contract = load_contract_text(renamed_contract_text())
    text = packaged_policy_text("invoice_classification")
    assert text is not None
    with pytest.raises(InvalidInput, match=r"field 'amount' is not in the invoice_classification contract"):
        seal_policy(text, contract)


def test_a_policy_sealed_with_the_renamed_contract_fires_on_the_renamed_field() -> None:
    contract = load_contract_text(renamed_contract_text())
    text = packaged_policy_text("invoice_classification")
    assert text is not None
    policy = seal_policy(RENAMED.sub("invoice_amount", text), contract)
    case = {**contract.example_case, "invoice_amount": 80_000.0}
    assert contract.validate_records([case]).ok
    fired = policy.apply(case, "clean", 0.99, abstained=False)
    small = policy.apply({**case, "invoice_amount": 100.0}, "clean", 0.99, abstained=False)
    assert fired.route == "human_review" and set(fired.rules_fired) - set(small.rules_fired)


def test_requirements_are_public_dependencies_only() -> None:
    reqs = public_requirements()
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}
    assert {"mlflow", "lightgbm", "pandas", "pydantic-settings"} <= names
    assert not names & {"keel", "keel-decisions", "pytest", "ruff", "mypy"}


def test_code_tree_is_the_installed_keel_package(tmp_path: Path) -> None:
    root = keel_code_tree(tmp_path)
    assert root == tmp_path / "keel" and [p.name for p in tmp_path.iterdir()] == ["keel"]
    for part in (
        "__init__.py",
        "cli/__init__.py",
        "serving/pyfunc_model.py",
        "models/decision_model.py",
        "feature_defs/routing.yaml",
        "feature_defs/policies/routing.yaml",
        "training/generators/__init__.py",
        "models/frames.py",
    ):
        assert (root / part).is_file(), part
    assert not list(root.rglob("__pycache__")) and not list(root.rglob("*.pyc"))
