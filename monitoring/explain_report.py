"""One logged decision as an auditor's HTML page.

The record is exactly what `serving.decider` logs (and `GET /v1/decisions/{id}` returns): inputs,
versions, outcome/abstention/route, reason codes, rules fired, probabilities and the full exact
SHAP explanation of the decided (or most likely) class. Every logged value is escaped: case
inputs and reviewer reasons come from outside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from keel.monitoring.widgets import (
    empty,
    esc,
    fmt,
    img,
    kv_table,
    page,
    plain,
    png_data_uri,
    pyplot,
    section,
    table,
)

__all__ = ["decision_context", "render_decision"]

WATERFALL_BARS = 12
"""Contributions drawn one by one; the rest are summed into one bar so the plot stays readable."""

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
