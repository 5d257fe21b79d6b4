"""Benchmark: WAL written per single-decision commit, on SQLite and PostgreSQL. Prints JSON.

Counts, not timings, so the figures mean the same on a loaded machine. Each model (trained small
in-process) decides example cases one at a time, as a one-case decide request does: the
decision record, audit selection and log row are built by the same functions as the online
path (serving.decision_record, decision_log.rows), and each row is appended through the real
group-committing writer (keel.decision_log.writer), alone in its commit.

SQLite: the `-wal` file is read after each commit; the frames of the newest transaction (those
up to its commit frame, with the WAL header's salts) are that commit's, and each frame's page
is named by the `dbstat` table (which table or index, leaf, interior or overflow). A WAL
restart after a checkpoint does not disturb this: frames are told apart by salt, not offset.
PostgreSQL: the WAL records of the commit's transaction, read back with pg_walinspect (only
records of the scratch database count, so other sessions on a shared server do not), with the
relation each block belongs to and the full-page images apart (their number depends on how
recently a checkpoint ran, not on the schema); pg_current_wal_lsn()'s difference around the
commit is printed beside it (cluster-wide: it includes whatever else the server wrote).

Target (issue 26): <= 3 frames per single-decision commit on SQLite, or the floor the schema
allows; the floor is printed: one page per b-tree a decision row must enter (the table, its
unique decision_id and every index whose condition the row meets), plus the record's overflow
pages, plus the chain head.

    python -m bench.wal [--rows 3000] [--decisions 20] [--prefill 2000] [--models routing ...]
                        [--page-sizes 1024 8192] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

import psycopg

from keel.decision_log import Database, DecisionLog
from keel.decision_log.audit_plans import AuditSettings, default_plan, log_secret
from keel.decision_log.rows import log_row
from keel.feature_defs.contract import MODEL_NAMES, load_contract
from keel.models.decision_model import DecisionModel
from keel.models.registry import LoadedModel, VersionRef
from keel.serving.correlation import attach
from keel.serving.decision_record import decide_valid, with_audit
from keel.serving.model_set import Served
from keel.serving.settings import ServingSettings
from keel.training.generators import generate
from keel.training.pipeline import train
from keel.training.settings import TrainingSettings

PG_ADMIN = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A PostgreSQL server where the bench may create and drop a scratch database."""
TARGET_FRAMES = 3
HEADER = "database header (page 1)"
"""Written when the file grows by a page (the header holds the page count)."""
_WAL_HEADER = 32
_FRAME_HEADER = 24

Row = dict[str, Any]


def served_model(name: str, rows: int, work: Path) -> Served:
    """A small model trained in-process, served as a registry champion would be."""
    settings = TrainingSettings(rows=rows)
    result = train(load_contract(name), generate(name, rows, settings.seed), work / name, settings)
    model = DecisionModel.load(result.bundle_dir)
    return Served(LoadedModel(VersionRef(name, "1", "champion", {}, None), model))


def decision_rows(served: Served, db: Database, n: int, workflow: bool) -> Iterator[Row]:
    """One log row per example case, built as a one-case decide request builds it; with
    `workflow`, the request also carries an idempotency key and a process instance."""
    name = served.loaded.ref.name
    contract = served.loaded.model.contract
    plan = default_plan(name, log_secret(db), AuditSettings())
    top_k = ServingSettings().top_k
    fields = list(contract.field_names)
    for i, case in enumerate(generate(name, n, seed=77)[fields].to_dict("records")):
        case = {k: (None if v != v else v) for k, v in case.items()}  # NaN: a missing field
        case["case_id"] = f"case-{i}"
        checked = contract.validate_records([case])
        assert checked.matrix is not None, checked.errors
        records = with_audit(decide_valid(served, [case], checked.matrix, top_k), plan)
        key = digest = None
        if workflow:
            attach(records, [{"process_instance_id": f"order-{i}"}], None)
            key, digest = f"retry-{uuid.uuid4()}", "0" * 64
        yield log_row(records[0], 0, "bench", key, digest, served.spec.segment_fields)


# -- SQLite ---------------------------------------------------------------------------------


