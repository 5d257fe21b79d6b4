"""HTML building blocks the monitoring pages share: escaping, tables, the page frame and plots.

The run report (`monitoring.report`) and the single-decision page (`monitoring.explain_report`)
both build on these; neither imports the other. Every value that can come from users or logged
data goes through `esc`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "any_table",
    "empty",
    "esc",
    "fmt",
    "grouped_bars",
    "img",
    "kv_table",
    "page",
    "plain",
    "png_data_uri",
    "pyplot",
    "rate_ci_plot",
    "section",
    "table",
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
 color:#1f2328;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.3em}h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:1.8em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:6px 0 14px;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.flag td{background:#fff1e5}.badge{padding:2px 8px;border-radius:10px;font-weight:600;color:#fff}
.ok{background:#1a7f37}.warn{background:#bf8700}.alert{background:#cf222e}.no_data{background:#6e7781}
.banner{padding:10px 14px;border-radius:6px;color:#fff;font-size:1.1em;margin:10px 0}
.caveat{background:#fff8c5;border-left:4px solid #bf8700;padding:6px 10px}
.note,.muted{color:#57606a}li.flag{font-weight:600}img{max-width:100%}
iframe{width:100%;height:85vh;border:1px solid #d0d7de}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell's text (escaped): short numbers, yes/no, lists joined, nested data as JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # 4 significant digits, but never 2.4e+05 for an amount
        return esc(f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}")
    if isinstance(value, list | tuple) and not value:
        return "—"
    if isinstance(value, list | tuple):
        return esc(", ".join(str(v) for v in value)) if all(not isinstance(v, dict) for v in value) else (
            esc(json.dumps(value, default=str))
        )  # fmt: skip
    if isinstance(value, dict):
        return esc(json.dumps(value, default=str))
    return esc(value)


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f"<td class='num'>{fmt(value)}</td>" if numeric else f"<td>{fmt(value)}</td>"


def table(rows: Sequence[Mapping[str, Any]], flag: str | None = None) -> str:
    """Rows of dicts as a table (columns in first-seen order); rows whose `flag` is true stand out."""
    if not rows:
        return empty()
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        f"<tr class='{'flag' if flag and r.get(flag) else ''}'>" + "".join(_cell(r.get(c)) for c in columns)
        + "</tr>"
        for r in rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(data: Mapping[str, Any], title: str | None = None) -> str:
    caption = f"<caption>{esc(title)}</caption>" if title else ""
    rows = "".join(f"<tr><th>{esc(k)}</th>{_cell(v)}</tr>" for k, v in data.items())
    return f"<table>{caption}{rows}</table>"


def _flat(value: Any) -> bool:
    return isinstance(value, Mapping) and not any(isinstance(x, Mapping | list) for x in value.values())


def any_table(data: Any) -> str:
    """Plain data of unknown shape as tables: scalars as key/value rows, flat dicts (e.g. a rate with
    its interval) as one row each, lists of dicts as tables, anything deeper as a titled block."""
    if data is None:
        return empty()
    if isinstance(data, list | dict) and not data:
        return empty("none")
    if isinstance(data, list):
        return table(data) if all(isinstance(r, Mapping) for r in data) else f"<p>{fmt(data)}</p>"
    if not isinstance(data, Mapping):
        return f"<p>{fmt(data)}</p>"
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping | list)}
    flat = [{"": k, **v} for k, v in data.items() if _flat(v)]
    nested = {k: v for k, v in data.items() if isinstance(v, Mapping | list) and not _flat(v)}
    out = (kv_table(scalars) if scalars else "") + (table(flat) if flat else "")
    return out + "".join(f"<h4>{esc(k)}</h4>{any_table(v)}" for k, v in nested.items())


def empty(text: str = "No data for this window.") -> str:
    return f"<p class='muted'>{esc(text)}</p>"


def section(title: str, content: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{content}</section>"


def page(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
        f"<body>{body}<p class='muted'>Generated by Keel at {esc(datetime.now(UTC).isoformat())}.</p>"
        "</body></html>"
    )


def png_data_uri(fig: Any) -> str:
    """A matplotlib figure as an inline data URI (the page needs no side files), then closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def plain(text: Any) -> str:
    """Text for a matplotlib label: a `$` would otherwise switch on mathtext (and can fail)."""
    return str(text).replace("$", r"\$")


def img(uri: str, alt: str) -> str:
    return f"<figure><img src='{uri}' alt='{esc(alt)}'></figure>"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: reports are rendered on servers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- plots: where a person would rather look than read ----------------------------------------


def grouped_bars(labels: list[str], series: Mapping[str, list[float]], title: str, ylabel: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.4))
    width = 0.8 / max(len(series), 1)
    colours = ["#8c959f", "#0969da", "#bf8700"]
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(labels))]
        ax.bar(xs, values, width, label=name, color=colours[k % len(colours)])
    ax.set_xticks(range(len(labels)), [plain(x)[:22] for x in labels], rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.legend(fontsize=8)
    return img(png_data_uri(fig), title)


def rate_ci_plot(
    rows: list[tuple[str, float, float, float]], title: str, overall: float | None = None
) -> str:
    """(label, rate, low, high) per row as points with interval bars, beside the overall rate."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(rows) + 1.4))
    ys = range(len(rows))
    rates = [r[1] for r in rows]
    errors = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    ax.errorbar(rates, ys, xerr=errors, fmt="o", color="#0969da", ecolor="#57606a", capsize=3)
    ax.set_yticks(list(ys), [plain(r[0])[:40] for r in rows], fontsize=8)
    ax.invert_yaxis()
    if overall is not None:
        ax.axvline(overall, color="#cf222e", ls="--", lw=1, label=f"overall {overall:.3f}")
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("override rate", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return img(png_data_uri(fig), title)
