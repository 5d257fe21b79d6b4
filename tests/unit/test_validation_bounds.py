"""Validation cost and answer size are bounded; numbers beyond float range are field errors."""

from __future__ import annotations

from keel.feature_defs.contract import MAX_ERRORS, load_contract


def test_unknown_fields_are_counted_but_only_the_first_hundred_listed() -> None:
    contract = load_contract("routing")
    flood = {**contract.example_case, **{f"x{i:06d}": 0 for i in range(150_000)}}
    result = contract.validate_records([flood, contract.example_case, flood])
    assert result.matrix is None
    assert result.error_count == 300_000 and len(result.errors) == MAX_ERRORS == 100
    assert {e.problem for e in result.errors} == {"unknown field"}


def test_value_errors_are_capped_after_sorting_by_row() -> None:
    contract = load_contract("routing")
    bad = {**contract.example_case, "days_open": "three", "amount_at_stake": "many"}
    result = contract.validate_records([bad] * 80)
    assert result.error_count == 160 and len(result.errors) == 100
    assert [e.row for e in result.errors] == sorted(e.row for e in result.errors)
    assert result.errors[0].row == 0 and result.errors[-1].row == 49


def test_integers_beyond_float_range_and_null_case_ids_are_field_errors() -> None:
    contract = load_contract("routing")
    huge = {**contract.example_case, "days_open": 10**400, "amount_at_stake": -(10**320)}
    errors = {e.field: e.problem for e in contract.validate_records([huge]).errors}
    assert errors == {
        "days_open": "outside the range of a 64-bit float",
        "amount_at_stake": "outside the range of a 64-bit float",
    }
    nulled = contract.validate_records([{**contract.example_case, "case_id": None}])
    assert [(e.field, e.row) for e in nulled.errors] == [("case_id", 0)]
    assert contract.validate_records([{**contract.example_case, "case_id": "C-1"}]).ok
