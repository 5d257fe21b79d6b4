"""`keel compare MODEL`: the champion against its shadow and canary on live traffic and feedback.

- **Shadow**: every shadow decision is paired with the live decision it shadows (same case), so
  agreement is measured case by case: the share of pairs where both would do the same (the same
  outcome, or both abstain). Would-be override rate: among paired cases a reviewer settled and
  the version decided itself, the share where its outcome differs from the reviewer's.
- **Canary**: champion and canary decide different cases, split by a hash of the case (so the
  two groups are alike by construction); they are compared as two independent samples.

Coverage (share decided) and abstention are shown for each, overall and per segment value, with
95% Wilson intervals, and each difference (challenger minus champion) with a Newcombe interval
(statsmodels). Reviewed cases are not a random sample (abstentions are reviewed more), so override
rates describe reviewed cases; the comparison is fair because both sides see the same ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from keel.decision_log.chain import LIVE
from keel.decision_log.comparisons import ComparedRow, compared_rows, window_mix
from keel.decision_log.database import Database
from keel.monitoring.log_reader import iso

__all__ = ["compare", "compare_lines"]

CHAMPION, CANARY = "champion", "canary"


def _rate(k: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"count": 0, "n": 0, "rate": None, "low": 0.0, "high": 1.0}
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return {"count": k, "n": n, "rate": k / n, "low": float(low), "high": float(high)}


def _difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """b's rate minus a's, with a 95% Newcombe interval; None when either side has no cases."""
    if not a["n"] or not b["n"]:
        return None
    low, high = confint_proportions_2indep(b["count"], b["n"], a["count"], a["n"], method="newcomb")
    return {"difference": b["rate"] - a["rate"], "low": float(low), "high": float(high)}


@dataclass
class _Tally:
    """Counts for one version over a set of cases."""

    n: int = 0
    decided: int = 0
    reviewed_decided: int = 0
    overridden: int = 0

    def add(self, outcome: str | None, abstained: bool, final: str | None) -> None:
        self.n += 1
        if abstained:
            return
        self.decided += 1
        if final is not None:
            self.reviewed_decided += 1
            self.overridden += int(outcome != final)

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage": _rate(self.decided, self.n),
            "abstention": _rate(self.n - self.decided, self.n),
            "override_rate": _rate(self.overridden, self.reviewed_decided),
        }


@dataclass
class _Side:
    overall: _Tally = field(default_factory=_Tally)
    segments: dict[tuple[str, str], _Tally] = field(default_factory=lambda: defaultdict(_Tally))

    def add(self, segments: dict[str, Any], outcome: str | None, abstained: bool, final: str | None) -> None:
        self.overall.add(outcome, abstained, final)
        for f, v in segments.items():
            self.segments[(f, str(v))].add(outcome, abstained, final)


def _segments(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _versus(champion: _Side, challenger: _Side, agreement: dict[Any, list[int]] | None) -> dict[str, Any]:
    def block(a: _Tally, b: _Tally, agree: list[int] | None) -> dict[str, Any]:
        ca, cb = a.to_dict(), b.to_dict()
        out = {
            "champion": ca,
            "challenger": cb,
            "coverage_difference": _difference(ca["coverage"], cb["coverage"]),
            "override_difference": _difference(ca["override_rate"], cb["override_rate"]),
        }
        if agree is not None:
            out["agreement"] = _rate(agree[0], agree[1])
        return out

    return {
        "overall": block(champion.overall, challenger.overall, agreement["*"] if agreement else None),
        "segments": [
            {
                "field": f,
                "value": v,
                **block(champion.segments[(f, v)], t, agreement[(f, v)] if agreement else None),
            }
            for (f, v), t in sorted(challenger.segments.items())
        ],
    }


def _shadow(live: dict[str, ComparedRow], shadows: Iterable[ComparedRow]) -> dict[str, Any]:
    by_version: dict[str, tuple[_Side, _Side, dict[Any, list[int]]]] = {}
    for s in shadows:
        paired = live.get(s.shadow_of or "")
        if paired is None:
            continue  # its live decision is outside the window
        champ, chall, agree = by_version.setdefault(
            s.version, (_Side(), _Side(), defaultdict(lambda: [0, 0]))
        )
        seg = _segments(paired.segments)
        champ.add(seg, paired.outcome, paired.abstained, paired.final_outcome)
        chall.add(seg, s.outcome, s.abstained, paired.final_outcome)
        same = int(paired.abstained == s.abstained and (s.abstained or paired.outcome == s.outcome))
        for key in ("*", *((f, str(v)) for f, v in seg.items())):
            agree[key][0] += same
            agree[key][1] += 1
    return {
        version: {"pairs": chall.overall.n, **_versus(champ, chall, agree)}
        for version, (champ, chall, agree) in by_version.items()
    }


def compare(db: Database, model: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Champion vs shadow (paired) and vs canary (split) in the window [start, end)."""
    n_live, n_shadow, n_versions = window_mix(db, model, iso(start), iso(end))
    if n_shadow == 0 and n_versions <= 1:
        # Nothing to compare (a canary serves another version than the champion): answered from
        # the index, without streaming every decision of a window that may hold millions.
        window = {"start": iso(start), "end": iso(end)}
        return {"model": model, "window": window, "live_decisions": n_live, "shadow": {}, "canary": None}
    live: dict[str, ComparedRow] = {}
    shadows: list[ComparedRow] = []
    for r in compared_rows(db, model, iso(start), iso(end)):
        if r.origin == LIVE:
            live[r.decision_id] = r
        else:
            shadows.append(r)
    sides: dict[str, _Side] = defaultdict(_Side)
    versions: dict[str, set[str]] = defaultdict(set)
    for r in live.values():
        alias = CANARY if r.alias == CANARY else CHAMPION
        sides[alias].add(_segments(r.segments), r.outcome, r.abstained, r.final_outcome)
        versions[alias].add(r.version)
    out: dict[str, Any] = {
        "model": model,
        "window": {"start": iso(start), "end": iso(end)},
        "live_decisions": len(live),
        "shadow": _shadow(live, shadows),
        "canary": None,
    }
    if CANARY in sides:
        out["canary"] = {
            "champion_versions": sorted(versions[CHAMPION]),
            "canary_versions": sorted(versions[CANARY]),
            "share_of_live": _rate(sides[CANARY].overall.n, len(live)),
            **_versus(sides[CHAMPION], sides[CANARY], None),
        }
    return out


