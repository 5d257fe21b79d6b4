"""`keel log archive`: each closed month of the log written as Parquet plus a signed manifest, to a
folder or any fsspec URL (local files, memory, S3-compatible stores through the same code).

Every row is checked against its chain as it is written (a broken chain is never archived), and
each month is verified again from what landed at the destination (while the next month is read)
before it is reported; a month that does not verify loses its manifest, as does the one written
after it, so the next run writes them again. The archive continues where the destination's last
month ended, so running it every month extends one unbroken sequence of archives. Rows stay in
the live log until `keel log remove` takes archived months out (keel.decision_log.retention:
verified first, legal holds kept, the live log then starting from the archived head).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from keel.decision_log.alias_history import LEGACY_HEAD
from keel.decision_log.archive_format import (
    COPIED,
    FORMAT,
    MANIFEST,
    SEGMENTED,
    Part,
    arrow_schema,
    file_sha256,
    manifest_mac,
    month_folders,
    parts_of,
    read_manifest,
)
from keel.decision_log.archive_verify import hashing_pool, verify_month
from keel.decision_log.database import GENESIS, Database, Reader
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.months import month_after, month_bounds, month_of

__all__ = ["ArchiveError", "MonthArchived", "archive_months", "closed_before"]

ROWS_PER_BATCH = 20_000
"""Rows per Parquet row group: memory stays flat whatever the month's size."""


class ArchiveError(Exception):
    """The archive cannot be written as asked (bad cut date, no chain key, a broken chain)."""


@dataclass(frozen=True)
class MonthArchived:
    month: str
    parts: dict[str, Part]
    url: str


def closed_before(before: date, today: date) -> date:
    """`before` if it is the first day of a month that has begun (every month before it is closed)."""
    if before.day != 1:
        raise ArchiveError(f"--before {before} is not the first day of a month: archives hold whole months")
    if before > today.replace(day=1):
        raise ArchiveError(
            f"--before {before}: only closed months are archived; "
            f"the latest allowed is {today.replace(day=1)}"
        )
    return before


def archive_months(db: Database, keys: ChainKeys, before: date, url: str) -> Iterator[MonthArchived]:
    """Write every month from the first not yet archived at `url` up to `before`, one at a time."""
    if keys.current is None or keys.current_key is None:
        raise ArchiveError("archives are signed with the chain key: set KEEL_LOG_KEY_FILE")
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    done = month_folders(fs, root)
    heads = _continue_from(fs, root, done)
    with (
        db.reading(snapshot=True) as reader,
        hashing_pool(os.cpu_count() or 1) as pool,
        ThreadPoolExecutor(1, thread_name_prefix="archive-verify") as checker,
    ):
        # A month is verified (by the hashing workers) while the next one is read and written.
        written: list[tuple[MonthArchived, Future[str | None]]] = []
        for month in _months(reader, heads, done, before):
            parts = _write_month(fs, root, month, reader, keys, heads)
            heads = {t: (parts[t].last_seq, parts[t].last_hash) for t in SEGMENTED}
            check = checker.submit(verify_month, fs, root, month, keys, pool)
            written.append((MonthArchived(month, parts, f"{url.rstrip('/')}/{month}"), check))
            if len(written) == 2:
                yield _verified(fs, root, written)
        while written:
            yield _verified(fs, root, written)


def _verified(fs: Any, root: str, written: list[tuple[MonthArchived, Future[str | None]]]) -> MonthArchived:
    """The oldest month written, once it verified from what landed. If it did not, it and the
    month written after it lose their manifests (incomplete: the next run writes them again)."""
    month, check = written[0]
    problem = check.result()
    if problem:
        for later, _ in written:
            fs.rm(f"{root}/{later.month}/{MANIFEST}")
        raise ArchiveError(f"{month.url} did not verify after writing: {problem}")
    written.pop(0)
    return month


def _continue_from(fs: Any, root: str, done: list[str]) -> dict[str, tuple[int, str]]:
    if not done:
        return {t: (0, GENESIS) for t in SEGMENTED}
    parts = parts_of(read_manifest(fs, root, done[-1]), "segments")
    return {t: (parts[t].last_seq, parts[t].last_hash) for t in SEGMENTED}


def _months(
    reader: Reader, heads: dict[str, tuple[int, str]], done: list[str], before: date
) -> Iterator[str]:
    """The months to write: after the last archived one (or from the log's first row) to `before`."""
    if done:
        start = month_after(done[-1])
    else:
        firsts = [
            reader.one(f"SELECT MIN(created_at) FROM {t} WHERE seq > ?", (heads[t][0],)) for t in SEGMENTED
        ]
        found = [str(r[0]) for r in firsts if r and r[0]]
        if not found:
            return
        start = month_of(datetime.fromisoformat(min(found)))
    while start < month_of(before):
        yield start
        start = month_after(start)


