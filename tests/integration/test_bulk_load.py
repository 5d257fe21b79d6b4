"""The bulk loader stores what the decision log's own writer stores: row by row, column by column,
hash chain and head included, on real PostgreSQL (COPY) and SQLite (executemany)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from keel.cli.verification import verify_log
from keel.decision_log import Database, DecisionLog, LogSettings
from keel.decision_log.bulk import BulkLoader
from keel.decision_log.log_key import create_key_file
from tests.conftest import fresh_postgres_database


def decision(i: int) -> dict[str, Any]:
    """A varied row: abstentions, batch origin, idempotency keys, NaN in the record, odd floats."""
    abstained = i % 5 == 0
    batch = i % 7 == 0
    record = {
        "decision_id": str(uuid.uuid4()),
        "inputs": {"amount": i * 10.1, "region": ["NA", "EMEA", "APAC"][i % 3], "note": 'é"\\\n\t'},
        "probabilities": {"a": 1 / 3, "b": 2 / 3},
        "score": float("nan") if i % 11 == 0 else 0.1 + i / 7,
    }
    return {
        "decision_id": record["decision_id"],
        "model": "routing",
        "model_version": str(1 + i % 2),
        "created_at": f"2026-11-01T00:00:{i % 60:02d}.{i:06d}+00:00",
        "caller": "batch:nightly" if batch else "svc",
        "case_id": None if i % 3 else f"case-{i}" if i % 2 else f"case\t{i}\n\r\\N\\",  # COPY's escapes
        "idempotency_key": f"k{i // 2}" if i % 4 == 1 else None,
        "request_hash": "ab" * 32 if i % 4 == 1 else None,
        "request_index": i % 2,
        "outcome": None if abstained else "finance_ap",
        "abstained": abstained,
        "route": "review" if abstained else "auto",
        "confidence": 1 / (i + 3),
        "segments": f'{{"region":"{["NA", "EMEA", "APAC"][i % 3]}"}}',
        "intervened": i % 2,
        "record": record,
        "origin": "batch" if batch else None,
    }


@contextmanager
def two_logs(kind: str, tmp: Path) -> Iterator[tuple[str, str]]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'writer.db'}", f"sqlite:///{tmp / 'bulk.db'}"
        return
    with fresh_postgres_database("keel_t_bulk") as a, fresh_postgres_database("keel_t_bulk") as b:
        yield a, b


def stored(url: str, table: str) -> list[tuple[Any, ...]]:
    db = Database(url)
    try:
        with db.reading() as reader:
            order = "seq" if table != "chain_heads" else "name"
            return reader.all(f"SELECT * FROM {table} ORDER BY {order}")
    finally:
        db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
@pytest.mark.parametrize("workers", [0, 2], ids=["thread", "processes"])
def test_bulk_rows_equal_the_writers_and_verify(
    kind: str, workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "chain.key"
    create_key_file(key_file)
    monkeypatch.setenv("KEEL_LOG_KEY_FILE", str(key_file))
    rows = [decision(i) for i in range(60)]
    with two_logs(kind, tmp_path) as (by_writer, by_bulk):
        log = DecisionLog(Database(by_writer), settings=LogSettings()).open()
        try:
            for lo in range(0, 50, 9):  # the writer in requests of a few rows
                log.append("decisions", rows[lo : min(lo + 9, 50)])
            log.append("decisions", rows[50:])
        finally:
            log.close()
        bulk_db = Database(by_bulk)
        # Batches of 7: the chain crosses transactions; then the online writer carries on after it.
        loader = BulkLoader(bulk_db, workers=workers)
        assert loader.load("decisions", iter(rows[:50]), batch_rows=7) == 50
        after = DecisionLog(bulk_db, settings=LogSettings()).open()
        try:
            after.append("decisions", rows[50:])
        finally:
            after.close()
        bulk_db.dispose()
        for table in ("decisions", "chain_heads"):
            expected, got = stored(by_writer, table), stored(by_bulk, table)
            assert len(expected) == len(got) > 0
            for want, have in zip(expected, got, strict=True):
                assert want == have
                assert [type(v) for v in want] == [type(v) for v in have]
        assert all(r[-2] is not None for r in stored(by_bulk, "decisions"))  # key_id: every row keyed
        assert verify_log(by_writer) == 0
        assert verify_log(by_bulk) == 0
