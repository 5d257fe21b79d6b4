"""Records as strict JSON: NaN and infinities become null (they are not JSON; jsonb refuses them)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["JSONText", "dumps"]


class JSONText(str):
    """A value already written as this module's JSON text: `dumps` hands it back as it is.

    For bulk loads that assemble many records from one `dumps` output (a benchmark restamping a
    pool of real records with new ids and times): the text must be what `dumps` would write for
    the record it stands for, which holds when only plain string values (ids, ISO times) are
    spliced in. The log hashes and stores the text given, so a log built from it still verifies.
    """

    __slots__ = ()


def dumps(value: Any) -> str:
    """Compact JSON text; non-finite floats anywhere in `value` are written as null.

    orjson writes non-finite floats as null by itself and is about ten times faster than the
    json module on a decision record (this runs once per logged row, in the request's thread).
    A value with anything but JSON's own types in it (numpy scalars, dates, integers past 64
    bits, non-string keys) is written by the json module instead, exactly as before orjson.
    """
    if type(value) is JSONText:
        return str.__str__(value)
    try:
        return orjson.dumps(value, default=_not_plain, option=_NOT_NATIVE).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # rare: only then pay for the walk
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False, default=str)


# orjson would write dates and dataclasses its own way; the json module writes their str().
_NOT_NATIVE = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _not_plain(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return _finite(value.item())
    return value