def wal_transactions(wal: Path) -> tuple[tuple[int, int], list[list[int]]]:
    """The WAL's salts and, per committed transaction in it, the page number of each frame."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < _WAL_HEADER:
        return (0, 0), []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = struct.unpack(">II", data[16:24])
    done: list[list[int]] = []
    pages: list[int] = []
    at = _WAL_HEADER
    while at + _FRAME_HEADER + page_size <= len(data):
        page, commit_size, s1, s2 = struct.unpack(">IIII", data[at : at + 16])
        if (s1, s2) != salts:  # a frame left from before the last WAL restart
            break
        pages.append(page)
        if commit_size:  # the transaction's last frame holds the database size after it
            done.append(pages)
            pages = []
        at += _FRAME_HEADER + page_size
    return salts, done


def newest_commit(wal: Path, before: tuple[tuple[int, int], list[list[int]]]) -> list[int]:
    """The pages of the transactions committed since `before` (one, when one commit ran)."""
    salts, done = wal_transactions(wal)
    new = done[len(before[1]) :] if salts == before[0] else done
    return [p for tx in new for p in tx]


def page_names(path: Path) -> dict[int, str]:
    """Each page's owner as 'table-or-index (leaf|internal|overflow)'; page 1 is the header."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT pageno, name, pagetype FROM dbstat").fetchall()
    finally:
        conn.close()
    return {int(p): f"{n} ({t})" if p != 1 else HEADER for p, n, t in rows}


def sqlite_database(path: Path, page_size: int | None) -> Database:
    """A new SQLite log; with `page_size`, the file is made with that page size first (it is fixed
    once the first table exists)."""
    if page_size is not None:
        import sqlite3

        made = sqlite3.connect(path)
        made.execute(f"PRAGMA page_size={int(page_size)}")
        made.execute("PRAGMA journal_mode=WAL")
        made.close()
    return Database(f"sqlite:///{path}")


def prefill(log: DecisionLog, rows: Iterator[Row], n: int, batch: int = 250) -> None:
    """`n` decisions written in large commits first, so the b-trees are as deep as a used log's."""
    pending: list[Row] = []
    for _ in range(n):
        pending.append(next(rows))
        if len(pending) == batch:
            log.append("decisions", pending)
            pending = []
    if pending:
        log.append("decisions", pending)


def measure_sqlite(
    served: Served, work: Path, n: int, workflow: bool, filled: int, page_size: int | None = None
) -> dict[str, Any]:
    path = work / f"{served.loaded.ref.name}-{int(workflow)}-{page_size}.db"
    db = sqlite_database(path, page_size)
    log = DecisionLog(db).open()
    wal = path.with_name(path.name + "-wal")
    frames: list[int] = []
    trees: list[int] = []
    owners: Counter[str] = Counter()
    record_bytes: list[int] = []
    try:
        conn = db.connect()
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.close()
        rows = decision_rows(served, db, filled + n, workflow)
        prefill(log, rows, filled)
        for row in rows:
            before = wal_transactions(wal)
            log.append("decisions", [row])
            pages = newest_commit(wal, before)
            names = page_names(path)
            frames.append(len(pages))
            owned = [names.get(p, f"page {p} (freed)") for p in pages]
            owners.update(owned)
            trees.append(len({o.split(" (")[0] for o in owned} - {HEADER}))
            record_bytes.append(len(json.dumps(row["record"])))
    finally:
        log.close()
        db.dispose()
    per = median(frames)
    return {
        "page_size": size,
        "commits": len(frames),
        "frames_per_commit_median": per,
        "frames_per_commit_mean": round(sum(frames) / len(frames), 2),
        "frames_per_commit_min_max": [min(frames), max(frames)],
        "bytes_per_commit_mean": round(sum(frames) / len(frames) * (size + _FRAME_HEADER)),
        "record_json_bytes_median": median(record_bytes),
        # One leaf page per b-tree the row enters: the table, each index whose condition it meets
        # and the chain head. The rest are growth: a new page's parent and the header.
        "schema_floor_frames": median(trees),
        "frames_by_page_per_commit": {k: round(v / len(frames), 2) for k, v in owners.most_common()},
    }


# -- PostgreSQL -----------------------------------------------------------------------------


