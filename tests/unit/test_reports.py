"""The monitoring report (Evidently pages, index.html, summary.json) and the one-decision page."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from keel.feature_defs.contract import load_contract
from keel.feature_defs.policy import load_policy
from keel.models.decision_model import DecisionModel
from keel.models.frames import reference_frame
from keel.models.registry import LoadedModel, VersionRef
from keel.monitoring.checks import recommendation
from keel.monitoring.drift import DriftConfig, explanation_drift, feature_drift, prediction_drift
from keel.monitoring.explain_report import render_decision
from keel.monitoring.report import SECTION_HEADINGS, ReportSections, add_to_workspace, write_report
from keel.monitoring.verdict import judge
from keel.serving.decider import Decider
from keel.serving.model_set import ModelSet, Served
from keel.serving.settings import ServingSettings
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.settings import TrainingSettings
from tests.conftest import Store

MODEL = "routing"
HOSTILE = "<script>alert('x')</script>"


@dataclass
class Setup:
    model: DecisionModel
    sections: ReportSections


def _overrides() -> dict[str, Any]:
    """The shape `monitoring.overrides.OverrideReport.to_dict()` produces, with hostile text."""

    def rate(count: int, n: int) -> dict[str, Any]:
        return {
            "count": count,
            "n": n,
            "rate": count / n,
            "low": count / n / 2,
            "high": min(1, 2 * count / n),
        }

    return {
        "n_reviewed": 400,
        "n_reviewed_decided": 300,
        "n_labels": 100,
        "overall": rate(30, 300),
        "by_class": {"legal": rate(10, 100), "finance_ap": rate(20, 200)},
        "by_segment": {"region": {"NA": rate(5, 150), "EMEA": rate(25, 150), HOSTILE: rate(1, 10)}},
        "by_version": {"1": rate(30, 300)},
        "top_pairs": [{"model_outcome": "legal", "final_outcome": "finance_ap", "count": 12, "share": 0.4}],
        "top_reasons": [{"reason": HOSTILE, "count": 3}],
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    out: Path = tmp_path_factory.mktemp("reports") / "bundle"
    settings = TrainingSettings(rows=6000, num_boost_round=80)
    result = train(load_contract(MODEL), generate(MODEL, 6000, 0), out, settings)
    model = DecisionModel.load(result.bundle_dir)
    reference = reference_frame(model, "1", pd.read_parquet(result.bundle_dir / "reference.parquet"), None)
    current = reference_frame(model, "1", generate(MODEL, 1000, seed=5, scenario="covariate_shift"), None)
    cfg = DriftConfig()
    features = feature_drift(reference, current, model.contract, cfg)
    verdicts = [
        judge("feature_drift", features.drifted_share, (0.2, 0.4), "share of drifted features"),
        judge("override_rate", 0.1, (0.08, 0.15), f"detail with {HOSTILE}"),
        judge("reviewed_accuracy", None, (0.9, 0.8), "too few reviewed cases", higher_is_worse=False),
    ]
    sections = ReportSections.from_results(
        feature=features,
        prediction=prediction_drift(reference, current, model.classes, cfg),
        explanation=explanation_drift(reference, current, model.contract, cfg),
        verdicts=verdicts,
        recommendation=recommendation(verdicts),
        window={"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-08T00:00:00+00:00"},
        versions={"reference": "1", "in_window": ["1"]},
        counts={"decisions": 1000, "sampled_rows": 1000, "reference_rows": len(reference)},
        thresholds={"feature_drift_share": [0.2, 0.4]},
        overrides=_overrides(),
        quality={
            "n_reviewed": 400,
            "accuracy": {"count": 360, "n": 400, "rate": 0.9, "low": 0.87, "high": 0.93},
        },
        process_drift={
            "findings": [
                {
                    "sentence": f"region={HOSTILE} overrides 3x more",
                    "p_value": 0.001,
                    "significant": True,
                    "field": "region",
                    "value": HOSTILE,
                    "bands": [{"band": "0.8-0.9", "n": 40, "events": 9}],
                },
                {"sentence": "channel=email is like the rest", "p_value": 0.6, "significant": False},
            ]
        },
        notes=["Drift parts use a sample of 1,000 of the window's decisions."],
    )
    return Setup(model, sections)


def test_report_files_sections_escaping_and_summary(setup: Setup, tmp_path: Path) -> None:
    paths = write_report(tmp_path / "out", MODEL, setup.sections)
    assert set(paths.evidently) == {"feature_drift", "prediction_drift", "explanation_drift"}
    assert all(p.stat().st_size > 100_000 for p in paths.evidently.values())  # Evidently's own pages
    page = paths.index_html.read_text()
    for heading in SECTION_HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert "<script" not in page.lower()  # the page runs no script at all, hostile text is inert
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 3  # outcomes, SHAP, override CIs
    for file in ("feature_drift.html", "prediction_drift.html", "explanation_drift.html"):
        assert f'href="{file}"' in page
    assert "not a random sample" in page and "2026-01-08" in page

    summary = json.loads(paths.summary_json.read_text())
    assert [v["check"] for v in summary["verdicts"]] == [
        "feature_drift",
        "override_rate",
        "reviewed_accuracy",
    ]
    assert summary["verdicts"][1]["detail"].endswith(HOSTILE)  # JSON keeps the raw text
    rank = ["no_data", "ok", "warn", "alert"]
    assert summary["status"] == max((v["status"] for v in summary["verdicts"]), key=rank.index) != "ok"
    assert summary["feature_drift"]["current_rows"] == 1000 and "snapshot" not in summary["feature_drift"]
    assert summary["evidently_reports"]["feature_drift"] == "feature_drift.html"
    assert summary["window"]["start"].startswith("2026-01-01")


def test_empty_sections_still_render(tmp_path: Path) -> None:
    paths = write_report(tmp_path, MODEL, ReportSections(recommendation="no action"))
    page = paths.index_html.read_text()
    assert all(f"<h2>{h}</h2>" in page for h in SECTION_HEADINGS)
    assert json.loads(paths.summary_json.read_text())["status"] == "no_data"


def test_workspace_runs(setup: Setup, tmp_path: Path) -> None:
    first = add_to_workspace(tmp_path / "ws", "keel-routing", setup.sections.snapshots)
    second = add_to_workspace(tmp_path / "ws", "keel-routing", setup.sections.snapshots)
    assert len(first) == len(second) == 3 and not set(first) & set(second)
    assert len(list((tmp_path / "ws").glob("*/snapshots/*.json"))) == 6  # one project, six runs


def _decisions(model: DecisionModel, n: int) -> list[dict[str, Any]]:
    """Records exactly as the service logs them: the real decider path, without HTTP or a log."""
    frame = generate(MODEL, n, seed=3)
    cases = json.loads(frame[model.contract.field_names].to_json(orient="records"))
    cases[0]["case_id"] = HOSTILE
    ref = VersionRef(MODEL, "1", "champion", {}, None)
    served = Served(LoadedModel(ref, model), load_policy(MODEL))
    models = ModelSet("champion", Path("."), names=(MODEL,))  # nothing loaded: no shadow or canary
    decider = Decider(models, cast(Any, None), ServingSettings(), cast(Any, None))
    matrix = model.contract.validate_records(cases).matrix
    assert matrix is not None
    return decider._decide_valid(served, cases, matrix)


def test_decision_page_has_waterfall_inputs_and_feedback(setup: Setup, tmp_path: Path) -> None:
    record = _decisions(setup.model, 3)[0]
    feedback = [{"decision_id": record["decision_id"], "final_outcome": "legal", "kind": "override",
                 "actor": "rev-1", "reason": HOSTILE, "created_at": "2026-01-02T00:00:00+00:00"}]  # fmt: skip
    page = render_decision(record, feedback, tmp_path / "d.html").read_text()
    assert "src='data:image/png;base64," in page and "SHAP waterfall" in page
    for name, value in record["inputs"].items():
        if name != "case_id":
            assert f"<th>{name}</th>" in page or f"<td>{name}</td>" in page
            shown = value if isinstance(value, str) else json.dumps(value)  # exactly as received
            assert f"<td>{shown}</td>" in page
    assert record["versions"]["policy_version"] in page and "rev-1" in page
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    unexplained = dict(record, explanation_full=None, explanation=None, explanation_status="unavailable")
    page = render_decision(unexplained, [], tmp_path / "u.html").read_text()
    assert "Explanation unavailable" in page and "data:image/png" not in page


def _result(tmp_path: Path, status: str) -> Any:
    from keel.monitoring.monitor import MonitorResult
    from keel.monitoring.report import ReportPaths
    from keel.monitoring.verdict import Verdict

    verdicts = [
        Verdict("segment_mix", status, 2.1, 1.25, 2.0, f"channel {HOSTILE}: 20% vs 10%"),  # type: ignore[arg-type]
        Verdict("process_drift", "ok", 0.0, 1.5, 2.5, "no segment differs"),
    ]
    folder = tmp_path / "report"
    folder.mkdir(exist_ok=True)
    paths = ReportPaths(folder, folder / "index.html", folder / "summary.json")
    window = {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T01:00:00+00:00"}
    return MonitorResult(MODEL, status, 2 if status == "alert" else 0, "investigate: segment mix", verdicts,
                         paths, {"window": window, "decisions": 3000})  # fmt: skip


def test_history_trend_page_and_prometheus_textfile(tmp_path: Path, store: Store) -> None:
    from keel.decision_log import outbox
    from keel.decision_log.database import Database
    from keel.events.catalog import MONITOR_VERDICT
    from keel.monitoring.publish import publish
    from keel.monitoring.runs import runs as recorded_runs
    from keel.monitoring.settings import MonitorSettings
    from keel.settings import StateSettings

    db = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
    db.create_schema()
    artifacts = StateSettings().artifact_location
    prom = tmp_path / "keel.prom"
    settings = MonitorSettings(prometheus_file=str(prom))
    for status in ("ok", "alert"):
        assert publish([_result(tmp_path, status)], tmp_path, settings, db, artifacts) == []
    runs = list(reversed(recorded_runs(db, MODEL)))
    segment_mix = next(v for v in runs[1].verdicts if v["check"] == "segment_mix")
    assert [r.status for r in runs] == ["ok", "alert"] and segment_mix["value"] == 2.1
    trend = (tmp_path / MODEL / "trend.html").read_text()
    assert trend.index(">alert<") < trend.index(">ok<")  # newest run first
    assert "segment mix" in trend and "<script" not in trend.lower()
    text = prom.read_text()
    assert 'keel_monitor_check_status{check="segment_mix",model="routing"} 2.0' in text
    assert 'keel_monitor_check_status{check="process_drift",model="routing"} 0.0' in text
    assert "# TYPE keel_monitor_check_status gauge" in text
    # Each run's verdict is an event in the outbox (for every sink, the monitor webhook among
    # them), staged with its row; the monitor itself posts nothing.
    staged = outbox.listing(db)
    assert [e["type"] for e in staged] == [MONITOR_VERDICT] * 2
    assert [e["data"]["status"] for e in staged] == ["alert", "ok"]  # newest first
    assert {e["subject"] for e in staged} == {r.run_id for r in runs}
