"""Archives of closed months: written from a real log (SQLite and PostgreSQL) to a folder and to
fsspec's memory filesystem, verified with no database, and every kind of tampering named."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest

from keel.decision_log import Database
from keel.decision_log.alias_history import append_move
from keel.decision_log.archive import ArchiveError, archive_months, closed_before
from keel.decision_log.archive_format import file_sha256, manifest_mac
from keel.decision_log.archive_verify import verify_archive
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.log_key import ChainKeys, create_key_file, load_keys
from keel.decision_log.retention import hold, release
from tests.conftest import fresh_postgres_database, run_keel

MONTHS = ("2026-08", "2026-09", "2026-10")
PER_MONTH = 300


def decisions(month: str, n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        decision_id = str(uuid.uuid4())
        abstained = i % 6 == 0
        yield {
            "decision_id": decision_id,
            "model": "routing",
            "model_version": "3",
            "created_at": f"{month}-{1 + i % 28:02d}T{i % 24:02d}:00:00.{i:06d}+00:00",
            "caller": "svc",
            "case_id": f"case-{month}-{i}",
            "idempotency_key": None,
            "request_hash": None,
            "request_index": 0,
            "outcome": None if abstained else "finance_ap",
            "abstained": abstained,
            "route": "review" if abstained else "auto",
            "confidence": 0.5 + i / (3 * n),
            "segments": '{"region":"EMEA"}',
            "intervened": 0,
            "record": {"decision_id": decision_id, "inputs": {"amount": i * 1.5}},
            "origin": None,
            "process_instance": f"invoice-approval:{i}" if i % 10 == 0 else None,
        }


def feedback(month: str, ids: list[str]) -> Iterator[dict[str, Any]]:
    for i, decision_id in enumerate(ids):
        yield {
            "feedback_id": str(uuid.uuid4()),
            "decision_id": decision_id,
            "model": "routing",
            "created_at": f"{month}-28T12:00:00.{i:06d}+00:00",
            "caller": "workflow",
            "actor": "reviewer-1",
            "final_outcome": "manual_review",
            "kind": "override",
            "record": {"reason": "threshold"},
        }


def fill(url: str, keys: ChainKeys) -> Database:
    db = Database(url)
    loader = BulkLoader(db, keys)
    for month in MONTHS:
        rows = list(decisions(month, PER_MONTH))
        loader.load("decisions", rows, batch_rows=128)
        loader.load("feedback", feedback(month, [r["decision_id"] for r in rows[:20]]))
        append_move(
            db,
            keys,
            {
                "model": "routing",
                "alias": "champion",
                "action": "promote",
                "from_version": None,
                "to_version": "3",
                "actor": "ana",
                "reason": f"release {month}",
                "forced": False,
                "gates": [{"name": "coverage", "passed": True}],
                "created_at": f"{month}-02T09:00:00+00:00",
            },
        )
    return db


@pytest.fixture
def keys(tmp_path: Path) -> ChainKeys:
    create_key_file(tmp_path / "chain.key")
    return load_keys(tmp_path / "chain.key")


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path, keys: ChainKeys) -> Iterator[Database]:
    if request.param == "sqlite":
        db = fill(f"sqlite:///{tmp_path / 'log.db'}", keys)
        yield db
        db.dispose()
        return
    with fresh_postgres_database("keel_t_archive") as url:
        db = fill(url, keys)
        yield db
        db.dispose()


def test_closed_months_archive_verify_offline_and_continue(
    log: Database, keys: ChainKeys, tmp_path: Path
) -> None:
    target = str(tmp_path / "archive")
    first = list(archive_months(log, keys, date(2026, 10, 1), target))
    assert [m.month for m in first] == ["2026-08", "2026-09"]
    assert [m.parts["decisions"].rows for m in first] == [PER_MONTH, PER_MONTH]
    assert [m.parts["feedback"].rows for m in first] == [20, 20]
    report = verify_archive(target, keys, live=log)
    assert report.ok, report.problem
    assert report.rows == {
        "decisions": 2 * PER_MONTH,
        "feedback": 40,
        "alias_history": 3,
        "audit_plans": 0,
        "retention_events": 0,
    }
    assert report.live == "the live log continues from the archived heads"
    # The next run continues where the archive ended: one unbroken sequence of months.
    again = list(archive_months(log, keys, date(2026, 11, 1), target))
    assert [m.month for m in again] == ["2026-10"]
    assert again[0].parts["decisions"].prev_hash == first[-1].parts["decisions"].last_hash
    whole = verify_archive(target, keys, live=log, workers=2)
    assert whole.ok, whole.problem
    assert whole.months == list(MONTHS) and whole.rows["decisions"] == 3 * PER_MONTH
    assert whole.heads["decisions"][0] == 3 * PER_MONTH
    assert list(archive_months(log, keys, date(2026, 11, 1), target)) == []


def test_memory_filesystem_holds_the_same_archive(log: Database, keys: ChainKeys) -> None:
    target = f"memory://keel-archive-{uuid.uuid4().hex[:8]}"
    months = list(archive_months(log, keys, date(2026, 11, 1), target))
    assert [m.month for m in months] == list(MONTHS)
    report = verify_archive(target, keys)
    assert report.ok, report.problem
    fs, root = fsspec.core.url_to_fs(target)
    fs.rm(root, recursive=True)


def test_only_whole_closed_months_with_a_key(log: Database, keys: ChainKeys, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="first day of a month"):
        closed_before(date(2026, 10, 15), date(2026, 12, 7))
    with pytest.raises(ArchiveError, match="only closed months"):
        closed_before(date(2027, 1, 1), date(2026, 12, 7))
    assert closed_before(date(2026, 12, 1), date(2026, 12, 7)) == date(2026, 12, 1)
    with pytest.raises(ArchiveError, match="KEEL_LOG_KEY_FILE"):
        list(archive_months(log, ChainKeys(None, {}), date(2026, 10, 1), str(tmp_path / "a")))


def test_a_broken_chain_is_not_archived(tmp_path: Path, keys: ChainKeys) -> None:
    db = fill(f"sqlite:///{tmp_path / 'log.db'}", keys)
    with db.writing() as conn:
        conn.exec_driver_sql("UPDATE decisions SET prev_hash = ? WHERE seq = 457", ("f" * 64,))
    with pytest.raises(ArchiveError, match="decisions seq 457: previous-hash link broken"):
        list(archive_months(db, keys, date(2026, 11, 1), str(tmp_path / "archive")))
    db.dispose()


@pytest.fixture
def archived(tmp_path: Path, keys: ChainKeys) -> Iterator[tuple[Path, Database]]:
    db = fill(f"sqlite:///{tmp_path / 'log.db'}", keys)
    hold(db, keys, "2026-08", actor="legal", reason="case 4711")
    release(db, keys, "2026-08", actor="legal", reason="case closed")
    target = tmp_path / "archive"
    list(archive_months(db, keys, date(2026, 11, 1), str(target)))
    yield target, db
    db.dispose()


def _rewrite(path: Path, change: Any) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _resign(month_dir: Path, keys: ChainKeys, edit: Any = None) -> None:
    """What someone holding the chain key could do: fix every sha256 and sign again."""
    manifest = json.loads((month_dir / "manifest.json").read_text())
    for section in ("segments", "copies"):
        for part in manifest[section].values():
            part["sha256"] = file_sha256(fsspec.filesystem("file"), str(month_dir / part["file"]))
    if edit:
        edit(manifest)
    assert keys.current_key is not None
    manifest["mac"] = manifest_mac(keys.current_key, manifest)
    (month_dir / "manifest.json").write_text(json.dumps(manifest))


def test_an_altered_file_is_named(archived: tuple[Path, Database], keys: ChainKeys) -> None:
    target, _ = archived
    path = target / "2026-09" / "decisions.parquet"
    _rewrite(
        path,
        lambda t: t.set_column(
            t.schema.get_field_index("outcome"), "outcome", [["manual_review"] * t.num_rows]
        ),
    )
    report = verify_archive(str(target), keys)
    assert not report.ok
    assert report.where == "2026-09/decisions.parquet" and "sha256" in str(report.problem)
    # With the sha256s fixed and the manifest signed again, the rows still do not match their hashes.
    _resign(target / "2026-09", keys)
    report = verify_archive(str(target), keys)
    assert (
        not report.ok
        and report.where is not None
        and report.where.startswith("2026-09/decisions.parquet seq")
    )
    assert "does not match its keyed hash" in str(report.problem)


def test_an_edited_manifest_is_named(archived: tuple[Path, Database], keys: ChainKeys) -> None:
    target, _ = archived
    manifest_path = target / "2026-08" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["segments"]["decisions"]["rows"] -= 1
    manifest_path.write_text(json.dumps(manifest))
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-08/manifest.json"
    assert "signature" in str(report.problem)


def test_the_retention_chain_copy_is_checked_and_named(
    archived: tuple[Path, Database], keys: ChainKeys
) -> None:
    """Each month carries the records chain as it stood (here a hold and its release), listed in the
    signed manifest; an edited event is named by file and seq, a copy left out by the manifest."""
    target, db = archived
    manifest = json.loads((target / "2026-09" / "manifest.json").read_text())
    copy = manifest["copies"]["retention_events"]
    assert copy["rows"] == 2 and copy["first_seq"] == 1 and copy["last_seq"] == 2
    assert copy["prev_hash"] == "0" * 64 and len(copy["last_hash"]) == 64 and len(copy["sha256"]) == 64
    report = verify_archive(str(target), keys, live=db)
    assert report.ok and report.rows["retention_events"] == 2, report.problem
    path = target / "2026-09" / "retention_events.parquet"
    assert pq.read_table(path).column("actor").to_pylist() == ["legal", "legal"]
    _rewrite(path, lambda t: t.set_column(t.schema.get_field_index("actor"), "actor", [["ops", "legal"]]))
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-09/retention_events.parquet"
    assert "sha256" in str(report.problem)
    _resign(target / "2026-09", keys)  # someone with the key: the event's hash still does not fit
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-09/retention_events.parquet seq 1"
    assert "does not match its keyed hash" in str(report.problem)
    _resign(target / "2026-10", keys, lambda m: m["copies"].pop("retention_events"))
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-10/manifest.json"
    assert report.problem == "manifest lists no copy of the retention_events chain"


def test_a_row_removed_at_the_cut_is_named(archived: tuple[Path, Database], keys: ChainKeys) -> None:
    """The last row of August dropped, the manifest re-signed to match: September no longer joins."""
    target, _ = archived
    path = target / "2026-08" / "decisions.parquet"
    _rewrite(path, lambda t: t.slice(0, t.num_rows - 1))
    kept = pq.read_table(path)

    def shorten(manifest: dict[str, Any]) -> None:
        part = manifest["segments"]["decisions"]
        part["rows"] -= 1
        part["last_seq"] = kept.column("seq")[-1].as_py()
        part["last_hash"] = kept.column("row_hash")[-1].as_py()

    _resign(target / "2026-08", keys, shorten)
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-09/decisions.parquet"
    assert "does not continue the previous month" in str(report.problem)


def test_a_missing_month_and_a_diverging_live_log_are_named(
    archived: tuple[Path, Database], keys: ChainKeys
) -> None:
    target, db = archived
    with db.writing() as conn:
        conn.exec_driver_sql(
            "UPDATE decisions SET row_hash = 'f' || substr(row_hash, 2) WHERE seq = ?", (3 * PER_MONTH,)
        )
    report = verify_archive(str(target), keys, live=db)
    assert not report.ok and report.where == "live log" and "differs from the archive" in str(report.problem)
    shutil.rmtree(target / "2026-09")
    report = verify_archive(str(target), keys)
    assert not report.ok and report.where == "2026-10/decisions.parquet"


def test_the_commands(tmp_path: Path, keys: ChainKeys) -> None:
    """`keel log archive` then `keel verify-archive` as a user runs them; offline needs only the key."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    fill(url, keys).dispose()
    env = {
        **os.environ,
        "KEEL_HOME": str(tmp_path / "home"),
        "KEEL_DECISION_LOG_URL": url,
        "KEEL_LOG_KEY_FILE": str(tmp_path / "chain.key"),
    }
    target = tmp_path / "archive"
    done = run_keel(env, "log", "archive", "--before", "2026-10-01", "--to", str(target))
    assert done.returncode == 0, done.stderr
    assert "2026-08: decisions 300 rows" in done.stdout and "(verified)" in done.stdout
    refused = run_keel(env, "log", "archive", "--before", "2026-10-15", "--to", str(target))
    assert refused.returncode == 2 and "first day of a month" in refused.stderr
    offline = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    checked = run_keel(offline, "verify-archive", str(target), "--key-file", str(tmp_path / "chain.key"))
    assert checked.returncode == 0, checked.stderr
    assert "2 month(s), 2026-08 to 2026-09" in checked.stdout and "from the chain's start" in checked.stdout
    no_key = run_keel(offline, "verify-archive", str(target))
    assert no_key.returncode == 2 and "chain key" in no_key.stderr
    live = run_keel(env, "verify-archive", str(target), "--live", "--json")
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout)["live"] == "the live log continues from the archived heads"
    (target / "2026-09" / "feedback.parquet").write_bytes(b"not parquet")
    broken = run_keel(offline, "verify-archive", str(target), "--key-file", str(tmp_path / "chain.key"))
    assert broken.returncode == 1 and "2026-09/feedback.parquet" in broken.stderr