def _write_month(
    fs: Any, root: str, month: str, reader: Reader, keys: ChainKeys, heads: dict[str, tuple[int, str]]
) -> dict[str, Part]:
    end_text = month_bounds(month)[1]
    fs.makedirs(f"{root}/{month}", exist_ok=True)
    segments = {}
    for table in SEGMENTED:
        after, prev = heads[table]
        row = reader.one(f"SELECT MAX(seq) FROM {table} WHERE created_at < ?", (end_text,))
        upto = max(after, int(row[0]) if row and row[0] is not None else 0)
        segments[table] = _write_part(fs, root, month, reader, table, after, upto, prev)
    legacy = reader.one("SELECT seq FROM chain_heads WHERE name = ?", (LEGACY_HEAD,))
    copies = {
        table: _write_part(fs, root, month, reader, table, 0, None, GENESIS, int(legacy[0]) if legacy else 0)
        for table in COPIED
    }
    body: dict[str, Any] = {
        "format": FORMAT,
        "month": month,
        "written_at": datetime.now(UTC).isoformat(),
        "segments": {t: p.to_json() for t, p in segments.items()},
        "copies": {t: p.to_json() for t, p in copies.items()},
        "key_id": keys.current,
    }
    assert keys.current_key is not None  # checked by archive_months
    body["mac"] = manifest_mac(keys.current_key, body)
    with fs.open(f"{root}/{month}/{MANIFEST}", "wb") as out:
        out.write(json.dumps(body, indent=2, sort_keys=True).encode())
    return segments


def _write_part(
    fs: Any,
    root: str,
    month: str,
    reader: Reader,
    table: str,
    after: int,
    upto: int | None,
    prev: str,
    legacy_until: int = 0,
) -> Part:
    """Stream one chain's rows in (after, upto] to Parquet. Links are followed as rows pass (a gap
    stops the archive at once); hashes are checked by the verification of what landed, on every
    core, so no row is hashed twice."""
    schema = arrow_schema(table)
    names = schema.names
    where, params = ("seq > ?", (after,)) if upto is None else ("seq > ? AND seq <= ?", (after, upto))
    sql = f"SELECT {', '.join(names)} FROM {table} WHERE {where} ORDER BY seq"
    first_seq, last_seq, last_hash, count = None, after, prev, 0
    created_min, created_max = None, None
    path = f"{root}/{month}/{table}.parquet"
    with fs.open(path, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
        for batch in (_copied if reader.postgres else _fetched)(reader, sql, params, schema):
            _check_links(table, batch, last_hash)
            stamps = pc.min_max(batch.column("created_at"))
            created_min = min(filter(None, (created_min, stamps["min"].as_py())))
            created_max = max(filter(None, (created_max, stamps["max"].as_py())))
            first_seq = batch.column("seq")[0].as_py() if first_seq is None else first_seq
            last_seq, last_hash = batch.column("seq")[-1].as_py(), batch.column("row_hash")[-1].as_py()
            count += batch.num_rows
            writer.write_batch(batch)
    return Part(
        file=f"{table}.parquet",
        sha256=file_sha256(fs, path),
        rows=count,
        first_seq=first_seq,
        last_seq=last_seq,
        prev_hash=prev,
        last_hash=last_hash,
        created_min=created_min,
        created_max=created_max,
        legacy_until=legacy_until if table == "alias_history" else 0,
    )


def _fetched(
    reader: Reader, sql: str, params: tuple[Any, ...], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """SQLite: the rows through the driver, a batch at a time."""
    for rows in reader.stream(sql, params, ROWS_PER_BATCH):
        columns = list(zip(*rows, strict=True))
        arrays = [pa.array(_typed(c, f.type), f.type) for c, f in zip(columns, schema, strict=True)]
        yield pa.record_batch(arrays, schema=schema)


def _copied(reader: Reader, sql: str, params: tuple[Any, ...], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """PostgreSQL: the rows as CSV from COPY, parsed by Arrow a batch at a time (no Python object
    per value). NULL is an unquoted empty field, an empty string a quoted one."""
    convert = pacsv.ConvertOptions(
        column_types={f.name: f.type for f in schema},
        strings_can_be_null=True,
        null_values=[""],
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    options = {
        "read_options": pacsv.ReadOptions(column_names=schema.names),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": convert,
    }
    rows = reader.copy_rows(sql, params)
    while piece := list(itertools.islice(rows, ROWS_PER_BATCH)):
        table = pacsv.read_csv(pa.BufferReader(b"".join(piece)), **options)
        yield table.select(schema.names).cast(schema).combine_chunks().to_batches()[0]


def _check_links(table: str, batch: pa.RecordBatch, prev: str) -> None:
    """Each row links to the one before it (the first to `prev`), compared a column at a time."""
    links, hashes = batch.column("prev_hash"), batch.column("row_hash")
    expected = pa.concat_arrays([pa.array([prev], pa.string()), hashes.slice(0, batch.num_rows - 1)])
    matches = pc.equal(links, expected)
    if pc.all(matches).as_py() and matches.null_count == 0:
        return
    bad = pc.index(pc.fill_null(matches, False), False).as_py()
    raise ArchiveError(
        f"{table} seq {batch.column('seq')[bad].as_py()}: previous-hash link broken; the chain is not "
        "archived broken (run keel verify-log)"
    )


def _typed(values: tuple[Any, ...], kind: pa.DataType) -> list[Any]:
    """SQLite hands booleans back as 0/1; Arrow wants bools for a boolean column."""
    if kind == pa.bool_():
        return [None if v is None else bool(v) for v in values]
    return list(values)
