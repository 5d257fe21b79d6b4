"""LogReader on real decision logs (SQLite and PostgreSQL) written by the real decision path.

A real registered model decides generated cases through `serving.decider.Decider`, which
writes through `DecisionLog.append`; reviewers' verdicts go through `Decider.feedback`. Every
number the reader returns is then checked against what the decider handed back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from keel.cli.simulate import case_payloads
from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from keel.feature_defs.contract import load_contract
from keel.monitoring.log_reader import LogReader
from keel.monitoring.overrides import override_report
from keel.monitoring.process_drift import process_drift
from keel.monitoring.quality import quality_report
from keel.monitoring.stats import band_index
from keel.serving.decider import Decider
from keel.serving.metrics import Metrics
from keel.serving.model_set import ModelSet
from keel.serving.settings import ServingSettings
from keel.training.generators import generate
from tests.conftest import Store, fresh_postgres_database

MODEL = "discount_band"
BANDS = [0.0, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0001]
CONTRACT = load_contract(MODEL)
SEGMENTS = CONTRACT.segment_fields


@dataclass
class Written:
    """What was written, as the decider reported it; the window is [start, end)."""

    db: Database
    start: datetime
    end: datetime
    window: list[dict[str, Any]]  # public decision records in the window, in write order
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # decision_id -> input case
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # decision_id -> last feedback
    feedback_rows: int = 0  # feedback rows on window decisions, revisions included


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('lr') / 'decisions.db'}"
        return
    with fresh_postgres_database("keel_lr") as url:
        yield url


def _pause() -> datetime:
    """A moment strictly between the decisions written before and after it."""
    time.sleep(0.003)
    moment = datetime.now(UTC)
    time.sleep(0.003)
    return moment


@pytest.fixture(scope="module")
def written(log_url: str, store: Store, registered: dict[str, str]) -> Iterator[Written]:
    models = ModelSet("champion", store.home / "cache", names=(MODEL, "routing"))
    assert not models.reload().failed
    log = DecisionLog(Database(log_url)).open()
    decider = Decider(models, log, ServingSettings(), Metrics())
    frame = generate(MODEL, 900, seed=11)
    payloads, truth = case_payloads(frame, CONTRACT), list(frame[CONTRACT.target])
    routing = case_payloads(generate("routing", 60, seed=5), load_contract("routing"))
    try:
        before = decider.decide(MODEL, payloads[:150], "wf")
        start = _pause()
        window: list[dict[str, Any]] = []
        for lo in (150, 350, 550):  # three requests inside the window, another model between them
            window += decider.decide(MODEL, payloads[lo : lo + 200], "wf")
            other = decider.decide("routing", routing[(lo - 150) // 10 : (lo - 150) // 10 + 20], "wf")
        end = _pause()
        decider.decide(MODEL, payloads[750:], "wf")
        w = Written(Database(log_url), start, end, window)
        w.cases = {r["decision_id"]: payloads[150 + i] for i, r in enumerate(window)}
        for i, rec in enumerate(window):
            _review(decider, w, i, rec, truth[150 + i])
        # Feedback on decisions outside the window or of another model must not count.
        decider.feedback(before[0]["decision_id"], CONTRACT.classes[0], "rev-x", "outside", "wf")
        decider.feedback(other[0]["decision_id"], "legal", "rev-x", "other model", "wf")
        yield w
    finally:
        log.close()


def _review(decider: Decider, w: Written, i: int, rec: dict[str, Any], truth: str) -> None:
    """Reviewers label every abstention and half of the decided cases; EMEA's reviewers also
    override every third case they see; every tenth reviewed case is first confirmed, then revised."""
    did, outcome = rec["decision_id"], rec["outcome"]
    if not rec["abstained"] and i % 2:
        return
    final = truth
    if not rec["abstained"] and w.cases[did]["region"] == "EMEA" and i % 3 == 0:
        final = next(c for c in CONTRACT.classes if c not in (outcome, truth))
    if not rec["abstained"] and i % 10 == 0:
        decider.feedback(did, outcome, "rev-1", "looks right", "wf")
        w.feedback_rows += 1
        final = next(c for c in CONTRACT.classes if c != outcome)
    stored, created = decider.feedback(did, final, f"rev-{i % 3}", f"reason {i % 4}", "wf")
    assert created
    w.latest[did] = stored
    w.feedback_rows += 1


def test_summary_counts_match_what_was_decided(written: Written) -> None:
    s = LogReader(written.db).summary(MODEL, written.start, written.end)
    window = written.window
    decided = [r for r in window if not r["abstained"]]
    assert s.n_decisions == 600 and s.n_abstained == 600 - len(decided) and s.n_decided == len(decided)
    assert s.n_policy_intervened == sum(1 for r in window if r["rules_fired"]) > 0
    assert s.n_policy_routed == sum(1 for r in decided if r["route"] != "auto") > 0
    assert s.outcomes == dict(Counter(r["outcome"] for r in decided))
    assert s.routes == dict(Counter(r["route"] for r in window))
    assert s.model_versions == {window[0]["versions"]["model_version"]: 600}
    assert (s.first_at, s.last_at) == (window[0]["created_at"], window[-1]["created_at"])
    assert s.feedback_by_kind == dict(Counter(f["kind"] for f in written.latest.values()))
    assert s.n_feedback_rows == written.feedback_rows
    assert 0 < s.feedback_by_kind["override"] < s.n_decided and s.feedback_by_kind["label"] > 0
    wide = LogReader(written.db).summary(
        MODEL, written.start - timedelta(hours=1), written.end + timedelta(hours=1)
    )
    assert wide.n_decisions == 900 and wide.n_feedback_rows == written.feedback_rows + 1
    with pytest.raises(ValueError, match="timezone-aware"):
        LogReader(written.db).summary(MODEL, written.start.replace(tzinfo=None), written.end)


def test_sample_is_systematic_and_carries_latest_feedback(written: Written) -> None:
    reader = LogReader(written.db)
    every, total = reader.sample(MODEL, written.start, written.end, CONTRACT, n=1000)
    assert total == 600 and list(every["decision_id"]) == [r["decision_id"] for r in written.window]
    some, total = reader.sample(MODEL, written.start, written.end, CONTRACT, n=50)
    expected = written.window[::12]  # k = ceil(600 / 50)
    assert total == 600 and list(some["decision_id"]) == [r["decision_id"] for r in expected]
    for row, rec in zip(some.itertuples(index=False), expected, strict=True):
        case, fb = written.cases[rec["decision_id"]], written.latest.get(rec["decision_id"], {})
        assert (row.outcome, row.abstained, row.route, row.region) == (
            rec["outcome"], rec["abstained"], rec["route"], case["region"],
        )  # fmt: skip
        assert row.confidence == rec["confidence"] and row.most_likely == rec["explanation"]["class"]
        assert row.policy_intervened == bool(rec["rules_fired"])
        assert (row.final_outcome, row.feedback_kind, row.feedback_reason) == (
            fb.get("final_outcome"), fb.get("kind"), fb.get("reason"),
        )  # fmt: skip
        assert row.list_price_arr == pytest.approx(case["list_price_arr"])
    top = rec["explanation"]["contributions"][0]
    assert some.iloc[-1][f"shap__{top['feature']}"] == pytest.approx(top["contribution"])


def test_reviewed_holds_every_reviewed_decision_with_segments_from_sql(written: Written) -> None:
    got = LogReader(written.db).reviewed(MODEL, written.start, written.end, SEGMENTS)
    assert sorted(got["decision_id"]) == sorted(written.latest)
    assert list(got.columns[-len(SEGMENTS) :]) == SEGMENTS
    by_id = {r["decision_id"]: r for r in written.window}
    for row in got.to_dict(orient="records"):
        rec, fb, case = (
            by_id[row["decision_id"]],
            written.latest[row["decision_id"]],
            written.cases[row["decision_id"]],
        )
        assert (row["outcome"], row["abstained"], row["confidence"]) == (
            rec["outcome"], rec["abstained"], rec["confidence"],
        )  # fmt: skip
        assert row["most_likely"] == rec["explanation"]["class"]
        assert row["model_version"] == rec["versions"]["model_version"]
        assert (row["final_outcome"], row["kind"], row["reason"], row["actor"]) == (
            fb["final_outcome"], fb["kind"], fb["reason"], fb["actor"],
        )  # fmt: skip
        assert {s: row[s] for s in SEGMENTS} == {s: case[s] for s in SEGMENTS}
    overrides = override_report(got, SEGMENTS)
    assert overrides.overall.count == sum(1 for f in written.latest.values() if f["kind"] == "override")
    assert overrides.n_labels == sum(1 for f in written.latest.values() if f["kind"] == "label")
    assert quality_report(got, SEGMENTS).n_reviewed == len(written.latest)


def test_decided_by_segment_counts_bands_in_sql_like_python(written: Written) -> None:
    reader = LogReader(written.db)
    got = reader.decided_by_segment(MODEL, written.start, written.end, SEGMENTS, BANDS)
    decided = [r for r in written.window if not r["abstained"]]
    bands = band_index([r["confidence"] for r in decided], BANDS)
    expected: Counter[tuple[str, str, int, str]] = Counter()
    for rec, band in zip(decided, bands, strict=True):
        for s in SEGMENTS:
            key = (s, written.cases[rec["decision_id"]][s], int(band))
            expected[(*key, "n")] += 1
            expected[(*key, "intervened")] += bool(rec["rules_fired"])
            expected[(*key, "routed")] += rec["route"] != "auto"
    actual: Counter[tuple[str, str, int, str]] = Counter()
    for r in got.itertuples(index=False):
        key = (r.field, r.value, r.band)
        actual.update(
            {(*key, "n"): r.n_decided, (*key, "intervened"): r.n_intervened, (*key, "routed"): r.n_routed}
        )
    assert +actual == +expected
    assert got.groupby("field")["n_decided"].sum().to_dict() == {s: len(decided) for s in SEGMENTS}
    report = process_drift(
        reader.reviewed(MODEL, written.start, written.end, SEGMENTS), SEGMENTS, BANDS, got, 20
    )
    assert report.n_tests > 0 and all(0 <= f.p_holm <= 1 for f in report.findings)


def test_an_empty_window_reads_as_empty(written: Written) -> None:
    reader = LogReader(written.db)
    early = written.start - timedelta(days=30), written.start - timedelta(days=29)
    s = reader.summary(MODEL, *early)
    assert (s.n_decisions, s.first_at, s.feedback_by_kind, s.n_feedback_rows) == (0, None, {}, 0)
    sample, total = reader.sample(MODEL, *early, CONTRACT, n=100)
    assert total == 0 and sample.empty
    assert reader.reviewed(MODEL, *early, SEGMENTS).empty
    assert reader.decided_by_segment(MODEL, *early, SEGMENTS, BANDS).empty
    assert isinstance(reader.reviewed(MODEL, *early, SEGMENTS), pd.DataFrame)


def test_rows_logged_before_the_monitoring_columns_read_the_same(written: Written) -> None:
    """Logs migrated from before `segments`/`intervened` existed hold NULL / 0 there; the reader
    then takes both from the record. Kept last in the module: it rewrites half the rows so."""
    reader = LogReader(written.db)

    def readings() -> tuple[Any, ...]:
        reviewed = reader.reviewed(MODEL, written.start, written.end, SEGMENTS)
        by_segment = reader.decided_by_segment(MODEL, written.start, written.end, SEGMENTS, BANDS)
        return (
            reader.summary(MODEL, written.start, written.end).to_dict(),
            reviewed.sort_values("decision_id").reset_index(drop=True),
            by_segment.sort_values(["field", "value", "band"]).reset_index(drop=True),
        )

    before = readings()
    conn = written.db.connect()
    try:
        changed = conn.execute(
            "UPDATE decisions SET segments = NULL, intervened = 0 WHERE seq - (seq / 2) * 2 = 0"
        ).rowcount
        conn.commit()
    finally:
        conn.close()
    assert changed > 300
    after = readings()
    assert after[0] == before[0]
    pd.testing.assert_frame_equal(after[1], before[1])
    pd.testing.assert_frame_equal(after[2], before[2])
