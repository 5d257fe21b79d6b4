from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.feature_defs.contract import MODEL_NAMES, Contract, FieldSpec, load_contract, load_contract_text


@pytest.fixture(params=MODEL_NAMES)
def contract(request: pytest.FixtureRequest) -> Contract:
    return load_contract(request.param)


def problems(contract: Contract, cases: list[Any]) -> dict[tuple[int, str], str]:
    result = contract.validate_records(cases)
    assert result.matrix is None
    return {(e.row, e.field): e.problem for e in result.errors}


def test_example_case_is_valid_and_encodes_every_feature(contract: Contract) -> None:
    result = contract.validate_records([contract.example_case])
    assert result.ok, result.errors
    assert result.matrix.shape == (1, len(contract.feature_names))
    assert np.isfinite(result.matrix).all()


def test_every_field_is_documented(contract: Contract) -> None:
    for spec in contract.fields:
        assert spec.description, spec.name
        if spec.type in ("float", "int"):
            assert spec.minimum is not None and spec.maximum is not None, spec.name
    assert set(contract.segment_fields) >= {"region", "channel", "entity"}


def _numeric_field(contract: Contract) -> FieldSpec:
    return next(f for f in contract.fields if f.type == "float" and not f.nullable)


def _category_field(contract: Contract) -> FieldSpec:
    return next(f for f in contract.fields if f.type == "category")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "12.5", None, True, [1]])
def test_bad_numbers_are_field_errors(contract: Contract, bad: Any) -> None:
    field = _numeric_field(contract)
    case = {**contract.example_case, field.name: bad}
    found = problems(contract, [contract.example_case, case])
    assert list(found) == [(1, field.name)]


def test_nullable_field_accepts_null_as_missing(contract: Contract) -> None:
    nullable = [f for f in contract.fields if f.nullable]
    assert nullable, "every contract has at least one nullable field"
    case = {**contract.example_case, **{f.name: None for f in nullable}}
    result = contract.validate_records([case])
    assert result.ok
    col = contract.feature_names.index(nullable[0].name)
    assert math.isnan(result.matrix[0, col])


def test_unseen_category_wrong_type_missing_and_extra_fields(contract: Contract) -> None:
    cat = _category_field(contract)
    bool_field = next(f for f in contract.fields if f.type == "bool")
    int_field = next(f for f in contract.fields if f.type == "int")
    missing = dict(contract.example_case)
    missing.pop(cat.name)
    cases = [
        {**contract.example_case, cat.name: "no-such-category"},
        {**contract.example_case, cat.name: 3},
        {**contract.example_case, bool_field.name: 1},
        {**contract.example_case, int_field.name: 2.5},
        missing,
        {**contract.example_case, "surprise": 1},
    ]
    found = contract.validate_records(cases).errors
    by_row = {e.row: e for e in found}
    assert "unknown field" in by_row[5].problem and by_row[5].field == "surprise"
    found = problems(contract, cases)
    assert "unknown category" in found[(0, cat.name)]
    assert "expected one of" in found[(1, cat.name)]
    assert "boolean" in found[(2, bool_field.name)]
    assert "integer" in found[(3, int_field.name)]
    assert found[(4, cat.name)] == "missing field"


def test_an_unknown_field_does_not_hide_the_same_cases_other_errors(contract: Contract) -> None:
    int_field = next(f for f in contract.fields if f.type == "int")
    case = {**contract.example_case, "surprise": 1, int_field.name: 2.5}
    found = problems(contract, [contract.example_case, case])
    assert found[(1, "surprise")] == "unknown field"
    assert "integer" in found[(1, int_field.name)]
    assert not any(row == 0 for row, _ in found)


def test_range_and_empty_batch(contract: Contract) -> None:
    field = _numeric_field(contract)
    found = problems(contract, [{**contract.example_case, field.name: field.maximum * 10}])
    assert "above the maximum" in found[(0, field.name)]
    assert contract.validate_records([]).errors[0].problem == "no cases given"
    assert problems(contract, ["not an object"])[(0, "")] == "a case must be a JSON object"


def test_case_id_must_be_a_short_string(contract: Contract) -> None:
    assert contract.validate_records([{**contract.example_case, "case_id": "A-1"}]).ok
    assert (0, "case_id") in problems(contract, [{**contract.example_case, "case_id": 7}])
    assert (0, "case_id") in problems(contract, [{**contract.example_case, "case_id": "x" * 201}])


def test_frame_and_records_encode_identically(contract: Contract) -> None:
    rows = [
        contract.example_case,
        {**contract.example_case, **{f.name: None for f in contract.fields if f.nullable}},
    ]
    frame = pd.DataFrame(rows)
    a = contract.validate_records(rows).matrix
    b = contract.validate_frame(frame).matrix
    np.testing.assert_array_equal(a, b)


