"""`keel consistency` and the `decision_consistency` check: counterfactual audits of logged decisions.

Reads a window of the decision log (never live traffic): a systematic sample of its decisions
(every k-th, evenly spread over the window, as the monitor's drift sample), each re-decided with
every other value of each measured segment field by the sealed version that decided it
(keel.models.counterfactual). With no decision of the model in the window, the champion's
held-out test split sealed in its bundle is audited instead, and the report says so.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from keel.models import registry
from keel.models.consistency_report import DECISION, ConsistencyReport, held_out_audit, summarise
from keel.models.counterfactual import KINDS, Construction, Flips, Nesting, audit_frame, rule_flips
from keel.models.decision_model import DecisionModel
from keel.models.proportions import Proportion
from keel.monitoring.log_reader import LogReader
from keel.monitoring.policy_adherence import rule_usage, rules_alone
from keel.monitoring.reference import sealed_reference
from keel.monitoring.reviewer_agreement import Kappa, agreement_report, describe, review_pairs

__all__ = ["audit_window", "render", "reviewer_agreement"]


def _sealed_nesting(model: DecisionModel) -> Nesting:
    """Nesting and value frequencies from the version's own held-out cases (thousands of rows),
    not from a small window where an entity may not occur."""
    from keel.models.bundle import REFERENCE

    return Nesting.read(pd.read_parquet(model.bundle.path / REFERENCE), model.contract.segment_fields)


def _merged(found: list[list[Construction]]) -> list[Construction]:
    """One construction per field over the versions audited: measured when any version reads it."""
    out: dict[str, Construction] = {}
    for constructions in found:
        for c in constructions:
            seen = out.get(c.field)
            if seen is None:
                out[c.field] = c
            elif c.measured:
                reasons = tuple(dict.fromkeys(seen.reasons + c.reasons))
                out[c.field] = Construction(c.field, True, reasons, seen.moves_with, seen.tolerance)
    return list(out.values())


def audit_window(
    reader: LogReader,
    name: str,
    start: datetime,
    end: datetime,
    sample: int,
    cache_dir: Path,
    seed: int = 0,
    level: float = 0.95,
    explain_cap: int = 500,
    adherence: bool = False,
) -> ConsistencyReport:
    """`adherence`: also how each policy rule is applied across segment values (`report.policy`)."""
    summary = reader.summary(name, start, end)
    if summary.n_decisions == 0:
        loaded = registry.load(registry.resolve(name, registry.CHAMPION), cache_dir)
        model = loaded.model
        report = held_out_audit(model, loaded.ref.version, sample, seed, level, 1.0 - model.delta)
        report.note = (
            f"no decision of {name} logged between {start.isoformat()} and {end.isoformat()}: audited the "
            f"champion's held-out test split instead ({report.note})"
        )
        report.reviewers = reviewer_agreement(reader, name, start, end, model.contract.segment_fields, level)
        if adherence:
            cases = sealed_reference(model, loaded.ref.version, sample)
            ids = [f"test-{i}" for i in range(len(cases))]
            report.policy = _adherence(cases, {loaded.ref.version: model}, ids, seed, level)
        return report
    main = max(summary.model_versions.items(), key=lambda kv: kv[1])[0]
    contract = registry.load(registry.get_version(name, main), cache_dir).model.contract
    frame, total = reader.sample(name, start, end, contract, sample)
    flips: list[Flips] = []
    found: list[list[Construction]] = []
    models: dict[str, DecisionModel] = {}
    delta = 1.0
    for version, rows in frame.groupby("model_version", sort=True):
        model = registry.load(registry.get_version(name, str(version)), cache_dir).model
        models[str(version)] = model
        delta = min(delta, model.delta)
        ids = rows["decision_id"].astype(str).tolist()
        f, c = audit_frame(
            model, str(version), rows, ids, _sealed_nesting(model), seed, explain_cap, logged=True
        )
        flips.append(f)
        found.append(c)
    note = (
        f"{len(frame)} of the {total} decisions of {name} logged between {start.isoformat()} and "
        f"{end.isoformat()} (every {max(1, -(-total // max(len(frame), 1)))}th, evenly spread), each "
        "re-decided by the version that decided it; examples are decision ids"
    )
    report = summarise(name, "decision_log", note, flips, _merged(found), level, 1.0 - delta, seed)
    report.reviewers = reviewer_agreement(reader, name, start, end, contract.segment_fields, level)
    if adherence:
        report.policy = _adherence(frame, models, frame["decision_id"].astype(str).tolist(), seed, level)
    return report


def reviewer_agreement(
    reader: LogReader, name: str, start: datetime, end: datetime, segments: list[str], level: float
) -> dict[str, Any]:
    """Kappa between reviewers of the same case per segment value (keel.monitoring.reviewer_agreement)."""
    pairs = review_pairs(reader.review_words(name, start, end, segments), segments)
    return agreement_report(pairs, segments, level).to_dict()


def _adherence(
    frame: pd.DataFrame, models: dict[str, DecisionModel], ids: list[str], seed: int, level: float
) -> dict[str, Any]:
    """Rule usage by segment value and the rules-alone counterfactual, each case by its version."""
    contract = next(iter(models.values())).contract
    segments = contract.segment_fields
    tables: list[pd.DataFrame] = []
    readers: dict[str, list[str]] = {}
    for version, model in models.items():
        at = (frame["model_version"].astype(str) == version).to_numpy()
        rows = frame[at]
        checked = model.contract.validate_frame(rows[model.contract.field_names])
        if checked.matrix is None:
            continue
        cases = rows[model.contract.field_names].to_dict(orient="records")
        table, read = rule_flips(
            model, cases, checked.matrix, [i for i, keep in zip(ids, at, strict=True) if keep],
            _sealed_nesting(model), seed,
        )  # fmt: skip
        tables.append(table)
        readers |= read
    policies = {v: m.spec.policy for v, m in models.items()}
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["field", "case"])
    return {
        "rules": rule_usage(frame, policies, contract.field_names, segments, level),
        "rules_alone": rules_alone(table, readers, segments, level),
    }


def _pct(p: Proportion) -> str:
    return f"{p.rate:.1%} [{p.low:.1%}, {p.high:.1%}]"


def render(report: ConsistencyReport) -> Group:
    """The terminal view: one table of fields, one of value pairs with any change."""
    head = Text(
        f"{report.model}: counterfactual audit of {report.cases} cases from the "
        f"{report.source.replace('_', ' ')} ({report.note}). Rates are shares of cases with "
        f"{report.level:.0%} exact (Clopper-Pearson) intervals."
        + (
            f" Re-decided unaltered, {report.reproduced} of {report.cases} logged decisions were reproduced."
            if report.reproduced is not None
            else ""
        )
    )
    fields = Table(title="Segment fields", show_lines=False)
    for col in ("field", "status", "decision", *KINDS, "invariant", "acts through"):
        fields.add_column(col, no_wrap=col in ("field", "status"))
    for f in report.fields:
        if f.status != "measured":
            fields.add_row(f.field, "invariant by construction", "-", "-", "-", "-", _gate(f.gate), "-")
            continue
        flips = [_pct(f.flips[k]) for k in (DECISION, *KINDS)]
        through = ", ".join(x["feature"] for x in f.features[:3]) or "-"
        fields.add_row(f.field, f"measured ({f.cases} cases)", *flips, _gate(f.gate), through)
    pairs = Table(title="Value pairs that change decisions (from -> to)")
    for col in ("field", "from -> to", "cases", "decision", *KINDS, "acts through", "examples"):
        pairs.add_column(col)
    for f in report.fields:
        for p in f.pairs:
            if p.flips[DECISION].k == 0:
                continue
            pairs.add_row(
                f.field,
                f"{p.start} -> {p.target}",
                str(p.flips[DECISION].n),
                *[_pct(p.flips[k]) for k in (DECISION, *KINDS)],
                ", ".join(x["feature"] for x in p.features) or "-",
                ", ".join(p.examples),
            )
    parts: list[Any] = [head, fields]
    if pairs.row_count:
        parts.append(pairs)
    if report.policy is not None:
        parts.append(_policy_table(report.policy))
    if report.reviewers is not None:
        parts.append(_reviewer_table(report.reviewers))
    return Group(*parts)


def _reviewer_table(reviewers: dict[str, Any]) -> Table | Text:
    """Per segment value: kappa between two reviewers of the same case, against the other values'."""
    overall = describe(Kappa(**reviewers["overall"]))
    if not reviewers["n_pairs"]:
        return Text(f"Reviewer agreement: {overall} in this window.")
    table = Table(title="Reviewer agreement on cases reviewed twice (Cohen's kappa)")
    for col in ("field", "value", "kappa here", "kappa elsewhere", "agrees less"):
        table.add_column(col)
    for name, values in reviewers["by_segment"].items():
        for v in values:
            here, rest = Kappa(**v["kappa"]), Kappa(**v["rest"])
            table.add_row(name, v["value"], describe(here), describe(rest), _less(v))
    sources = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in reviewers["sources"].items() if n)
    table.caption = f"All pairs: {overall}; {sources}. " + " ".join(reviewers["sentences"])
    return table


