"""The bulk loader's COPY lines carry each value as PostgreSQL's text format reads it back, and
their digests are the chain's own (chain.content_digest of the hashed values)."""

from __future__ import annotations

import math

import numpy as np

from keel.decision_log.bulk import prepare_batch
from keel.decision_log.chain import CHAINS, content_digest, hashed_values


def _row(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {col: None for col in CHAINS["feedback"]}
    row.update(
        feedback_id=f"f{i}", decision_id="d\t1\n\\N", model="routing", created_at="2026-12-01T00:00:00+00:00",
        caller="svc", actor="ré\r", final_outcome="legal", kind="override", record={"note": "a\\b", "x": 1.5},
    )  # fmt: skip
    row.update(changes)
    return row


def _unescape(field: bytes) -> str | None:
    """COPY's text format, read back."""
    if field == b"\\N":
        return None
    out, text, i = [], field.decode(), 0
    while i < len(text):
        if text[i] == "\\":
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_lines_read_back_as_the_values_and_digests_are_the_chains() -> None:
    rows = [_row(1), _row(2, process_instance="p-1"), _row(3, record={"v": math.nan})]
    lines, values, digests = prepare_batch("feedback", True, rows)
    assert lines is not None and values is None
    _, plain, _ = prepare_batch("feedback", False, rows)
    assert plain is not None
    for line, row_values, digest in zip(lines, plain, digests, strict=True):
        assert [_unescape(f) for f in line.split(b"\t")] == [
            None if v is None else str(v) for v in row_values
        ]
        assert digest == content_digest(hashed_values("feedback", row_values))


def test_floats_and_ints_keep_their_exact_text() -> None:
    columns = CHAINS["decisions"]
    base = {c: "x" for c in columns} | {"record": {}, "origin": None, "process_instance": None}
    cases = [(0.1, b"0.1"), (1 / 3, repr(1 / 3).encode()), (-0.0, b"-0.0")]
    cases += [(math.inf, b"Infinity"), (-math.inf, b"-Infinity"), (math.nan, b"NaN")]
    for confidence, text in cases:
        row = base | {"confidence": confidence, "request_index": 7, "abstained": True, "intervened": 0}
        lines, _, (digest,) = prepare_batch("decisions", True, [row])
        assert lines is not None
        fields = lines[0].split(b"\t")
        assert fields[columns.index("confidence")] == text
        assert fields[columns.index("abstained")] == b"1" and fields[columns.index("request_index")] == b"7"
        _, (values,), _ = prepare_batch("decisions", False, [row])
        assert digest == content_digest(hashed_values("decisions", values))


def test_a_value_of_another_type_leaves_the_batch_to_the_driver() -> None:
    columns = CHAINS["decisions"]
    row = {c: "x" for c in columns} | {"record": {}, "origin": None, "confidence": np.float32(0.5)}
    row |= {"request_index": 0, "abstained": 0, "intervened": 0, "process_instance": None}
    lines, values, (digest,) = prepare_batch("decisions", True, [row])
    assert lines is None and values is not None
    assert digest == content_digest(hashed_values("decisions", values[0]))
