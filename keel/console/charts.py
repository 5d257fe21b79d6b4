"""Trend charts and status marks as server-side SVG: no script, no asset from another origin.

The console's Content-Security-Policy forbids inline style, so every shape is drawn with SVG
presentation attributes and the style sheet's classes. Every text that reaches the markup
(titles, labels, run times) is escaped here; a chart's numbers are also given as a table by the
page for screen readers, and the SVG itself carries a title and a description.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Series", "line_chart", "status_marks"]

STATUS_FILL = {"ok": "#1d6b2f", "warn": "#b06a00", "alert": "#a11b12", "no_data": "#8a8f98"}
STATUS_WORD = {"ok": "ok", "warn": "warn", "alert": "alert", "no_data": "no data"}


@dataclass(frozen=True)
class Series:
    """One line over runs; None where a run had no value (the line breaks there)."""

    label: str
    values: Sequence[float | None]
    low: Sequence[float | None] | None = None
    """With `high`: an interval drawn as a band around the line."""
    high: Sequence[float | None] | None = None


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive stretches of finite values (index, value): a None or NaN breaks the line."""
    out: list[list[tuple[int, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            if out[-1]:
                out.append([])
            continue
        out[-1].append((i, float(v)))
    return [r for r in out if r]


def _nice_top(peak: float) -> float:
    """An axis top at or above `peak` that reads well: 1, 2 or 5 times a power of ten."""
    if peak <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 5, 10):
        if peak <= step * power:
            return float(step * power)
    return float(10 * power)


def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.0f}%" if percent else f"{value:.3g}"


def line_chart(
    chart_id: str,
    title: str,
    x_labels: Sequence[str],
    series: Series,
    y_label: str,
    percent: bool = False,
    reference: float | None = None,
    reference_label: str = "",
    width: int = 640,
    height: int = 220,
) -> Markup:
    """An SVG line chart of one series over runs (oldest left), with an optional interval band
    and a dashed reference line (an alarm's level). Runs without a value leave a gap; a chart
    without any value says so inside its frame."""
    left, right, top, bottom = 58, 16, 30, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(x_labels)
    finite = [
        v
        for seq in (series.values, series.low or (), series.high or ())
        for v in seq
        if v is not None and math.isfinite(v)
    ]
    peak = max([*finite, reference or 0.0, 0.0])
    y_top = 1.0 if percent and peak <= 1.0 else _nice_top(peak)

    def x(i: int) -> float:
        return round(left + (plot_w / 2 if n <= 1 else i * plot_w / (n - 1)), 1)

    def y(v: float) -> float:
        return round(top + plot_h - min(max(v, 0.0), y_top) / y_top * plot_h, 1)

    e = escape
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    shown = [v for v in series.values if v is not None and math.isfinite(v)]
    desc = (
        f"{series.label} over {n} run(s), oldest first; latest {_fmt(shown[-1], percent)}."
        if shown
        else f"No {series.label} recorded in these runs."
    )
    parts = [
        f'<svg class="chart" id="{e(chart_id)}" role="img" aria-labelledby="{title_id} {desc_id}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{e(title_id)}">{e(title)}</title><desc id="{e(desc_id)}">{e(desc)}</desc>',
        f'<rect class="chart-frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
        f'fill="#ffffff" stroke="#c7ccd4"/>',
    ]
    for k in range(5):  # y grid and ticks
        v = y_top * k / 4
        parts.append(
            f'<line class="chart-grid" x1="{left}" x2="{left + plot_w}" y1="{y(v)}" y2="{y(v)}" '
            f'stroke="#e3e6ea"/><text class="chart-tick" x="{left - 6}" y="{y(v) + 4}" '
            f'text-anchor="end" font-size="11" fill="#4a4a4a">{e(_fmt(v, percent))}</text>'
        )
    if series.low is not None and series.high is not None:  # the interval band
        lows, highs = list(series.low), list(series.high)
        both = [
            None if lo is None or hi is None or not math.isfinite(lo + hi) else 0.0
            for lo, hi in zip(lows, highs, strict=True)
        ]
        for stretch in _runs(both):
            idx = [i for i, _ in stretch]
            upper = [(x(i), y(float(highs[i] or 0.0))) for i in idx]
            lower = [(x(i), y(float(lows[i] or 0.0))) for i in reversed(idx)]
            if len(idx) == 1:  # one run: a short bar stands for its interval
                (px, hi_y), (_, lo_y) = upper[0], lower[0]
                upper, lower = [(px - 4, hi_y), (px + 4, hi_y)], [(px + 4, lo_y), (px - 4, lo_y)]
            points = " ".join(f"{a},{b}" for a, b in upper + lower)
            parts.append(
                f'<polygon class="chart-band" points="{points}" fill="#0b4f9c" fill-opacity="0.15"/>'
            )
    if reference is not None:
        ry = y(reference)
        parts.append(
            f'<line class="chart-reference" x1="{left}" x2="{left + plot_w}" y1="{ry}" y2="{ry}" '
            f'stroke="#a11b12" stroke-dasharray="5 4"/><text x="{left + plot_w - 4}" y="{ry - 4}" '
            f'text-anchor="end" font-size="11" fill="#a11b12">{e(reference_label)}</text>'
        )
    for stretch in _runs(series.values):
        points = " ".join(f"{x(i)},{y(v)}" for i, v in stretch)
        if len(stretch) > 1:
            parts.append(
                f'<polyline class="chart-line" points="{points}" fill="none" stroke="#0b4f9c" '
                f'stroke-width="2"/>'
            )
        for i, v in stretch:
            parts.append(
                f'<circle class="chart-point" cx="{x(i)}" cy="{y(v)}" r="3.5" fill="#0b4f9c">'
                f"<title>{e(x_labels[i])}: {e(_fmt(v, percent))}</title></circle>"
            )
    if not shown:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="13" '
            f'fill="#4a4a4a">No data in these runs</text>'
        )
    if n:
        parts.append(
            f'<text class="chart-tick" x="{x(0)}" y="{top + plot_h + 16}" text-anchor="start" '
            f'font-size="11" fill="#4a4a4a">{e(x_labels[0])}</text>'
        )
        if n > 1:
            parts.append(
                f'<text class="chart-tick" x="{x(n - 1)}" y="{top + plot_h + 16}" text-anchor="end" '
                f'font-size="11" fill="#4a4a4a">{e(x_labels[-1])}</text>'
            )
    parts.append(
        f'<text class="chart-axis" x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" '
        f'font-size="12" fill="#1a1a1a">Monitoring run (oldest left, UTC)</text>'
        f'<text class="chart-axis" x="14" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
        f'fill="#1a1a1a" transform="rotate(-90 14 {top + plot_h / 2})">{e(y_label)}</text>'
        f'<text class="chart-title" x="{left}" y="18" font-size="14" font-weight="600" '
        f'fill="#1a1a1a">{e(title)}</text></svg>'
    )
    return Markup("".join(parts))


def status_marks(label: str, statuses: Sequence[str], size: int = 12) -> Markup:
    """A row of coloured marks, one per run (oldest first), read out as its list of statuses."""
    words = ", ".join(STATUS_WORD.get(s, s) for s in statuses) or "no runs"
    width = max(1, len(statuses)) * (size + 3)
    parts = [
        f'<svg class="marks" role="img" aria-label="{escape(label)}: {escape(words)} (oldest first)" '
        f'viewBox="0 0 {width} {size}" width="{width}" height="{size}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, s in enumerate(statuses):
        fill = STATUS_FILL.get(s, STATUS_FILL["no_data"])
        tall = {"alert": size, "warn": size * 0.75, "ok": size * 0.45}.get(s, size * 0.25)
        parts.append(
            f'<rect class="mark-{escape(s)}" x="{i * (size + 3)}" y="{size - tall}" width="{size}" '
            f'height="{tall}" fill="{fill}"><title>{escape(STATUS_WORD.get(s, s))}</title></rect>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