def test_frame_errors_name_rows_and_columns(contract: Contract) -> None:
    field = _numeric_field(contract)
    frame = pd.DataFrame([contract.example_case] * 3)
    frame.loc[1, field.name] = np.inf
    frame.loc[2, field.name] = np.nan
    errors = contract.validate_frame(frame).errors
    assert [(e.row, e.field, e.problem) for e in errors] == [
        (1, field.name, "must be finite"),
        (2, field.name, "must not be null"),
    ]
    assert contract.validate_frame(frame.iloc[:0]).errors[0].problem == "no rows given"
    assert contract.validate_frame(frame.drop(columns=[field.name])).errors[0].problem == "missing column"
    assert contract.validate_frame(frame.assign(extra=1)).errors[0].problem == "unknown column"


def test_categorical_codes_are_the_yaml_order(contract: Contract) -> None:
    cat = next(f for f in contract.feature_fields if f.type == "category")
    col = contract.feature_names.index(cat.name)
    for code, value in enumerate(cat.categories):
        m = contract.validate_records([{**contract.example_case, cat.name: value}]).matrix
        assert m[0, col] == code
        assert contract.decode_value(cat.name, float(code)) == value


def test_version_is_a_content_hash(contract: Contract) -> None:
    again = load_contract_text(contract.source)
    assert again.version == contract.version and len(contract.version) == 64
    edited = load_contract_text(contract.source.replace("description:", "description: changed", 1))
    assert edited.version != contract.version
    reformatted = load_contract_text("# a comment\n" + contract.source)
    assert reformatted.version == contract.version


def test_derived_difference_is_computed() -> None:
    c = load_contract("invoice_classification")
    case = {**c.example_case, "billed_tax_rate": 21.0, "expected_tax_rate": 19.0}
    m = c.validate_records([case]).matrix
    assert m[0, c.feature_names.index("tax_rate_gap_pp")] == pytest.approx(2.0)


def test_non_features_are_not_in_the_matrix() -> None:
    c = load_contract("invoice_classification")
    assert "region" not in c.feature_names and "entity" not in c.feature_names
    assert "channel" in c.feature_names


def test_unknown_model_and_broken_contract() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_contract("nope")
    with pytest.raises(ValueError, match="not a Keel contract"):
        load_contract_text("just: text")


def _with_region(declaration: str, segment: bool = True) -> str:
    """The invoice contract with `region` declared as given (a YAML mapping's lines)."""
    text = load_contract("invoice_classification").source
    head = "    segment: true\n    feature: false\n    description: Region of the receiving legal entity."
    assert head in text
    region = ("    segment: true\n" if segment else "") + "    feature: false\n" + declaration
    return text.replace(head, region + "    description: Region of the receiving legal entity.")


def test_a_segment_field_can_be_declared_invariant_with_a_tolerance() -> None:
    contract = load_contract_text(_with_region("    invariant: {tolerance: 0.02}\n"))
    assert contract.invariant_fields == {"region": 0.02}
    assert contract.spec("region").public()["invariant"] == {"tolerance": 0.02}
    assert contract.version != load_contract("invoice_classification").version
    shorthand = load_contract_text(_with_region("    invariant: true\n"))
    assert shorthand.invariant_fields == {"region": 0.01}  # the default tolerance
    assert load_contract("invoice_classification").invariant_fields == {}


@pytest.mark.parametrize(
    ("declaration", "segment", "says"),
    [
        ("    invariant: {tolerance: 1.5}\n", True, "tolerance"),
        ("    invariant: {tolerance: -0.1}\n", True, "tolerance"),
        ("    invariant: {tolerence: 0.01}\n", True, "tolerence"),
        ("    invariant: yes please\n", True, "invalid `invariant`"),
        ("    invariant: {tolerance: 0.01}\n", False, "not a segment field"),
    ],
)
def test_a_bad_invariance_declaration_is_refused_with_the_field_named(
    declaration: str, segment: bool, says: str
) -> None:
    with pytest.raises(ValueError, match="field region") as caught:
        load_contract_text(_with_region(declaration, segment))
    assert says in str(caught.value)


def test_without_features_keeps_a_field_in_the_contract_but_not_in_the_matrix() -> None:
    from keel.feature_defs.contract import without_features

    contract = load_contract_text(_with_region("    invariant: {tolerance: 0.02}\n"))
    dropped = without_features(contract, ["channel"])
    assert "channel" not in dropped.feature_names and "channel" in dropped.field_names
    assert dropped.version != contract.version and dropped.invariant_fields == {"region": 0.02}
    result = dropped.validate_records([contract.example_case])
    assert result.ok and result.matrix is not None
    assert result.matrix.shape == (1, len(contract.feature_names) - 1)
