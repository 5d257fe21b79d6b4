"""The hot write path: SQLAlchemy Core statements vs the pooled DBAPI connection, same transaction
shape as the writer (lock heads, insert each row RETURNING seq, update the head, commit).

Run as `python -m bench.log_write`; prints JSON with rows/s per database and path.
`--search-indexes` measures instead what migration 0009's search indexes cost each decision: the raw
path with them and, interleaved in the same run on the same scratch database, with the log taken
back to 0008 (they are dropped), printed as commit microseconds per decision for both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from keel.decision_log.chain import DECISION_COLUMNS, chain_hash, content_digest, hashed_values
from keel.decision_log.database import GENESIS, Database
from keel.decision_log.migrations import downgrade, upgrade
from keel.decision_log.schema import chain_heads, decisions

PG_ADMIN = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A PostgreSQL server where the bench may create and drop a scratch database."""
BATCHES = 60
ROWS = 32


def _values(i: int) -> tuple[Any, ...]:
    record = json.dumps({"decision_id": f"d{i}", "inputs": {"amount": i}, "explanation": [0.1] * 20})
    # A case id and every declared segment field, as a real decision has: the search indexes see them.
    segments = f'{{"channel":"email","entity":"e{i % 9}","product_line":"ap","region":"EMEA"}}'
    return (f"d{i}-{time.monotonic_ns()}", "routing", "1", "2026-01-01T00:00:00+00:00", "bench", f"case-{i}",
            None, None, 0, "finance", 0, "auto", 0.9, segments, 0, record, "live", None)  # fmt: skip


def raw_path(db: Database, n: int) -> float:
    conn = db.connect()
    cols = ", ".join(DECISION_COLUMNS)
    marks = ", ".join("?" * (len(DECISION_COLUMNS) + 2))
    sql = f"INSERT INTO decisions ({cols}, prev_hash, row_hash) VALUES ({marks}) RETURNING seq"
    started = time.perf_counter()
    for b in range(n):
        with db.transaction(conn, lock_heads=["decisions"]):
            seq, prev = conn.execute(
                "SELECT seq, row_hash FROM chain_heads WHERE name = 'decisions'"
            ).fetchone()
            for i in range(ROWS):
                values = _values(b * ROWS + i)
                link = chain_hash(prev, content_digest(hashed_values("decisions", values)))
                seq, prev = conn.execute(sql, (*values, prev, link)).fetchone()[0], link
            conn.execute("UPDATE chain_heads SET seq = ?, row_hash = ? WHERE name = 'decisions'", (seq, prev))
    elapsed = time.perf_counter() - started
    conn.close()
    return n * ROWS / elapsed


def core_path(db: Database, n: int) -> float:
    insert = decisions.insert().returning(decisions.c.seq)
    started = time.perf_counter()
    for b in range(n):
        with db.writing() as conn:
            if db.is_postgres:
                conn.execute(
                    sa.select(chain_heads.c.seq).where(chain_heads.c.name == "decisions").with_for_update()
                )
            seq, prev = conn.execute(
                sa.select(chain_heads.c.seq, chain_heads.c.row_hash).where(chain_heads.c.name == "decisions")
            ).one()
            for i in range(ROWS):
                values = _values(b * ROWS + i)
                link = chain_hash(prev, content_digest(hashed_values("decisions", values)))
                params = dict(zip(DECISION_COLUMNS, values, strict=True))
                seq = conn.execute(insert, {**params, "prev_hash": prev, "row_hash": link}).scalar_one()
                prev = link
            conn.execute(
                chain_heads.update().where(chain_heads.c.name == "decisions").values(seq=seq, row_hash=prev)
            )
    elapsed = time.perf_counter() - started
    return n * ROWS / elapsed


def _prepared(db: Database) -> None:
    db.create_schema()
    with db.writing() as conn:
        conn.execute(sa.text("INSERT INTO chain_heads (name, seq, row_hash) VALUES ('decisions', 0, :g) "
                             "ON CONFLICT (name) DO NOTHING"), {"g": GENESIS})  # fmt: skip


def run(db: Database) -> dict[str, float]:
    _prepared(db)
    raw_path(db, 5), core_path(db, 5)  # warm up both
    out: dict[str, list[float]] = {"raw_rows_per_s": [], "core_rows_per_s": []}
    for _ in range(3):  # interleaved, so drift on a shared machine hits both alike
        out["raw_rows_per_s"].append(raw_path(db, BATCHES))
        out["core_rows_per_s"].append(core_path(db, BATCHES))
    med = {k: sorted(v)[1] for k, v in out.items()}
    return {
        **{k: round(v) for k, v in med.items()},
        "core_over_raw": round(med["core_rows_per_s"] / med["raw_rows_per_s"], 3),
    }


def _count(db: Database) -> int:
    with db.reading() as reader:
        (n,) = reader.one("SELECT count(*) FROM decisions") or (0,)
    return int(n)


def search_index_cost(db: Database) -> dict[str, Any]:
    """Commit cost per decision (raw path) with migration 0009's indexes and without (the log
    downgraded to 0008), interleaved five times; medians, and the load average around it."""
    _prepared(db)
    raw_path(db, 5)
    load = os.getloadavg()
    rates: dict[str, list[float]] = {"with_0009": [], "without_0009": []}
    for _ in range(5):
        upgrade(db.engine, db.is_postgres)
        rates["with_0009"].append(raw_path(db, BATCHES))
        downgrade(db.engine, db.is_postgres, "0008")
        rates["without_0009"].append(raw_path(db, BATCHES))
    upgrade(db.engine, db.is_postgres)
    us = {k: 1e6 / sorted(v)[2] for k, v in rates.items()}
    return {
        "commit_us_per_decision": {k: round(v, 1) for k, v in us.items()},
        "index_cost_us_per_decision": round(us["with_0009"] - us["without_0009"], 1),
        "with_over_without": round(us["with_0009"] / us["without_0009"], 3),
        "rows_in_table_at_end": _count(db),
        "load_average": {
            "before": [round(v, 2) for v in load],
            "after": [round(v, 2) for v in os.getloadavg()],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--search-indexes",
        action="store_true",
        help="measure migration 0009's write cost (instead of raw vs core)",
    )
    args = parser.parse_args()
    measure = search_index_cost if args.search_indexes else run
    results: dict[str, Any] = {"rows_per_transaction": ROWS, "transactions": BATCHES}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(Database(f"sqlite:///{Path(tmp) / 'bench.db'}"))
    try:
        import psycopg

        name = f"keel_bench_{int(time.time())}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            db = Database(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
            results["postgresql"] = measure(db)
            db.dispose()
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except Exception as exc:  # no server: report SQLite alone
        results["postgresql"] = f"skipped: {type(exc).__name__}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
