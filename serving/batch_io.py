"""Files of a batch run: cases read in bounded chunks, decisions and field errors written as they come.

Inputs are Parquet or CSV; outputs Parquet, CSV or JSON Lines (chosen by the file's suffix). Each
chunk becomes the JSON-like cases the online route would receive, so both paths validate and
decide the very same values. Columns named `context.<field>` (a field of keel.client.Context)
are each row's correlation context, as a case's `context` object online: never a model input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel.client.context import Context
from keel.decision_log.chain import BATCH_CALLER_PREFIX
from keel.errors import FieldError, InvalidInput
from keel.feature_defs.contract import RESERVED_KEYS, Contract

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

# Decision-log rows written by `keel score --log` have a caller starting with BATCH_CALLER_PREFIX
# (no API key name can: `keel keys add` refuses the prefix) and a `batch` entry in their record.

__all__ = [
    "BATCH_CALLER_PREFIX",
    "CONTEXT_PREFIX",
    "DECISION_COLUMNS",
    "ERROR_COLUMNS",
    "Chunk",
    "TableWriter",
    "check_columns",
    "context_columns",
    "decision_row",
    "error_path",
    "frame_cases",
    "frame_contexts",
    "input_columns",
    "json_value",
    "read_chunks",
    "table_format",
]

DECISION_COLUMNS = (
    "row", "case_id", "decision_id", "outcome", "abstained", "route", "confidence", "decision",
)  # fmt: skip
"""One output row per decided case: flat columns to filter on, and `decision`, the JSON object the
online route returns for the case (byte for byte the same keys and values)."""
ERROR_COLUMNS = ("row", "case_id", "field", "problem")
"""One output row per field-level problem of a rejected case (a case may have several)."""
CONTEXT_PREFIX = "context."
"""Input columns `context.<field>` carry each row's correlation context."""
_CONTEXT_COLUMNS = frozenset(CONTEXT_PREFIX + f for f in Context.model_fields)
_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Chunk:
    first_row: int
    """0-based position of the chunk's first case in the input file."""
    cases: list[dict[str, Any]]
    contexts: list[dict[str, Any]] | None = None
    """Each case's own context fields from the `context.*` columns (unchecked); None without any."""


def table_format(path: Path, *, reading: bool = False) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    allowed = ("parquet", "csv") if reading else ("parquet", "csv", "jsonl")
    if fmt is None or fmt not in allowed:
        suffixes = ", ".join(s for s, f in _FORMATS.items() if f in allowed)
        raise InvalidInput(f"{path.name}: unsupported file type", [FieldError(-1, "path", f"use {suffixes}")])
    return fmt


def error_path(output: Path) -> Path:
    """Where rejected cases go by default: beside the output, `NAME.errors.SUFFIX`."""
    return output.with_name(f"{output.stem}.errors{output.suffix}")


def input_columns(path: Path) -> list[str]:
    if table_format(path, reading=True) == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    return list(pd.read_csv(path, nrows=0).columns)


def context_columns(columns: list[str]) -> list[str]:
    """The input's correlation-context columns."""
    return [c for c in columns if c in _CONTEXT_COLUMNS]


def check_columns(columns: list[str], contract: Contract) -> None:
    """A file-level problem (unknown or missing column) stops the run before anything is decided,
    as the online route rejects unknown fields: a misspelt column must not decide every case on
    a missing value."""
    allowed = set(contract.field_names) | RESERVED_KEYS | _CONTEXT_COLUMNS
    errors = [FieldError(-1, str(c), "unknown column") for c in columns if c not in allowed]
    errors += [FieldError(-1, f, "missing column") for f in contract.field_names if f not in columns]
    if errors:
        raise InvalidInput(f"the input does not match the {contract.name} contract", errors)


def read_chunks(path: Path, contract: Contract, rows: int) -> Iterator[Chunk]:
    """The file's cases, `rows` at a time; memory holds one chunk, whatever the file's size."""
    columns = input_columns(path)
    check_columns(columns, contract)
    first = 0
    for frame in _frames(path, contract, rows, context_columns(columns)):
        yield Chunk(first, frame_cases(frame, contract), frame_contexts(frame))
        first += len(frame)


def _frames(path: Path, contract: Contract, rows: int, contexts: list[str]) -> Iterator[pd.DataFrame]:
    if table_format(path, reading=True) == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yield batch.to_pandas()
        return
    # Categories and context ids are read as text ("01" stays "01") and only an empty cell is
    # missing: pandas' default NA words would turn the region "NA" into a null.
    text = {f.name: str for f in contract.fields if f.type == "category"} | {"case_id": str}
    text |= {c: str for c in contexts}
    yield from pd.read_csv(path, chunksize=rows, dtype=text, keep_default_na=False, na_values=[""])


