"""A decision's SHAP waterfall as server-side SVG: bars from the base value to the raw score.

Drawn with SVG attributes only (no inline style, which the console's CSP forbids); the page
shows the same numbers in a table beside it for screen readers and keyboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "waterfall"]

TOP = 12
"""Bars drawn; the rest are summed into one 'other features' bar."""


@dataclass(frozen=True)
class Bar:
    label: str
    value: str
    contribution: float
    x: float
    width: float
    y: float
    positive: bool


def waterfall(explanation: dict[str, Any] | None, width: float = 640.0) -> dict[str, Any] | None:
    """Bars (label, start and width in pixels) of the explanation, or None without one."""
    if not explanation or not explanation.get("contributions"):
        return None
    items = [
        (str(c["feature"]), _shown(c.get("value")), float(c["contribution"]))
        for c in explanation["contributions"]
    ]
    head, rest = items[:TOP], items[TOP:]
    if rest:
        head.append((f"{len(rest)} other features", "", sum(c for _, _, c in rest)))
    base = float(explanation.get("base_value", 0.0))
    points = [base]
    for _, _, c in head:
        points.append(points[-1] + c)
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    left, plot = 230.0, width - 230.0 - 20.0

    def px(v: float) -> float:
        return round(left + (v - low) / span * plot, 1)

    bars, running, row = [], base, 28.0
    for label, value, c in head:
        start, end = px(running), px(running + c)
        bars.append(Bar(label, value, c, min(start, end), max(abs(end - start), 1.0), row, c >= 0))
        running += c
        row += 24.0
    return {
        "bars": bars,
        "base": base,
        "score": running,
        "base_x": px(base),
        "score_x": px(running),
        "height": row + 30.0,
        "width": width,
        "label_x": left - 8.0,
        "klass": explanation.get("class"),
    }


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
