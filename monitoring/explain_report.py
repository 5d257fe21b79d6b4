"""One logged decision as an auditor's HTML page, and the HTML building blocks monitoring pages share.

The record is exactly what `serving.decider` logs (and `GET /v1/decisions/{id}` returns): inputs,
versions, outcome/abstention/route, reason codes, rules fired, probabilities and the full exact
SHAP explanation of the decided (or most likely) class. Every logged value is escaped: case
inputs and reviewer reasons come from outside.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("no_data", "ok", "warn", "alert")
"""Least to most severe; a report's overall status is its worst verdict's."""
STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}
WATERFALL_BARS = 12
"""Contributions drawn one by one; the rest are summed into one bar so the plot stays readable."""

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


# -- one decision ------------------------------------------------------------------------------------


def decision_context(record: Mapping[str, Any], cache_dir: Path) -> dict[str, Any]:
    """What the decision was compared with: the serving version's abstention threshold (with its
    alpha and delta) and each fired rule's description from the policy. Missing pieces are None,
    so the page still renders for a version or policy no longer available."""
    from keel.models import registry

    versions = record.get("versions") or {}
    model, version = str(record.get("model") or versions.get("model", "")), versions.get("model_version")
    out: dict[str, Any] = {"threshold": None, "alpha": None, "delta": None, "rules": [], "policy_note": None}
    loaded = None
    try:
        loaded = registry.load(registry.get_version(model, str(version)), cache_dir).model
        out.update(threshold=loaded.threshold, alpha=loaded.alpha, delta=loaded.delta)
    except Exception as exc:  # an unloadable version still gets its audit page
        out["policy_note"] = f"model version {version} could not be loaded: {exc}"
    fired = list(record.get("rules_fired") or [])
    if fired:
        if loaded is None:
            return out
        policy = loaded.spec.policy  # the policy sealed in the version that decided
        by_id = {r.id: r for r in policy.rules}
        out["rules"] = [
            {"rule": rid, "description": by_id[rid].description if rid in by_id else "(not in this policy)",
             "route": by_id[rid].route if rid in by_id else None}
            for rid in fired
        ]  # fmt: skip
        if policy.version != versions.get("policy_version"):
            out["policy_note"] = (
                f"descriptions from policy {policy.version}; "
                f"the decision used {versions.get('policy_version')}"
            )
    return out


def _compared_block(record: Mapping[str, Any], context: Mapping[str, Any] | None) -> str:
    if not context:
        return empty("Not available.")
    confidence, threshold = record.get("confidence"), context.get("threshold")
    if threshold is None or confidence is None:
        text = "The threshold of the serving version is not available."
    else:
        verb = "at or above" if float(confidence) >= float(threshold) else "below"
        result = "so the model decided" if verb == "at or above" else "so the model abstained"
        text = (
            f"Confidence {float(confidence):.4f} is {verb} the version's threshold {float(threshold):.4f}, "
            f"{result}. The threshold was chosen so that, with probability at least "
            f"{1 - float(context['delta']):.0%}, at most {float(context['alpha']):.1%} of the cases the "
            "model decides itself are wrong."
        )
    rules = context.get("rules") or []
    rules_html = table(rules) if rules else "<p>No policy rule fired.</p>"
    note = f"<p class='muted'>{esc(context['policy_note'])}</p>" if context.get("policy_note") else ""
    return f"<p>{esc(text)}</p><h3>Policy rules that fired</h3>{rules_html}{note}"


def render_decision(
    record: Mapping[str, Any],
    feedback: Sequence[Mapping[str, Any]],
    out_path: Path,
    context: Mapping[str, Any] | None = None,
) -> Path:
    """Write the auditor's page for one logged decision and its feedback history to `out_path`;
    `context` is `decision_context(record, ...)`: the threshold compared and the fired rules."""
    full = record.get("explanation_full")
    contributions = {c["feature"]: c.get("contribution") for c in (full or {}).get("contributions", [])}
    # Inputs exactly as the caller sent them (JSON literals, no rounding): this is the audit trail.
    inputs = [
        {
            "field": k,
            "value": v if isinstance(v, str) else json.dumps(v),
            "SHAP contribution": contributions.get(k),
        }
        for k, v in (record.get("inputs") or {}).items()
    ]
    decided = {
        "outcome": record.get("outcome") if not record.get("abstained") else "— (abstained)",
        "abstained": record.get("abstained"), "route": record.get("route"),
        "reason codes": record.get("reason_codes"), "policy rules fired": record.get("rules_fired"),
        "notify": record.get("notify"), "confidence": record.get("confidence"),
        "explanation": record.get("explanation_status"), "explained class": (full or {}).get("class"),
    }  # fmt: skip
    probabilities = sorted((record.get("probabilities") or {}).items(), key=lambda kv: -float(kv[1]))
    about = {k: record.get(k) for k in ("decision_id", "case_id", "model", "created_at", "caller")}
    body = [
        f"<h1>Decision {esc(record.get('decision_id', ''))}</h1>",
        kv_table(about),
        section("Decision", kv_table(decided)),
        section("What the confidence was compared with", _compared_block(record, context)),
        section("Versions", kv_table(record.get("versions") or {})),
        section("Class probabilities", table([{"class": c, "probability": p} for c, p in probabilities])),
        section("Explanation (SHAP waterfall)", _waterfall_block(full)),
        section("Inputs", table(inputs)),
        section(
            "Feedback history", table([dict(f) for f in feedback]) if feedback else empty("No feedback.")
        ),
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page(f"Keel decision {record.get('decision_id', '')}", "\n".join(body)), "utf-8")
    return out_path


def _waterfall_block(full: Mapping[str, Any] | None) -> str:
    if not full:
        return "<p class='caveat'>Explanation unavailable: the service could not compute one.</p>"
    base, raw = float(full["base_value"]), float(full["raw_score"])
    lead = (
        f"<p>Exact SHAP contributions to the raw score of class <b>{esc(full.get('class'))}</b>: "
        f"base value {fmt(base)}, plus the contributions below, gives raw score {fmt(raw)}.</p>"
    )
    return lead + img(_waterfall_png(full), "SHAP waterfall")


def _waterfall_png(full: Mapping[str, Any]) -> str:
    items = sorted(full["contributions"], key=lambda c: -abs(float(c["contribution"])))
    shown = [
        (plain(f"{c['feature']} = {c.get('value')}"), float(c["contribution"]))
        for c in items[:WATERFALL_BARS]
    ]
    rest = items[WATERFALL_BARS:]
    if rest:
        shown.append((f"{len(rest)} other features", sum(float(c["contribution"]) for c in rest)))
    base, raw = float(full["base_value"]), float(full["raw_score"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(shown) + 1.8))
    start, totals = base, [base]
    for i, (_, value) in enumerate(shown):
        ax.barh(i, value, left=start, color="#cf222e" if value > 0 else "#0969da", height=0.6)
        side = "left" if value > 0 else "right"
        ax.text(start + value, i, f" {value:+.3f} ", va="center", ha=side, fontsize=8)
        start += value
        totals.append(start)
    ax.set_yticks(range(len(shown)), [label[:48] for label, _ in shown], fontsize=8)
    ax.invert_yaxis()  # largest contribution on top, the running total flows downwards
    ax.axvline(base, color="#6e7781", ls="--", lw=1, label=f"base value {base:.3f}")
    ax.axvline(raw, color="#1f2328", lw=1.2, label=f"raw score {raw:.3f}")
    # Pad the x-range so the base line and the value labels never sit on the frame.
    low, high = min(*totals, raw), max(*totals, raw)
    pad = 0.18 * (high - low or 1.0)
    ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(f"raw score (log-odds scale) of class {plain(full.get('class'))}", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return png_data_uri(fig)
