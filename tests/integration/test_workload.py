"""The review workload a monitor run stores for the console (keel.monitoring.workload), on real
SQLite and PostgreSQL logs filled through the bulk loader with cases whose every number is known:
the queue at the window's end, time to first feedback and override pairs with their reasons."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keel.decision_log import Database
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.search import DecisionQuery, search
from keel.monitoring.log_reader import LogReader
from keel.monitoring.run_history import trend_point
from keel.monitoring.workload import workload
from tests.conftest import fresh_postgres_database
from tests.integration.test_bulk_load import decision

T0 = datetime(2026, 11, 2, tzinfo=UTC)
END = T0 + timedelta(hours=10)
SELECTED = {"selected": True, "probability": 0.05, "pool": "local", "plan": 0}
NOT_SELECTED = {"selected": False, "probability": 0.05, "pool": None, "plan": 0}


def _decision(
    i: int, hours: float, route: str, region: str, audit: dict[str, Any], origin: str = "live"
) -> Any:
    base = decision(i)
    decision_id = str(uuid.uuid4())
    record = {**base["record"], "decision_id": decision_id, "audit": audit}
    return {
        **base,
        "decision_id": decision_id,
        "created_at": (T0 + timedelta(hours=hours)).isoformat(),
        "caller": "svc",
        "idempotency_key": None,
        "request_hash": None,
        "outcome": "finance_ap",
        "abstained": False,
        "route": route,
        "segments": f'{{"region":"{region}"}}',
        "origin": origin,
        "record": record,
    }


def _feedback(row: dict[str, Any], hours: float, final: str, reason: str | None) -> dict[str, Any]:
    kind = "override" if final != row["outcome"] else "confirmation"
    at = (T0 + timedelta(hours=hours)).isoformat()
    feedback_id = str(uuid.uuid4())
    record = {"feedback_id": feedback_id, "decision_id": row["decision_id"], "final_outcome": final,
              "kind": kind, "actor": "rita", "reason": reason, "created_at": at}  # fmt: skip
    return {
        "feedback_id": feedback_id, "decision_id": row["decision_id"], "model": "routing", "created_at": at,
        "caller": "svc", "actor": "rita", "final_outcome": final, "kind": kind, "record": record,
    }  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Database, dict[str, dict[str, Any]]]]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'decisions.db'}"
        else:
            url = stack.enter_context(fresh_postgres_database("keel_t_workload"))
        db = Database(url)
        stack.callback(db.dispose)
        yield db, _fill(db)


def _fill(db: Database) -> dict[str, dict[str, Any]]:
    rows = {
        "open_old": _decision(1, 0, "review", "EMEA", NOT_SELECTED),  # waits 10 h at the end
        "open_new": _decision(2, 9.5, "review", "EMEA", NOT_SELECTED),  # 30 min
        "audited": _decision(3, 5, "auto", "NA", SELECTED),  # route auto, selected: 5 h
        "auto": _decision(4, 1, "auto", "NA", NOT_SELECTED),  # nobody's queue
        "answered": _decision(5, 2, "review", "NA", NOT_SELECTED),  # answered after 1 h
        "late": _decision(6, 8, "review", "EMEA", NOT_SELECTED),  # answered after the window's end
        "revised": _decision(7, 4, "auto", "EMEA", NOT_SELECTED),  # confirmed, then overridden
        "shadow": _decision(8, 3, "review", "EMEA", NOT_SELECTED, origin="shadow"),  # not live
        "after": _decision(9, 12, "review", "EMEA", NOT_SELECTED),  # outside the window
    }
    loader = BulkLoader(db)
    loader.load("decisions", list(rows.values()))
    loader.load("feedback", [
        _feedback(rows["answered"], 3, "legal", "wrong queue"),
        _feedback(rows["late"], 11, "finance_ap", None),
        _feedback(rows["revised"], 4 + 1 / 6, "finance_ap", None),
        _feedback(rows["revised"], 5, "procurement", "late change"),
    ])  # fmt: skip
    return rows


@pytest.mark.postgres
def test_queue_answer_times_and_override_pairs_at_the_window_end(
    log: tuple[Database, dict[str, dict[str, Any]]],
) -> None:
    db, rows = log
    reader = LogReader(db)
    reviewed = reader.reviewed("routing", T0, END, ["region"])
    found = workload(reader, "routing", T0, END, ["region"], reviewed)

    queue = found["queue"]
    assert queue["open"] == 4  # two waiting reviews, the audited auto case, the one answered later
    # ages 1800, 7200, 18000, 36000 s: nearest rank p50 is the 2nd, p90 the 4th
    assert queue["age_seconds"] == {"p50": 7200.0, "p90": 36000.0, "max": 36000.0}
    assert queue["by_age"] == {"under 1 hour": 1, "1 to 24 hours": 3, "1 to 7 days": 0, "over 7 days": 0}
    assert queue["oldest"] == rows["open_old"]["created_at"]
    assert [(g["value"], g["n"]) for g in queue["by_route"]] == [("review", 3), ("audit", 1)]
    region = {g["value"]: g for g in queue["by_segment"]["region"]["groups"]}
    assert (region["EMEA"]["n"], region["NA"]["n"], region["NA"]["p50"]) == (3, 1, 18000.0)

    times = found["answer_times"]
    assert times["answered"] == 3
    by_route = {g["value"]: g for g in times["by_route"]}
    assert (by_route["review"]["n"], by_route["review"]["p50"], by_route["review"]["p90"]) == (
        2,
        3600.0,
        10800.0,
    )
    assert (by_route["auto"]["n"], by_route["auto"]["p50"]) == (1, 600.0)  # the first answer counts

    overrides = found["overrides"]
    assert overrides["total"] == 2  # the revised case's latest word is an override
    pairs = {(p["value"], p["decided"], p["final"]): p for p in overrides["by_segment"]["region"]["pairs"]}
    assert pairs[("NA", "finance_ap", "legal")]["reasons"] == [["wrong queue", 1]]
    assert pairs[("EMEA", "finance_ap", "procurement")]["reasons"] == [["late change", 1]]

    # the queue over runs: what the run's trend point keeps for the console's charts
    point = trend_point({"workload": found}, [])
    assert (point["queue_open"], point["queue_age_p50"], point["queue_age_p90"]) == (4.0, 7200.0, 36000.0)

    # The console's link for the open count: the same test of "queued", over the log as it is now
    # (the case answered after the window's end is no longer waiting).
    waiting = DecisionQuery(
        since=T0.isoformat(),
        until=END.isoformat(),
        model="routing",
        origin="live",
        queued=True,
        answered=False,
    )
    listed, _ = search(db, waiting, 50)
    assert {r["decision_id"] for r in listed} == {
        rows[k]["decision_id"] for k in ("open_old", "open_new", "audited")
    }
