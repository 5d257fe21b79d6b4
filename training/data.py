"""Training data: the generators' business data or a user's own CSV/Parquet file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from keel.errors import FieldError, InvalidInput
from keel.feature_defs.contract import Contract


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            # Only empty cells are missing: pandas' default NA strings include "NA", a region code.
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as exc:  # pandas' parser errors and pyarrow's are ValueErrors
        raise InvalidInput(f"{path}: cannot be read as a table ({str(exc).splitlines()[0]})") from exc
    raise InvalidInput(f"{path.name}: expected a .csv or .parquet file")


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _parse_text_cells(contract: Contract, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[FieldError]]:
    """Parse number and boolean columns that a file delivered as text, cell by cell.

    One unparsable cell makes pandas read its whole column as text; without this every row of
    that column would be blamed instead of the one bad cell.
    """
    errors: list[FieldError] = []
    parsed: dict[str, pd.Series] = {}
    for spec in contract.fields:
        column = frame.get(spec.name)
        if column is None or spec.type == "category" or column.dtype != object:
            continue
        text = column.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
        if spec.type == "bool":
            values = text.map(lambda v: True if v in _TRUE else False if v in _FALSE else v)
            bad = values.map(lambda v: not (isinstance(v, bool) or pd.isna(v)))
            expected = "expected true or false"
        else:
            values = pd.to_numeric(text, errors="coerce")
            bad = values.isna() & column.notna()
            expected = "expected a number"
        errors += [
            FieldError(int(i), spec.name, f"{expected}, got {column[i]!r}") for i in np.flatnonzero(bad)
        ]
        parsed[spec.name] = values.where(~bad, None)
    return (frame.assign(**parsed) if parsed else frame), errors


def check_training_frame(contract: Contract, frame: pd.DataFrame) -> pd.DataFrame:
    """Validate inputs and labels; returns the frame in time order (file order without event_time)."""
    missing_target = contract.target not in frame
    extra = [c for c in ("event_time", contract.target) if c in frame]
    frame = frame.reset_index(drop=True)
    frame, cell_errors = _parse_text_cells(contract, frame)
    result = contract.validate_frame(frame, extra_ok=extra)
    # A cell that could not be parsed is reported once, as unparsable, not again as null.
    unparsed = {(e.row, e.field) for e in cell_errors}
    errors = sorted(
        [*cell_errors, *(e for e in result.errors if (e.row, e.field) not in unparsed)],
        key=lambda e: (e.row, e.field),
    )
    if missing_target:
        errors.append(FieldError(-1, contract.target, "missing target column"))
    else:
        errors += contract.encode_target(list(frame[contract.target]))[1]
    if errors:
        raise InvalidInput(f"training data breaks the {contract.name} contract", errors)
    if "event_time" in frame:
        frame = frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True))
        frame = frame.sort_values("event_time", kind="stable")
    return frame.reset_index(drop=True)


def fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a training frame (row order and values)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()