def _less(value: dict[str, Any]) -> str:
    if value["agrees_less"]:
        return "YES"
    explained = value.get("explained_by")
    return f"no, explained by {', '.join(explained)}" if explained else "-"


def _policy_table(policy: dict[str, Any]) -> Table:
    """Per rule and segment field: the values it fires least and most on, and whether that spread
    is more than chance; per field, whether the rules alone treat its values differently."""
    table = Table(title="Policy rules across segments (fire rate by value; overrides of the rule's cases)")
    for col in (
        "rule",
        "field",
        "fires least",
        "fires most",
        "Holm p",
        "overridden most (audited)",
        "discretionary",
    ):
        table.add_column(col)
    for rule in policy["rules"]:
        for f, by in rule["by_field"].items():
            values = [v for v in by["values"] if v["fired"]["n"]]
            if not values or not rule["fired"]["k"]:
                continue
            low = min(values, key=lambda v: v["fired"]["rate"])
            high = max(values, key=lambda v: v["fired"]["rate"])
            audited = [v for v in values if v["overridden_audited"]["n"]]
            most = max(audited, key=lambda v: v["overridden_audited"]["value"]) if audited else None
            reviewed = sum(v["overridden_discretionary"]["n"] for v in values)
            overruled = sum(v["overridden_discretionary"]["k"] for v in values)
            flag = " (differs)" if by["applied_differently"] else ""
            table.add_row(
                rule["rule"],
                f,
                f"{low['value']} {low['fired']['rate']:.1%}",
                f"{high['value']} {high['fired']['rate']:.1%}",
                f"{by['p_holm']:.2g}{flag}",
                _audited(most) if most else "no audited case",
                f"{overruled}/{reviewed}" if reviewed else "-",
            )
    alone = "; ".join(
        f"{a['field']}: {a['route']['rate']:.1%} of cases change route with another value "
        f"(rules: {', '.join(a['rules'])})"
        if a["status"] == "measured"
        else f"{a['field']}: no rule reads it"
        for a in policy["rules_alone"]
    )
    table.caption = f"Rules alone, model outputs held: {alone}"
    return table


def _audited(value: dict[str, Any]) -> str:
    e = value["overridden_audited"]
    return f"{value['value']} {e['value']:.1%} [{e['low']:.1%}, {e['high']:.1%}] of {e['n']} audited"


def _gate(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return "not declared"
    word = "PASS" if gate["passed"] else "FAIL"
    return f"{word}: lower bound {gate['lower_bound']:.2%} vs tolerance {gate['tolerance']:.2%}"