def frame_cases(frame: pd.DataFrame, contract: Contract) -> list[dict[str, Any]]:
    """The JSON-like cases of a frame: Python scalars, None for missing, and whole numbers of an
    int field as int (a column with a gap is read as float64). Converted a column at a time
    (`tolist` yields Python scalars), since per-value conversion would cost more than deciding."""
    names = [c for c in ("case_id", *contract.field_names) if c in frame.columns]
    ints = {f.name for f in contract.fields if f.type == "int"}
    columns = [_plain_column(frame[c], c in ints) for c in names]
    cases = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if "case_id" in names:
        for case in cases:
            if case["case_id"] is None:
                del case["case_id"]  # as a request that sends no case_id
    return cases


def frame_contexts(frame: pd.DataFrame) -> list[dict[str, Any]] | None:
    """Each row's own context fields from its `context.*` cells (an empty cell sets nothing), or
    None when the frame has no such column. Ids are text, as a request sends them; a whole-number
    `process_definition_version` stays a number."""
    columns = context_columns([str(c) for c in frame.columns])
    if not columns:
        return None
    out: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    for column in columns:
        name = column.removeprefix(CONTEXT_PREFIX)
        for fields, value in zip(out, _plain_column(frame[column], False), strict=True):
            if value is not None:
                fields[name] = _context_value(name, value)
    return out


def _context_value(name: str, value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a Parquet number column with a gap reads as float64
    if name == "process_definition_version" and isinstance(value, int) and not isinstance(value, bool):
        return value
    return value if isinstance(value, str) else str(value)


def _plain_column(column: pd.Series, integer: bool) -> list[Any]:
    values: list[Any] = column.tolist()
    if column.dtype.kind == "f":
        if integer:
            return [None if v != v else int(v) if v.is_integer() else v for v in values]
        if column.hasnans:
            return [None if v != v else v for v in values]
        return values
    if column.dtype.kind in "biu":
        return values
    return [json_value(v) for v in values]


def json_value(value: Any) -> Any:
    """A table cell as the JSON value a request would carry (numpy scalars unwrapped, NaN/NA null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def decision_row(row: int, public: DecisionRecord) -> dict[str, Any]:
    return {
        "row": row,
        "case_id": public.get("case_id"),
        "decision_id": public["decision_id"],
        "outcome": public["outcome"],
        "abstained": public["abstained"],
        "route": public["route"],
        "confidence": public["confidence"],
        "decision": json.dumps(public, separators=(",", ":")),
    }


_ARROW_TYPES = {
    "row": pa.int64(),
    "case_id": pa.string(),
    "decision_id": pa.string(),
    "outcome": pa.string(),
    "abstained": pa.bool_(),
    "route": pa.string(),
    "confidence": pa.float64(),
    "decision": pa.string(),
    "field": pa.string(),
    "problem": pa.string(),
}


class TableWriter:
    """Appends rows to a Parquet, CSV or JSON Lines file, one chunk at a time; `close` finishes it.

    The file is written under a temporary name and renamed on close, so a crashed run never
    leaves a truncated file that looks complete."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self.format = table_format(path)
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.partial")
        self._schema = pa.schema([(c, _ARROW_TYPES[c]) for c in columns])
        self._parquet: pq.ParquetWriter | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._text = None if self.format == "parquet" else self._tmp.open("w", encoding="utf-8", newline="")
        if self.format == "parquet":
            self._parquet = pq.ParquetWriter(self._tmp, self._schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._parquet is not None:
            self._parquet.write_table(pa.Table.from_pylist(rows, schema=self._schema))
        elif self.format == "csv":
            assert self._text is not None
            pd.DataFrame(rows, columns=list(self.columns)).to_csv(
                self._text, header=self.rows == 0, index=False
            )
        else:
            assert self._text is not None
            self._text.writelines(_json_line(r) + "\n" for r in rows)
        self.rows += len(rows)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._text is not None:
            if self.rows == 0 and self.format == "csv":
                self._text.write(",".join(self.columns) + "\n")
            self._text.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._text is not None:
            self._text.close()
        self._tmp.unlink(missing_ok=True)


def _json_line(row: dict[str, Any]) -> str:
    # JSON Lines carry the decision as an object (with its row number), not as a string in a string.
    if "decision" in row:
        return f'{{"row":{int(row["row"])},{row["decision"][1:]}'
    return json.dumps(row, separators=(",", ":"))
