"""Column-wise digests (the archive's bulk path) equal the row-wise digests the log was hashed with."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.decision_log.arrow_digests import batch_digests
from keel.decision_log.chain import CHAINS, column_digests, content_digest, hashed_values

KINDS = {"request_index": "int", "abstained": "int", "intervened": "int", "confidence": "float"}

text = st.none() | st.text(max_size=12)
decision = st.fixed_dictionaries(
    {
        c: (
            st.integers(-(2**40), 2**40)
            if KINDS.get(c) == "int"
            else st.none() | st.floats(allow_nan=True, allow_infinity=True)
            if KINDS.get(c) == "float"
            else st.sampled_from(["live", "batch", "shadow"])
            if c == "origin"
            else text
        )
        for c in CHAINS["decisions"]
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(decision, min_size=1, max_size=20))
def test_decision_digests_match_row_by_row(rows: list[dict[str, Any]]) -> None:
    columns = [[r[c] for r in rows] for c in CHAINS["decisions"]]
    kinds = [KINDS.get(c, "str") for c in CHAINS["decisions"]]
    expected = [
        content_digest(hashed_values("decisions", tuple(r[c] for c in CHAINS["decisions"]))) for r in rows
    ]
    assert column_digests("decisions", columns, kinds) == expected


@pytest.mark.parametrize("value", [True, False, 0, -7, 2**63 - 1])
def test_booleans_and_ints_encode_alike(value: Any) -> None:
    row = ("a", "b", "c", "d", "e", "f", "g", value, "2026-01-01", "r")
    kinds = ["str"] * 7 + ["int", "str", "str"]
    assert column_digests("alias_history", [[v] for v in row], kinds) == [content_digest(row)]


def test_nan_and_negative_zero_floats() -> None:
    for value in (math.nan, -0.0, 1e-320, 0.1 + 0.2):
        row = {c: f"x-{c}" for c in CHAINS["decisions"]}
        row |= {"request_index": 0, "abstained": 1, "intervened": 0, "confidence": value, "origin": "batch"}
        values = tuple(row.values())
        kinds = [KINDS.get(c, "str") for c in CHAINS["decisions"]]
        assert column_digests("decisions", [[v] for v in values], kinds) == [
            content_digest(hashed_values("decisions", values))
        ]


ARROW_TYPES = {
    "request_index": pa.int64(),
    "abstained": pa.int64(),
    "intervened": pa.int64(),
    "confidence": pa.float64(),
}


@settings(max_examples=200, deadline=None)
@given(st.lists(decision, min_size=1, max_size=20))
def test_arrow_digests_match_row_by_row(rows: list[dict[str, Any]]) -> None:
    names = CHAINS["decisions"]
    columns = {c: pa.array([r[c] for r in rows], ARROW_TYPES.get(c, pa.string())) for c in names}
    expected = [content_digest(hashed_values("decisions", tuple(r[c] for c in names))) for r in rows]
    assert batch_digests("decisions", columns, len(rows)) == expected
    # An archive written before the chain's last column existed: that column is NULL.
    older = {c: a for c, a in columns.items() if c != "process_instance"}
    without = [content_digest(hashed_values("decisions", (*(r[c] for c in names[:-1]), None))) for r in rows]
    assert batch_digests("decisions", older, len(rows)) == without


@pytest.mark.parametrize("value", [True, False])
def test_arrow_booleans_encode_as_ints(value: bool) -> None:
    row = ("a", "b", "c", None, "é", "f", "", value, "2026-01-01", "r")
    names = CHAINS["alias_history"]
    columns = {
        c: pa.array([v], pa.bool_() if c == "forced" else pa.string())
        for c, v in zip(names, row, strict=True)
    }
    assert batch_digests("alias_history", columns, 1) == [content_digest(row)]