@contextmanager
def scratch_postgres() -> Iterator[str]:
    name = f"keel_bench_wal_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _wal_records(conn: psycopg.Connection[Any], start: str, end: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT xid, resource_manager, record_type, record_length, fpi_length, block_ref "
        "FROM pg_get_wal_records_info(%s, %s)",
        (start, end),
    ).fetchall()


def _scalar(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> str:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return str(row[0])


def _relation_names(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT pg_relation_filenode(oid)::text, relname FROM pg_class").fetchall()
    return {str(f): str(n) for f, n in rows if f is not None}


def measure_postgres(served: Served, url: str, n: int, workflow: bool, filled: int) -> dict[str, Any]:
    db = Database(url)
    log = DecisionLog(db).open()
    rows = decision_rows(served, db, filled + n, workflow)
    prefill(log, rows, filled)
    totals: list[int] = []
    fpis: list[int] = []
    lsn_diffs: list[int] = []
    records: list[int] = []
    owners: Counter[str] = Counter()
    with psycopg.connect(url, autocommit=True) as conn:
        db_oid = _scalar(conn, "SELECT oid FROM pg_database WHERE datname = current_database()")
        names = _relation_names(conn)

        def lsn() -> str:
            return _scalar(conn, "SELECT pg_current_wal_lsn()")

        try:
            for row in rows:
                start = lsn()
                log.append("decisions", [row])
                end = lsn()
                lsn_diffs.append(int(float(_scalar(conn, "SELECT %s::pg_lsn - %s::pg_lsn", (end, start)))))
                found = _wal_records(conn, start, end)
                ours = {x for x, *_, ref in found if ref and f"/{db_oid}/" in ref and x}
                mine = [r for r in found if r[0] in ours]
                totals.append(sum(int(r[3]) for r in mine))
                fpis.append(sum(int(r[4]) for r in mine))
                records.append(len(mine))
                owners.update(_block_owner(r, names) for r in mine)
        finally:
            log.close()
            db.dispose()
    return {
        "commits": len(totals),
        "wal_records_per_commit_median": median(records),
        "wal_bytes_per_commit_median": median(totals),
        "wal_bytes_without_full_page_images_median": median(t - f for t, f in zip(totals, fpis, strict=True)),
        "full_page_image_bytes_median": median(fpis),
        "lsn_difference_median_cluster_wide": median(lsn_diffs),
        "records_by_relation_per_commit": {k: round(v / len(totals), 2) for k, v in owners.most_common()},
    }


def _block_owner(record: tuple[Any, ...], names: dict[str, str]) -> str:
    _, manager, kind, *_, ref = record
    if not ref:
        return f"{manager}/{kind}"
    filenode = ref.split(" rel ", 1)[1].split()[0].split("/")[-1] if " rel " in ref else "?"
    return f"{names.get(filenode, filenode)} {manager}/{kind.split()[0]}"


# -- report ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"benchmark": "wal", "target_frames_per_commit": TARGET_FRAMES, "models": {}}
    n, filled = args.decisions, args.prefill
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            served = served_model(name, args.rows, work)
            per: dict[str, Any] = {}
            for workflow in (False, True):
                shape = "with_idempotency_key_and_process_instance" if workflow else "plain"
                per[shape] = {"sqlite": measure_sqlite(served, work, n, workflow, filled)}
                for size in args.page_sizes:
                    per[shape][f"sqlite_page_size_{size}"] = measure_sqlite(
                        served, work, n, workflow, filled, size
                    )
                if not args.no_postgres:
                    per[shape]["postgresql"] = _postgres_or_skip(
                        partial(measure_postgres, served, n=n, workflow=workflow, filled=filled)
                    )
            out["models"][name] = per
    return out


def _postgres_or_skip(measure: Callable[[str], dict[str, Any]]) -> dict[str, Any] | str:
    try:
        with scratch_postgres() as url:
            return measure(url)
    except psycopg.OperationalError as exc:
        return f"skipped: {type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000, help="training rows per model")
    parser.add_argument("--decisions", type=int, default=20, help="single-decision commits per model")
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    parser.add_argument("--prefill", type=int, default=2000, help="decisions logged before measuring")
    parser.add_argument(
        "--page-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also measure new logs made with these page sizes",
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    json.dump(run(args), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
