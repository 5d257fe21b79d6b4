"""`keel audit plan` and `keel audit set`: design a model's audit sampling and record it in the log.

`plan` reads the last monitoring window's decided cases per segment value and the override rate
of their reviews from the decision log, computes per-cell inclusion probabilities
(keel.monitoring.allocation), prints them and writes the plan as JSON. `set` records such a file
as the model's next audit plan (keel.decision_log.audit_plans), with its `--detect` target (the
file's `target.detect`), to which `keel monitor` tunes its sequential test; running servers read
it within KEEL_AUDIT_REFRESH_SECONDS, no restart.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keel.cli.common import _actor, _models, _state
from keel.errors import InvalidInput

__all__ = ["cmd_audit", "load_plan_file", "planned_detect"]

FALLBACK_OVERRIDE_RATE = 0.05
"""Base override rate assumed while a model has fewer than MIN_REVIEWS reviewed decided cases."""
MIN_REVIEWS = 30


def cmd_audit(args: argparse.Namespace) -> int:
    if args.audit_command == "plan":
        return _plan(args)
    return _set(args)


def _segment_field(model: str, chosen: str | None) -> str:
    from keel.feature_defs.contract import load_contract

    fields = load_contract(model).segment_fields
    if chosen is not None:
        if chosen not in fields:
            raise InvalidInput(f"{model}: {chosen!r} is not a segment field; one of {', '.join(fields)}")
        return chosen
    if not fields:
        raise InvalidInput(f"{model}: its contract names no segment field to plan audits by")
    return "region" if "region" in fields else fields[0]


def _plan(args: argparse.Namespace) -> int:
    from keel.decision_log import reads
    from keel.decision_log.audit_plans import AuditSettings
    from keel.decision_log.database import Database
    from keel.monitoring.allocation import allocate, expected_override_rates, value_level
    from keel.monitoring.log_reader import LogReader
    from keel.monitoring.monitor import parse_window
    from keel.monitoring.settings import MonitorSettings

    for name, value, low, high in (
        ("--detect", args.detect, 1.0, math.inf),
        ("--power", args.power, 0.0, 1.0),
        ("--budget", args.budget, 0.0, 1.0),
    ):
        if value is not None and not low < value < high:
            raise InvalidInput(f"{name} {value} is outside ({low}, {high})")
    if args.within < 1:
        raise InvalidInput("--within is a number of monitoring windows, at least 1")
    state: Any = _state(log=True)
    model = _models(args.model, registered=True)[0]
    field = _segment_field(model, args.field)
    monitor = MonitorSettings()
    window = args.window or monitor.window
    alpha = args.alpha if args.alpha is not None else monitor.process_drift_p
    start, end = parse_window(window)
    db = Database(state.log_url)
    try:
        volumes = reads.decided_per_segment(db, model, field, start.isoformat(), end.isoformat())
        reviewed = LogReader(db).reviewed(model, start, end, [field])
    finally:
        db.dispose()
    if not volumes:
        raise InvalidInput(f"{model}: no decided live cases in the last {window}; nothing to plan from")
    expected, overrides, reviews = expected_override_rates(reviewed, field, monitor.score_bands)
    overall = overrides / reviews if reviews >= MIN_REVIEWS else FALLBACK_OVERRIDE_RATE
    # Each value's rate as process drift measures against it (a ratio is harder to see where it
    # is low); the model's rate for a value without reviews, or while there are too few reviews.
    known = expected if reviews >= MIN_REVIEWS else {}
    base = {v: min(max(known.get(v, overall), 0.005), 0.5) for v in volumes}
    # Planned for the level process drift tests one value at (its share of alpha over the values).
    level = value_level(alpha, len(volumes), field == monitor.primary_segment, monitor.primary_share)
    allocation = allocate(volumes, base, args.detect, args.within, args.power, level, args.budget)
    cross = args.cross_share if args.cross_share is not None else AuditSettings().cross_share
    plan = {
        "model": model,
        "field": field,
        "probabilities": {c.value: round(c.probability, 6) for c in allocation.cells},
        # A value not seen in the window gets the plan's overall rate.
        "default_probability": round(max(allocation.audited_share, AuditSettings().default_probability), 6),
        "cross_share": cross,
        "audited_share": round(allocation.audited_share, 6),
        "target": {
            "detect": args.detect,
            "within": args.within,
            "power": args.power,
            "alpha": alpha,
            "value_level": level,
            "budget": args.budget,
            "reached": allocation.reaches_target,
            "planned_ratio": round(allocation.planned_ratio, 4),
        },
        "basis": {
            "window": window,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "base_override_rate": round(min(max(overall, 0.005), 0.5), 6),
            "base_override_rates": {v: round(b, 6) for v, b in base.items()},
            "reviews": reviews,
            "overrides": overrides,
        },
        "cells": [
            {
                "value": c.value,
                "decided_per_window": c.decided_per_window,
                "probability": round(c.probability, 6),
                "audits_per_window": round(c.audits_per_window, 2),
                "detectable_ratio": None if math.isinf(c.detectable_ratio) else round(c.detectable_ratio, 3),
            }
            for c in allocation.cells
        ],
    }
    _print_plan(plan, allocation.reaches_target)
    out = Path(args.out) if args.out else Path(f"audit-plan-{model}.json")
    out.write_text(json.dumps(plan, indent=2) + "\n")
    print(f"{model}: plan written to {out}; record it with `keel audit set {model} --plan {out}`")
    return 0


def _print_plan(plan: dict[str, Any], reached: bool) -> None:
    target, basis = plan["target"], plan["basis"]
    table = Table(
        title=f"{plan['model']}: audit plan by {plan['field']} "
        f"(catch {target['detect']}x override rate within {target['within']} windows of "
        f"{basis['window']}, power {target['power']}, alpha {target['alpha']}, "
        f"{target['value_level']:.2g} per value)"
    )
    for col in ("value", "decided/window", "probability", "audits/window", "detectable ratio"):
        table.add_column(col, justify="left" if col == "value" else "right")
    for c in plan["cells"]:
        ratio = c["detectable_ratio"]
        table.add_row(
            c["value"],
            f"{c['decided_per_window']:,.0f}",
            f"{c['probability']:.4f}",
            f"{c['audits_per_window']:,.1f}",
            "none" if ratio is None else f"{ratio:.2f}x",
        )
    console = Console(width=120)
    console.print(table)
    print(
        f"audited share of decided cases: {plan['audited_share']:.2%}; "
        f"cross share {plan['cross_share']:.0%}; "
        f"base override rate {basis['base_override_rate']:.2%} "
        f"({basis['overrides']} of {basis['reviews']} reviews"
        f"{'' if basis['reviews'] >= MIN_REVIEWS else f'; too few, {FALLBACK_OVERRIDE_RATE:.0%} assumed'})"
    )
    if not reached:
        print(
            f"budget {target['budget']:.2%} cannot reach {target['detect']}x in every {plan['field']}: "
            f"the smallest detectable ratio per value is in the last column; smaller ones cannot be ruled out"
        )


def load_plan_file(path: Path, model: str) -> dict[str, Any]:
    """A plan file as `keel audit plan` writes it (or by hand: field, probabilities, cross_share)."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read plan file {path}: {exc}") from exc
    if not isinstance(plan, dict):
        raise InvalidInput(f"{path}: a plan is a JSON object")
    if plan.get("model", model) != model:
        raise InvalidInput(f"{path} is a plan for {plan['model']!r}, not {model!r}")
    probabilities = plan.get("probabilities", {})
    if not isinstance(probabilities, dict):
        raise InvalidInput(f"{path}: probabilities is an object of cell value -> probability")
    for key in ("default_probability", "cross_share", *probabilities):
        value = probabilities[key] if key in probabilities else plan.get(key, 0.0)
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise InvalidInput(f"{path}: {key} = {value!r} is not a probability in [0, 1]")
    if probabilities and not plan.get("field"):
        raise InvalidInput(f"{path}: per-cell probabilities need the segment `field` they are cells of")
    target = plan.get("target", {})
    detect = target.get("detect") if isinstance(target, dict) else None
    if not isinstance(target, dict) or not (
        detect is None or (isinstance(detect, (int, float)) and 1.0 < float(detect) < math.inf)
    ):
        raise InvalidInput(f"{path}: target.detect = {detect!r} is not an override-rate ratio above 1")
    return plan


