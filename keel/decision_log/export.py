"""A decision search as CSV (the console's export): the search's newest rows, one line each.

On PostgreSQL the server writes the CSV itself (`COPY (the search) TO STDOUT`), cells and quoting
included; on SQLite, Python's csv module writes the rows `search.stream` reads. Building a dict and
a csv line per row in Python cost about as much as the statement at 10M decisions (a 10,000-row
export: about 140 ms of statement, 110 ms of rows, 50 ms of csv), which put it over the console's
300 ms budget. Both write the same text for the same rows (tests/integration compare them).

A cell a spreadsheet would read as a formula (text starting with `=`, `+`, `-`, `@`, a tab or a
carriage return: case ids, callers and segment values are the caller's text) gets a leading
apostrophe, so opening an export never runs one.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from typing import Any

from keel.decision_log.database import Database
from keel.decision_log.search import SEGMENT_FIELDS, DecisionQuery, search_sql, stream

__all__ = ["EXPORT_COLUMNS", "FORMULA_STARTS", "csv_pieces"]

EXPORT_COLUMNS = (
    "decision_id", "created_at", "model", "model_version", "case_id", "caller", "outcome", "abstained",
    "route", "confidence", "final_outcome", "feedback_kind", "origin", *SEGMENT_FIELDS,
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CALLERS_TEXT = ("case_id", "caller", *SEGMENT_FIELDS)
"""The columns holding text a caller chose (the rest are Keel's: ids, times, versions, and classes
and routes of the model's contract, which feedback is checked against): the ones quoted."""
_ROWS_A_PIECE = 500


def csv_pieces(db: Database, query: DecisionQuery, limit: int, by_server: bool = True) -> Iterator[bytes]:
    """The header, then up to `limit` matching decisions (newest first) as UTF-8 CSV, in pieces
    of about 500 rows; written by PostgreSQL where the log is there and `by_server`."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(EXPORT_COLUMNS)
    yield out.getvalue().encode()
    if db.is_postgres and by_server:
        yield from _copied(db, query, limit)
    else:
        yield from _written(db, query, limit)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _written(db: Database, query: DecisionQuery, limit: int) -> Iterator[bytes]:
    plain = EXPORT_COLUMNS[: -len(SEGMENT_FIELDS)]
    quoted = [c in CALLERS_TEXT for c in plain]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")  # as PostgreSQL's COPY writes lines
    rows = stream(db, query, limit)
    while chunk := list(itertools.islice(rows, _ROWS_A_PIECE)):
        writer.writerows(
            [_cell(row[c]) if q else row[c] for c, q in zip(plain, quoted, strict=True)]
            + [_cell(row["segments"].get(f)) for f in SEGMENT_FIELDS]
            for row in chunk
        )
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()


def _quoted(expression: str) -> str:
    """`expression` (text) with the apostrophe in front where it starts like a formula."""
    starts = ", ".join(f"chr({ord(c)})" if c in "\t\r" else f"'{c}'" for c in FORMULA_STARTS)
    return f"CASE WHEN left({expression}, 1) IN ({starts}) THEN '''' || {expression} ELSE {expression} END"


def _copy_select() -> str:
    """EXPORT_COLUMNS over the search's own row source (`search_sql`'s select list is replaced):
    callers' text quoted as above, abstention as Python writes a bool."""
    picks = {
        "abstained": "CASE WHEN d.abstained = 1 THEN 'True' ELSE 'False' END",
        "final_outcome": "lf.final_outcome",
        "feedback_kind": "lf.kind",
        **{f: f"s.{f}" for f in SEGMENT_FIELDS},
    }
    columns = [picks.get(c, f"d.{c}") for c in EXPORT_COLUMNS]
    return ", ".join(
        _quoted(col) if c in CALLERS_TEXT else col for c, col in zip(EXPORT_COLUMNS, columns, strict=True)
    )


def _copied(db: Database, query: DecisionQuery, limit: int) -> Iterator[bytes]:
    sql, params = search_sql(db, query, limit, columns=_copy_select())
    with db.reading() as reader:
        reader.without_jit()
        piece: list[bytes] = []
        for row in reader.copy_rows(sql, params):
            piece.append(bytes(row))
            if len(piece) == _ROWS_A_PIECE:
                yield b"".join(piece)
                piece = []
        if piece:
            yield b"".join(piece)
