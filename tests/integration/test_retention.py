"""Archived months leaving the live log and coming back (SQLite and PostgreSQL): each step an entry
of the retention chain, legal holds respected, `keel verify-log` and `verify-archive --live` intact
throughout, and a row edited at the cut named by both."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from keel.decision_log import Database, reads
from keel.decision_log.archive import archive_months
from keel.decision_log.archive_verify import verify_archive
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.retention import (
    RetentionError,
    delete_archived,
    events,
    hold,
    release,
    remove_months,
    restore_months,
)
from keel.decision_log.retention_policy import ModelRetention, RetentionSettings, plan
from keel.decision_log.verify import verify
from tests.conftest import Store, fresh_postgres_database, run_keel
from tests.integration.conftest import make_keys, start_server
from tests.integration.test_archive import PER_MONTH, decisions, feedback, fill, keys

__all__ = ["keys"]


@pytest.fixture(params=["sqlite", "postgres"])
def archived(
    request: pytest.FixtureRequest, tmp_path: Path, keys: ChainKeys
) -> Iterator[tuple[Database, str]]:
    target = str(tmp_path / "archive")
    if request.param == "sqlite":
        db = fill(f"sqlite:///{tmp_path / 'log.db'}", keys)
        list(archive_months(db, keys, date(2026, 11, 1), target))
        yield db, target
        db.dispose()
        return
    with fresh_postgres_database("keel_t_retention") as url:
        db = fill(url, keys)
        list(archive_months(db, keys, date(2026, 11, 1), target))
        yield db, target
        db.dispose()


def _count(db: Database, table: str) -> int:
    with db.reading() as reader:
        row = reader.one(f"SELECT count(*) FROM {table}")
    return int(row[0]) if row else 0


def _intact(db: Database, keys: ChainKeys, target: str) -> None:
    result = verify(db, keys)
    assert result.ok, (result.table, result.bad_seq, result.problem)
    report = verify_archive(target, keys, live=db, workers=1)
    assert report.ok, (report.where, report.problem)


def test_months_leave_and_come_back_with_every_step_chained(
    archived: tuple[Database, str], keys: ChainKeys
) -> None:
    db, target = archived
    hold(db, keys, "2026-09", actor="legal", reason="case 4711")
    with pytest.raises(RetentionError, match="legal hold"):
        remove_months(db, keys, target, "2026-10", actor="ops")
    # The month before the held one went; the held one and everything after stay.
    assert _count(db, "decisions") == 2 * PER_MONTH and _count(db, "feedback") == 40
    assert _count(db, "decision_ids") == 3 * PER_MONTH  # the id-to-month index keeps every id
    _intact(db, keys, target)
    release(db, keys, "2026-09", actor="legal", reason="case closed")
    assert remove_months(db, keys, target, "2026-09", actor="ops", policy={"live_months": 1}) == ["2026-09"]
    assert _count(db, "decisions") == PER_MONTH
    _intact(db, keys, target)
    BulkLoader(db, keys).load("decisions", decisions("2026-11", 30))  # the log goes on
    BulkLoader(db, keys).load("feedback", feedback("2026-11", ["a-november-decision"]))
    _intact(db, keys, target)
    # An investigation: August back means September too (the live log never has a gap).
    assert restore_months(db, keys, target, "2026-08", actor="auditor", reason="complaint 17").months == [
        "2026-08",
        "2026-09",
    ]
    assert _count(db, "decisions") == 3 * PER_MONTH + 30 and _count(db, "feedback") == 61
    _intact(db, keys, target)
    assert remove_months(db, keys, target, "2026-10", actor="ops") == ["2026-08", "2026-09", "2026-10"]
    assert _count(db, "decisions") == 30
    _intact(db, keys, target)
    with db.reading() as reader:
        trail = [(e.action, e.month, e.actor) for e in events(reader)]
    assert trail == [
        ("hold", "2026-09", "legal"),
        ("remove", "2026-08", "ops"),
        ("release", "2026-09", "legal"),
        ("remove", "2026-09", "ops"),
        ("restore", "2026-08", "auditor"),
        ("remove", "2026-08", "ops"),
        ("remove", "2026-09", "ops"),
        ("remove", "2026-10", "ops"),
    ]
    # Archives older than the policy go oldest first; none that the live log still starts from.
    assert delete_archived(db, keys, target, "2026-09", actor="ops") == ["2026-08", "2026-09"]
    report = verify_archive(target, keys, live=db)
    assert report.ok and report.months == ["2026-10"], report.problem


def test_a_row_edited_at_the_cut_is_named(archived: tuple[Database, str], keys: ChainKeys) -> None:
    db, target = archived
    BulkLoader(db, keys).load("decisions", decisions("2026-11", 30))
    BulkLoader(db, keys).load("feedback", feedback("2026-11", ["a-november-decision"]))
    remove_months(db, keys, target, "2026-10", actor="ops")
    with db.reading() as reader:
        first = reader.one("SELECT min(seq) FROM decisions")
    assert first and int(first[0]) == 3 * PER_MONTH + 1
    conn = db.connect()
    try:
        with db.transaction(conn):
            conn.execute("UPDATE decisions SET prev_hash = ? WHERE seq = ?", ("f" * 64, int(first[0])))
    finally:
        conn.close()
    result = verify(db, keys)
    assert not result.ok and result.table == "decisions" and result.bad_seq == first[0]
    report = verify_archive(target, keys, live=db)
    assert not report.ok and report.where == "live log" and "does not continue" in str(report.problem)


def test_a_forged_removal_does_not_verify(archived: tuple[Database, str], keys: ChainKeys) -> None:
    """Rows deleted and a removal event written without the chain key: the retention chain names it."""
    db, target = archived
    remove_months(db, keys, target, "2026-08", actor="ops")
    conn = db.connect()
    try:
        with db.transaction(conn):
            conn.execute("UPDATE retention_events SET actor = 'someone else' WHERE action = 'remove'")
    finally:
        conn.close()
    result = verify(db, keys)
    assert not result.ok and result.table == "retention_events"


def test_an_archived_decision_is_found_by_id_with_where_it_came_from(
    archived: tuple[Database, str], keys: ChainKeys
) -> None:
    db, target = archived
    with db.reading() as reader:
        old = reader.one("SELECT decision_id, row_hash FROM decisions WHERE seq = 5")
        reviewed = reader.one("SELECT decision_id FROM feedback ORDER BY seq LIMIT 1")
    assert old and reviewed
    before_row = reads.decision(db, str(old[0]))
    before_feedback = reads.feedback_for(db, str(reviewed[0]))
    remove_months(db, keys, target, "2026-08", actor="ops")
    found = reads.decision(db, str(old[0]))
    assert found is not None and found["archived"] == {"url": target, "month": "2026-08"}
    assert {k: v for k, v in found.items() if k != "archived"} == before_row
    assert found["row_hash"] == old[1] and found["abstained"] in (True, False)
    decision = reads.decision(db, str(reviewed[0]))
    assert decision is not None and len(before_feedback) == 1
    assert reads.feedback_for(db, str(reviewed[0]), decision) == before_feedback
    assert reads.decision(db, "never-logged") is None


def test_the_policy_and_the_commands(tmp_path: Path, keys: ChainKeys) -> None:
    """`keel log hold|retention|restore|verify-log` as an operator runs them, on SQLite."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    db = fill(url, keys)
    target = str(tmp_path / "archive")
    list(archive_months(db, keys, date(2026, 11, 1), target))
    # Routing decisions stay live 2 months after their month ends (others 1); archives 5 years.
    settings = RetentionSettings(
        live_months=1, archive_years=5, models={"routing": ModelRetention(live_months=2)}
    )
    due = plan(target, settings, date(2026, 12, 7))
    assert due.remove_through == "2026-09" and due.delete_through is None  # Sep ends Oct 1, +2 <= Dec
    assert due.months["2026-08"] == {"models": ["routing"], "live_months": 2, "archive_years": 5}
    assert plan(target, settings, date(2032, 1, 1)).delete_through == "2026-10"
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / "home"),
        "KEEL_DECISION_LOG_URL": url,
        "KEEL_LOG_KEY_FILE": str(tmp_path / "chain.key"),
        "KEEL_RETENTION_LIVE_MONTHS": "1",
        "KEEL_RETENTION_MODELS": json.dumps({"routing": {"live_months": 2}}),
    }
    held = run_keel(env, "log", "hold", "2026-09", "--actor", "legal", "--reason", "case 4711")
    assert held.returncode == 0, held.stderr
    applied = run_keel(env, "log", "retention", "--archive", target, "--apply", "--actor", "ops")
    assert applied.returncode == 0, applied.stderr
    assert "removed from the live log: 2026-08;" in applied.stdout  # September is held
    refused = run_keel(env, "log", "remove", "--archive", target, "--through", "2026-09")
    assert refused.returncode == 1 and "legal hold" in refused.stderr
    back = run_keel(env, "log", "restore", "2026-08", "--archive", target, "--reason", "complaint")
    assert back.returncode == 0 and "2026-08" in back.stdout, back.stderr
    checked = run_keel(env, "verify-log")
    assert checked.returncode == 0, checked.stderr
    with db.reading() as reader:
        trail = [(e.action, e.month, e.actor, e.policy.get("live_months")) for e in events(reader)]
    assert trail[:2] == [("hold", "2026-09", "legal", None), ("remove", "2026-08", "ops", 1)]
    assert trail[2][0] == "restore"
    db.dispose()


def test_the_lookup_route_answers_an_archived_decision(
    store: Store, registered: dict[str, str], tmp_path: Path, keys: ChainKeys
) -> None:
    """GET /v1/decisions/{id} on a real `keel serve` whose log had the decision's month removed."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    db = fill(url, keys)
    target = str(tmp_path / "archive")
    list(archive_months(db, keys, date(2026, 11, 1), target))
    with db.reading() as reader:
        old = reader.one("SELECT decision_id, case_id FROM decisions WHERE seq = 7")
    assert old
    remove_months(db, keys, target, "2026-08", actor="ops")
    db.dispose()
    api_keys = make_keys(url, "retention")
    server = start_server(store, tmp_path, url, extra_env={"KEEL_LOG_KEY_FILE": str(tmp_path / "chain.key")})
    server.keys = api_keys
    try:
        with server.client() as client:
            found = client.get(f"/v1/decisions/{old[0]}")
            missing = client.get("/v1/decisions/never-logged")
    finally:
        server.stop()
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["archived"] == {"url": target, "month": "2026-08"} and body["decision_id"] == old[0]
    assert missing.status_code == 404