def _pct(r: dict[str, Any] | None) -> str:
    if r is None or r.get("rate") is None:
        return "n/a"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] of {r['n']}"


def _diff(d: dict[str, Any] | None) -> str:
    return (
        "n/a"
        if d is None
        else f"{100 * d['difference']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    )


def compare_lines(result: dict[str, Any], top_segments: int = 8) -> list[str]:
    """The comparison as terminal lines (keel compare without --json)."""
    lines = [f"{result['model']}: {result['live_decisions']} live decisions in the window"]
    sections = [(f"shadow v{v}", body) for v, body in result["shadow"].items()]
    if result["canary"]:
        c = result["canary"]
        lines.append(
            f"canary v{', v'.join(c['canary_versions'])} served {_pct(c['share_of_live'])} live cases"
        )
        sections.append(("canary", c))
    if not sections:
        lines.append("no shadow or canary decisions in the window (keel shadow / keel canary start one)")
    for name, body in sections:
        o = body["overall"]
        lines.append(f"{name} vs champion:")
        if "agreement" in o:
            lines.append(f"  agreement (same outcome or both abstain): {_pct(o['agreement'])}")
        for label, key, diff in (("coverage", "coverage", "coverage_difference"),
                                 ("override rate", "override_rate", "override_difference")):  # fmt: skip
            lines.append(
                f"  {label:<14} champion {_pct(o['champion'][key])}; {name} {_pct(o['challenger'][key])}; "
                f"difference {_diff(o[diff])}"
            )
        for s in body["segments"][:top_segments]:
            lines.append(
                f"    {s['field']}={s['value']}: coverage {_pct(s['champion']['coverage'])} vs "
                f"{_pct(s['challenger']['coverage'])}; override {_pct(s['champion']['override_rate'])} vs "
                f"{_pct(s['challenger']['override_rate'])}"
                + (f"; agreement {_pct(s['agreement'])}" if "agreement" in s else "")
            )
    return lines
