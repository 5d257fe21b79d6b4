"""Training data: the generators' business data or a user's own CSV/Parquet file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from keel.feature_defs.contract import Contract

from keel.errors import FieldError, InvalidInput


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if path.suffix.lower() == ".csv":
        # Only empty cells are missing: pandas' default NA strings include "NA", a region code.
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    raise InvalidInput(f"{path.name}: expected a .csv or .parquet file")


def check_training_frame(contract: Contract, frame: pd.DataFrame, max_errors: int = 20) -> pd.DataFrame:
    """Validate inputs and labels; returns the frame in time order (file order without event_time)."""
    missing_target = contract.target not in frame
    extra = [c for c in ("event_time", contract.target) if c in frame]
    result = contract.validate_frame(frame, extra_ok=extra)
    errors = list(result.errors)
    if missing_target:
        errors.append(FieldError(-1, contract.target, "missing target column"))
    else:
        errors += contract.encode_target(list(frame[contract.target]))[1]
    if errors:
        raise InvalidInput(
            f"training data breaks the {contract.name} contract ({len(errors)} problems)", errors[:max_errors]
        )
    if "event_time" in frame:
        frame = frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True))
        frame = frame.sort_values("event_time", kind="stable")
    return frame.reset_index(drop=True)


def fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a training frame (row order and values)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()
