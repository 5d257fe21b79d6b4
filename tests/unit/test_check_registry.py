"""The check registry: a check declared in a test-only module reaches every output, and segment
findings inside another (entity inside region) are shown under it, not beside it as a repeat."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from keel.decision_log.database import Database
from keel.errors import Conflict, NotFound
from keel.feature_defs.contract import load_contract
from keel.monitoring import checks
from keel.monitoring.checks import BUILT_IN, Check
from keel.monitoring.drift import DriftConfig
from keel.monitoring.evidence import Evidence
from keel.monitoring.monitor import MonitorResult, assess
from keel.monitoring.publish import publish
from keel.monitoring.report import ReportSections, write_report
from keel.monitoring.segments import segment_parents
from keel.monitoring.settings import MonitorSettings
from keel.monitoring.verdict import Verdict, exit_code
from keel.settings import StateSettings
from tests.conftest import Store
from tests.unit.reviewed_volume_check import REVIEWED_VOLUME

MODEL = "routing"
ENTITIES = {
    "NA": ("US01", "CA01"),
    "EMEA": ("DE01", "GB01"),
    "APAC": ("JP01", "AU01"),
    "LATAM": ("BR01", "MX01"),
}
WINDOW = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-08T00:00:00+00:00"}
SUMMARY_KEYS = {
    "model", "generated_at", "status", "window", "versions", "counts", "thresholds", "verdicts",
    "recommendation", "feature_drift", "prediction_drift", "explanation_drift", "overrides", "quality",
    "process_drift", "segment_mix", "concept_drift", "expected_quality", "sequential", "challengers",
    "reviewed_caveat", "notes", "evidently_reports",
    "audit", "detection_limits",  # issue 23: audited estimates and stated detection limits (added keys)
    "consistency",  # issue 25: the counterfactual audit (added key)
    "workload",  # issue 24: the review queue, time to feedback and override pairs the console reads
}  # fmt: skip
_ids = count()


def reviewed_frame() -> pd.DataFrame:
    """300 reviewed decided cases per entity at confidence 0.85; EMEA's two entities are
    overridden 25% of the time, every other entity 5%. Channel and product line cut across."""
    rows: list[dict[str, Any]] = []
    for region, entities in ENTITIES.items():
        for entity in entities:
            overrides = 75 if region == "EMEA" else 15
            for i in range(300):
                said = ("finance_ap", "legal")[i % 2]
                overridden = i < overrides
                rows.append({
                    "decision_id": f"d{next(_ids)}", "created_at": "2026-01-02T00:00:00+00:00",
                    "model_version": "1", "outcome": said, "abstained": False, "confidence": 0.85,
                    "most_likely": said, "final_outcome": "sales_ops" if overridden else said,
                    "kind": "override" if overridden else "confirmation", "reason": None, "actor": "rev",
                    "channel": ("email", "portal")[i % 2], "product_line": ("a", "b", "c")[i % 3],
                    "region": region, "entity": entity,
                })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    frame, settings = reviewed_frame(), MonitorSettings()
    contract = load_contract(MODEL)
    # The window is its own reference: nothing arrives differently, only reviewers differ.
    return assess(contract, 0.05, frame, frame, frame, settings, DriftConfig(), drift=False)


@pytest.fixture
def reviewed_volume() -> Iterator[Check]:
    check = checks.register(REVIEWED_VOLUME)
    try:
        yield check
    finally:
        checks.unregister(check.name)


def _sections(verdicts: list[Verdict], ev: Evidence) -> ReportSections:
    return ReportSections(
        window=WINDOW,
        verdicts=verdicts,
        recommendation=checks.recommendation(verdicts),
        process_drift=ev.process.to_dict(),
        concept_drift=ev.concept.to_dict(),
        segment_parents=ev.parents,
    )


def test_a_check_from_a_test_module_reaches_every_output(
    evidence: Evidence, reviewed_volume: Check, tmp_path: Path, store: Store
) -> None:
    settings = MonitorSettings(prometheus_file=str(tmp_path / "keel.prom"))
    verdicts = checks.evaluate(evidence, settings)
    assert verdicts[-1] == Verdict(
        "reviewed_volume", "warn", 2400.0, 5000.0, 100.0, "2400 reviewed decided cases in the window"
    )
    assert [v.check for v in verdicts[:-1]] == [
        c.name for c in BUILT_IN if c.name in {v.check for v in verdicts}
    ]

    sections = _sections(verdicts, evidence)
    paths = write_report(tmp_path / MODEL / "run", MODEL, sections)
    page = paths.index_html.read_text()
    assert '<td>Reviewed decided cases in the window</td><td class="warn">warn</td><td>2400</td>' in page
    assert (
        "<b>Reviewed decided cases in the window</b>: 2400 reviewed decided cases" in page
    )  # needs attention
    assert "What to do: ask the review leads to confirm or correct a sample" in page

    summary = json.loads(paths.summary_json.read_text())
    assert set(summary) == SUMMARY_KEYS  # the registry and nesting add nothing to summary.json's shape
    assert all(set(v) == {"check", "status", "value", "warn", "alert", "detail"} for v in summary["verdicts"])
    assert summary["verdicts"][-1] == verdicts[-1].to_dict()

    result = MonitorResult(
        MODEL, sections.status, exit_code(verdicts), sections.recommendation, verdicts, paths,
        {"window": WINDOW, "decisions": 2400},
    )  # fmt: skip
    db = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
    db.create_schema()
    assert publish([result], tmp_path, settings, db, StateSettings().artifact_location) == []
    prom = (tmp_path / "keel.prom").read_text()
    assert 'keel_monitor_check_status{check="reviewed_volume",model="routing"} 1.0' in prom
    trend = (tmp_path / MODEL / "trend.html").read_text()
    assert '<th title="Reviewed decided cases in the window">reviewed volume</th>' in trend
    assert trend.index("process drift") < trend.index("reviewed volume")  # registry order


def test_registration_is_checked_and_undone(evidence: Evidence) -> None:
    assert [c.name for c in checks.registered()] == [c.name for c in BUILT_IN]  # the fixture undid its own
    assert "reviewed_volume" not in {v.check for v in checks.evaluate(evidence, MonitorSettings())}
    with pytest.raises(Conflict):
        checks.register(BUILT_IN[1])
    with pytest.raises(NotFound, match="no_such_setting"):
        checks.register(Check("x", "X", "higher_is_worse", "no_such_setting", "number", "", None))
    with pytest.raises(NotFound):
        checks.unregister("reviewed_volume")


def test_entities_nest_under_their_region() -> None:
    parents = segment_parents(reviewed_frame(), ["channel", "product_line", "region", "entity"])
    assert parents == {("entity", e): ("region", r) for r, entities in ENTITIES.items() for e in entities}


def test_an_entity_finding_is_shown_under_its_region(evidence: Evidence, tmp_path: Path) -> None:
    flagged = {(f.field, f.value) for f in evidence.process.flagged}
    assert {("region", "EMEA"), ("entity", "DE01"), ("entity", "GB01")} <= flagged  # all three found
    verdicts = {v.check: v for v in checks.evaluate(evidence, MonitorSettings())}
    process = verdicts["process_drift"].detail
    # One finding, the region's, with its entities under it; not three findings side by side.
    assert process.startswith("EMEA (region): override rate ")
    assert re.search(r" — within EMEA: entity (DE01|GB01) \d+\.\d× the rest, entity (DE01|GB01) ", process)
    assert (
        "(entity)" not in process and process.count("; ") == process.count("; ") and "DE01 (" not in process
    )
    concept = verdicts["concept_drift"].detail
    assert concept.startswith("region EMEA: 25.0% of 600 reviewed decided cases overturned")
    assert "— within EMEA: entity DE01 25.0% overturned, entity GB01 25.0% overturned" in concept
    assert "entity DE01: " not in concept

    page = write_report(tmp_path, MODEL, _sections(list(verdicts.values()), evidence)).index_html.read_text()
    rows = re.findall(r"<tr class=\"warn\"><td>\d+</td><td>(.*?)</td>", page)
    emea = rows.index("region = EMEA")
    within = re.compile(
        r'<span class="within">↳ entity = (DE01|GB01)</span> <span class="muted">\(in region EMEA\)</span>'
    )
    assert all(within.fullmatch(r) for r in rows[emea + 1 : emea + 3]), rows
    assert not any("entity = DE01" in r or "entity = GB01" in r for r in rows[emea + 3 :]), rows


def test_decision_consistency_is_judged_on_fields_declared_invariant(evidence: Evidence) -> None:
    from dataclasses import replace as with_

    from keel.models.consistency_report import summarise
    from keel.models.counterfactual import Construction, Flips

    settings = MonitorSettings()
    assert "decision_consistency" not in {v.check for v in checks.evaluate(evidence, settings)}

    n = 400
    table = pd.DataFrame(
        {
            "field": "region", "from": "NA", "to": "EMEA", "case": [f"c{i}" for i in range(n)],
            "outcome": np.arange(n) < 40, "route": False, "abstention": False,
        }
    )  # fmt: skip
    flips = [
        Flips("1", n, table, pd.DataFrame(columns=["field", "from", "to", "feature", "abs_change", "n"]))
    ]

    def verdict(tolerance: float | None) -> Any:
        found = [
            Construction("region", True, ("read",), (), tolerance),
            Construction("entity", False, (), (), None),
        ]
        report = summarise(MODEL, "decision_log", "", flips, found)
        (v,) = [
            v
            for v in checks.evaluate(with_(evidence, consistency=report), settings)
            if v.check == "decision_consistency"
        ]
        return v

    assert verdict(0.02).status == "alert" and "region is declared invariant" in verdict(0.02).detail
    assert verdict(0.2).status == "ok"
    undeclared = verdict(None)
    assert undeclared.status == "ok" and "no measured field is declared invariant" in undeclared.detail
    assert (
        "region: 10.0% of 400 cases" in undeclared.detail
        and "entity invariant by construction" in undeclared.detail
    )
    # Reviewer agreement is stated in the detail, not judged: the verdict stays on invariances.
    from keel.monitoring.reviewer_agreement import agreement_report

    rng = np.random.default_rng(4)
    first = rng.choice(list("abcd"), 600)
    emea = np.arange(600) % 2 == 0
    second = np.where(emea & (rng.random(600) < 0.5), rng.choice(list("abcd"), 600), first)
    pairs = pd.DataFrame({"first": first, "second": second, "source": "duplicate_case",
                          "region": np.where(emea, "EMEA", "NA")})  # fmt: skip
    report = summarise(MODEL, "decision_log", "", flips, [Construction("region", True, ("read",), (), None)])
    report.reviewers = agreement_report(pairs, ["region"]).to_dict()
    (stated,) = [
        v
        for v in checks.evaluate(with_(evidence, consistency=report), settings)
        if v.check == "decision_consistency"
    ]
    assert stated.status == "ok" and "region EMEA: reviewers of the same case agree less" in stated.detail
    report.reviewers = agreement_report(pairs[~emea], ["region"]).to_dict()
    (calm,) = [
        v
        for v in checks.evaluate(with_(evidence, consistency=report), settings)
        if v.check == "decision_consistency"
    ]
    assert "reviewers of the same case: kappa" in calm.detail and "agree less" not in calm.detail
    broken = [v for v in checks.evaluate(with_(evidence, consistency_problem="KeyError: 'x'"), settings)]
    assert [v.status for v in broken if v.check == "decision_consistency"] == ["no_data"]
