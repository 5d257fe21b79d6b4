"""Records as strict JSON: NaN and infinities become null (they are not JSON; jsonb refuses them)."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps"]


def dumps(value: Any) -> str:
    """Compact JSON text; non-finite floats anywhere in `value` are written as null."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:  # rare: only then pay for the walk
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False, default=str)


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