def planned_detect(plan: dict[str, Any]) -> float | None:
    """The override-rate ratio a plan file was designed to catch (`target.detect`), if it says."""
    detect = plan.get("target", {}).get("detect")
    return None if detect is None else float(detect)


def _set(args: argparse.Namespace) -> int:
    from keel.decision_log.audit_plans import AuditSettings, append_plan
    from keel.decision_log.database import Database
    from keel.decision_log.log_key import load_keys
    from keel.decision_log.settings import LogSettings

    state: Any = _state(log=True)
    model = _models(args.model, registered=True)[0]
    plan = load_plan_file(Path(args.plan), model)
    if plan.get("field"):
        _segment_field(model, plan["field"])
    settings = AuditSettings()
    db = Database(state.log_url)
    try:
        db.create_schema()
        saved = append_plan(
            db,
            load_keys(LogSettings().key_file),
            model,
            plan.get("field"),
            {str(k): float(v) for k, v in plan.get("probabilities", {}).items()},
            float(plan.get("default_probability", settings.default_probability)),
            float(plan.get("cross_share", settings.cross_share)),
            _actor(args),
            args.reason or "",
            planned_detect(plan),
        )
    finally:
        db.dispose()
    print(
        f"{model}: audit plan v{saved.version} recorded by {saved.actor} "
        f"({len(saved.probabilities)} {saved.field or 'uniform'} cells, "
        f"cross share {saved.cross_share:.0%}"
        f"{f'; planned to detect {saved.detect_ratio:g}x' if saved.detect_ratio else ''}); "
        f"running servers apply it within {settings.refresh_seconds:g}s"
    )
    return 0
