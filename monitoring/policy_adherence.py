"""Policy adherence across entities: where a rule is applied, or overruled, differently.

For each rule of the deciding versions' sealed policies and each segment field: per value, how
often the rule fires (exact intervals) and, among reviewed decided cases it fired on, how often
the reviewer's outcome differs from the model's (an override of a case the rule routed). Which
rules fired is recomputed from each logged case and its logged model outputs with the version's
own sealed policy (the same rules on the same inputs fire the same way), so no record JSON beyond
the monitoring frame is needed. A rule firing more in one region than another is tested
(chi-squared, Holm over every rule and field) but mostly reflects the case mix there (larger
invoices, more new vendors); the rules-alone counterfactual (`keel.models.counterfactual
.rule_flips`) says whether the rule itself treats a segment differently.

Reviewed cases are not a random sample (rules route cases to people, spot checks pick the odd
ones), so the override rate of a rule's cases is estimated from the audited ones: decided cases
Keel selected at random with the inclusion probability logged in their chained record, each
weighted by 1 / probability (Hajek, as `keel.monitoring.audit.hajek`; Wilson interval at the
effective sample size). Discretionary reviews (not selected for audit) are reported apart and
never enter the estimate, and the plain count over every reviewed case is kept beside both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from keel.feature_defs.policy import Policy
from keel.models.proportions import proportion
from keel.monitoring.audit import audited, hajek
from keel.monitoring.overrides import DECIDED_KINDS
from keel.monitoring.stats import holm

__all__ = ["rule_usage", "rules_alone"]

FLAG_P = 0.05


def _fired(frame: pd.DataFrame, policies: Mapping[str, Policy], fields: Sequence[str]) -> pd.DataFrame:
    """One bool column per rule id: whether it fired on each case, by the case's own version."""
    out = pd.DataFrame(index=frame.index)
    for version, rows in frame.groupby("model_version", sort=True):
        policy = policies[str(version)]
        cases = rows[list(fields)].to_dict(orient="records")
        outcome, conf, abstained = rows["outcome"].tolist(), rows["confidence"].tolist(), rows["abstained"]
        results = [
            policy.apply(c, o if not a else None, float(k), bool(a))
            for c, o, k, a in zip(cases, outcome, conf, abstained.tolist(), strict=True)
        ]
        for rule in policy.rules:
            out.loc[rows.index, rule.id] = [rule.id in r.rules_fired for r in results]
    return out.fillna(False).astype(bool)


def rule_usage(
    frame: pd.DataFrame,
    policies: Mapping[str, Policy],
    fields: Sequence[str],
    segments: Sequence[str],
    level: float,
) -> list[dict[str, Any]]:
    """Per rule: per segment field and value, fire and override rates; the fields across whose
    values the fire rate differs (Holm-adjusted)."""
    if frame.empty:
        return []
    fired = _fired(frame, policies, fields)
    kind = frame["feedback_kind"] if "feedback_kind" in frame else pd.Series(None, index=frame.index)
    reviewed = kind.isin(DECIDED_KINDS).to_numpy() & ~frame["abstained"].astype(bool).to_numpy()
    overridden = kind.eq("override").to_numpy() & reviewed
    # Audit-selected reviewed decided cases (a test split or a frame without feedback has none).
    sampled = (
        audited(frame.rename(columns={"feedback_kind": "kind"})) if "feedback_kind" in frame else frame[:0]
    )
    chosen = frame.index.isin(sampled.index)
    probability = pd.Series(np.nan, index=frame.index)
    probability.loc[sampled.index] = sampled["audit_probability"].to_numpy(dtype="float64")
    weights = probability.to_numpy()
    routes = {r.id: r.route for p in policies.values() for r in p.rules}
    out: list[dict[str, Any]] = []
    tests: list[tuple[int, str, float]] = []
    for rule in fired.columns:
        hit = fired[rule].to_numpy()
        entry: dict[str, Any] = {
            "rule": rule,
            "route": routes.get(rule),
            "fired": proportion(int(hit.sum()), len(hit), level).to_dict(),
            "by_field": {},
        }
        for f in segments:
            values = frame[f].astype(str).to_numpy()
            rows = []
            for value in sorted(set(values)):
                at = values == value
                on = at & hit
                rows.append(
                    {
                        "value": value,
                        "fired": proportion(int(on.sum()), int(at.sum()), level).to_dict(),
                        "overridden": proportion(
                            int((on & overridden).sum()), int((on & reviewed).sum()), level
                        ).to_dict(),
                        "overridden_audited": hajek(
                            overridden[on & chosen], weights[on & chosen], level
                        ).to_dict(),
                        "overridden_discretionary": proportion(
                            int((on & overridden & ~chosen).sum()),
                            int((on & reviewed & ~chosen).sum()),
                            level,
                        ).to_dict(),
                    }
                )
            table = np.array([[r["fired"]["k"], r["fired"]["n"] - r["fired"]["k"]] for r in rows])
            table = table[table.sum(axis=1) > 0]
            testable = (
                len(table) > 1
                and (table > 0).all(axis=0).any()
                and table[:, 0].sum() > 0
                and table[:, 1].sum() > 0
            )
            p = float(chi2_contingency(table)[1]) if testable else 1.0
            tests.append((len(out), f, p))
            entry["by_field"][f] = {"values": rows, "p_value": p}
        out.append(entry)
    for (i, f, _), adjusted in zip(tests, holm([t[2] for t in tests]), strict=True):
        by = out[i]["by_field"][f]
        by["p_holm"] = adjusted
        by["applied_differently"] = adjusted < FLAG_P
    return out


def rules_alone(
    table: pd.DataFrame, readers: Mapping[str, list[str]], segments: Sequence[str], level: float
) -> list[dict[str, Any]]:
    """Per segment field: the share of cases whose route or fired rules change when only the
    policy sees another value (model outputs held); fields no rule reads are invariant by
    construction for the rules."""
    out: list[dict[str, Any]] = []
    for f in segments:
        if f not in readers:
            out.append({"field": f, "status": "invariant_by_construction", "rules": []})
            continue
        rows = table[table["field"] == f]
        per_case = rows.groupby("case")[["route", "rules"]].any()
        out.append(
            {
                "field": f,
                "status": "measured",
                "rules": readers[f],
                "route": proportion(int(per_case["route"].sum()), len(per_case), level).to_dict(),
                "rules_fired": proportion(int(per_case["rules"].sum()), len(per_case), level).to_dict(),
            }
        )
    return out
