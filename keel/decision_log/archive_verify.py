"""`keel verify-archive`: an archive checked with no database and no Keel state but the chain key.

Checked, and named when wrong: each manifest's signature (HMAC under the chain key it names), each
file's sha256, every row's hash and link (the same `ChainWalk` rules as `keel verify-log`), each
segment's first and last rows against its manifest, continuity from one month to the next, the
copies of the alias, audit-plan and retention chains (each whole from genesis, each later copy
extending the earlier), and, given the live log, that the live chains continue from the archived
heads.

Rows are hashed in parallel (the chain is sequential, but a row's check needs only its own stored
link, so a file's row groups are checked in separate processes and their ends joined afterwards).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keel.decision_log.archive_format import (
    COPIED,
    COPIES_OF,
    SEGMENTED,
    Part,
    arrow_schema,
    file_sha256,
    manifest_mac,
    month_folders,
    parts_of,
    read_manifest,
)
from keel.decision_log.arrow_digests import batch_digests
from keel.decision_log.chain import BATCH, BATCH_CALLER_PREFIX, column_digests
from keel.decision_log.chain_walk import ChainWalk
from keel.decision_log.database import Database
from keel.decision_log.log_key import ChainKeys

__all__ = ["ArchiveReport", "hashing_pool", "verify_archive", "verify_month"]

_KINDS = {"int64": "int", "bool": "int", "double": "float"}
"""How each Arrow type of an archived column is encoded for its row's digest."""
LINKS = ("seq", "prev_hash", "row_hash", "key_id")
POOL_MIN_GROUPS = 20
"""Row groups (of 20,000 rows) below which hashing stays in this process unless a number of
workers is asked for: the workers' start (a process each, importing pyarrow) costs about as much
as hashing 400,000 rows."""
GROUPS_PER_TASK = 2
"""Row groups (of 20,000 rows) hashed by one worker task: small enough that a month of a few
hundred thousand rows still keeps every core busy, large enough that a task's start is noise."""


@dataclass
class ArchiveReport:
    ok: bool
    months: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    problem: str | None = None
    where: str | None = None
    """The month, file and seq at fault, when one is."""
    starts: dict[str, str] = field(default_factory=dict)
    """Per chain, the hash the first archived month links to (the genesis hash: the chain's start)."""
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    key_ids: list[str] = field(default_factory=list)
    live: str | None = None


@dataclass
class _Span:
    """What one task saw of a run of rows: its ends (joined by the parent) and its key use."""

    problem: str | None = None
    bad_seq: int | None = None
    rows: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    first_keyed: int | None = None
    last_unkeyed: int | None = None
    key_ids: set[str] = field(default_factory=set)
    hashes: dict[int, str] = field(default_factory=dict)


def _check_span(
    fs: Any, path: str, table: str, groups: Sequence[int] | None, legacy_until: int, keys: ChainKeys
) -> _Span:
    """Hash a run of a file's rows, trusting only the first row's stored link (joined later)."""
    span = _Span()
    schema = arrow_schema(table)
    names = schema.names
    kinds = [_KINDS.get(str(schema.field(n).type), "str") for n in names[1:-3]]
    walk: ChainWalk | None = None
    keep = table in COPIED
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        wanted = [n for n in names if n in present]
        for batch in parquet.iter_batches(batch_size=20_000, row_groups=groups, columns=wanted):
            if not batch.num_rows:
                continue
            seqs, prevs, hashes, key_ids = (batch.column(n).to_pylist() for n in LINKS)
            if walk is None:
                walk = ChainWalk(table, keys, prev=prevs[0], legacy_until=legacy_until)
                span.first_seq, span.first_prev = seqs[0], prevs[0]
            # The common case, a run of rows under one key, checked a batch at a time; anything
            # else (or anything wrong) is walked row by row, which names the row and the fault.
            key_id = key_ids[0]
            if (
                key_id is not None
                and key_ids.count(key_id) == len(key_ids)
                and _origins_fit(table, batch)
                and walk.run_keyed(seqs, _digests(table, batch), prevs, hashes, key_id)
            ):
                span.first_keyed = seqs[0] if span.first_keyed is None else span.first_keyed
                if keep:
                    span.hashes.update(zip(seqs, hashes, strict=True))
                continue
            data = {n: batch.column(n).to_pylist() for n in wanted}
            # A column added to the chain after this archive was written: NULL, as in the live log.
            columns = [data.get(n, [None] * batch.num_rows) for n in names]
            digests = column_digests(table, columns[1:-3], kinds)
            for row, digest in zip(zip(*columns, strict=True), digests, strict=True):
                seq, stored_prev, stored_hash, key_id = row[0], row[-3], row[-2], row[-1]
                problem = walk.step_digest(seq, digest, row[1:-3], stored_prev, stored_hash, key_id)
                if problem:
                    span.problem, span.bad_seq = problem, seq
                    return span
                if key_id is None:
                    span.last_unkeyed = seq
                elif span.first_keyed is None:
                    span.first_keyed = seq
                if keep:
                    span.hashes[seq] = stored_hash
    if walk is not None:
        span.rows, span.last_seq, span.last_hash, span.key_ids = (
            walk.rows,
            walk.last_seq,
            walk.prev,
            walk.key_ids,
        )
    return span


def _digests(table: str, batch: pa.RecordBatch) -> list[str]:
    return batch_digests(table, dict(zip(batch.schema.names, batch.columns, strict=True)), batch.num_rows)


def _origins_fit(table: str, batch: pa.RecordBatch) -> bool:
    """Decisions: batch callers and the batch origin go together (chain_walk's `_origin_problem`)."""
    if table != "decisions":
        return True
    names = batch.schema.names
    if "origin" not in names:
        return False  # an archive from before the column: walked row by row
    batch_caller = pc.starts_with(batch.column("caller"), BATCH_CALLER_PREFIX)
    batch_origin = pc.fill_null(pc.equal(batch.column("origin"), BATCH), False)
    return not pc.any(pc.not_equal(batch_caller, batch_origin)).as_py()


def _check_manifest(manifest: dict[str, Any], keys: ChainKeys) -> str | None:
    if manifest.get("format") not in COPIES_OF:
        return f"manifest format {manifest.get('format')!r} is not one of {', '.join(COPIES_OF)}"
    key = keys.keys.get(str(manifest.get("key_id")))
    if key is None:
        return f"manifest is signed with chain key {manifest.get('key_id')!r}, which the key file lacks"
    if not hmac.compare_digest(manifest_mac(key, manifest), str(manifest.get("mac"))):
        return "manifest does not match its signature (it was edited)"
    missing = [t for t in COPIES_OF[str(manifest["format"])] if t not in manifest.get("copies", {})]
    if missing:
        return f"manifest lists no copy of the {', '.join(missing)} chain"
    return None


def _tasks(fs: Any, root: str, month: str, table: str, part: Part) -> list[tuple[Any, ...]]:
    path = f"{root}/{month}/{part.file}"
    if part.rows == 0:
        return []
    with fs.open(path, "rb") as handle:
        groups = pq.ParquetFile(handle).num_row_groups
    runs = [list(range(i, min(i + GROUPS_PER_TASK, groups))) for i in range(0, groups, GROUPS_PER_TASK)]
    return [(fs, path, table, run, part.legacy_until) for run in runs]


def _join(spans: list[_Span], part: Part, label: str) -> tuple[str, str | None]:
    """Join a file's spans end to end and hold the result to the manifest's figures."""
    for span in spans:
        if span.problem:
            return f"{label} seq {span.bad_seq}", span.problem
    prev, rows, last_seq = part.prev_hash, 0, None
    for span in spans:
        if span.first_prev != prev:
            return (
                f"{label} seq {span.first_seq}",
                "previous-hash link broken (a row before it was removed or altered)",
            )
        prev, rows, last_seq = span.last_hash or prev, rows + span.rows, span.last_seq
    if not spans and part.last_hash != part.prev_hash:
        return label, "an empty segment whose last hash differs from its start (the manifest was edited)"
    if rows != part.rows:
        return label, f"{rows} rows where the manifest says {part.rows}"
    if part.rows and (
        spans[0].first_seq != part.first_seq or last_seq != part.last_seq or prev != part.last_hash
    ):
        return (
            label,
            "the rows' first or last seq or last hash differ from the manifest (rows removed or added)",
        )
    return label, None


@contextmanager
def hashing_pool(workers: int) -> Iterator[Executor | None]:
    """Processes that hash archived rows, started once for a whole run (None: this process)."""
    if workers <= 1:
        yield None
        return
    # forkserver: workers start clean, whatever threads pyarrow or the caller has running; the
    # server imports this module once, so each worker starts with it loaded.
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool


def verify_month(fs: Any, root: str, month: str, keys: ChainKeys, pool: Executor | None = None) -> str | None:
    """One month's archive on its own: signature, files, rows. What is wrong, or None."""
    report = _verify_months(fs, root, [month], keys, pool)
    return None if report.ok else f"{report.where}: {report.problem}"


def verify_archive(
    url: str, keys: ChainKeys, live: Database | None = None, workers: int | None = None
) -> ArchiveReport:
    """Every month at `url`, in order, and how they join (and join the live log, when given)."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    months = month_folders(fs, root)
    if not months:
        return ArchiveReport(False, problem=f"no archived month (no folder with a manifest) at {url}")
    with hashing_pool(workers or os.cpu_count() or 1) as pool:
        report = _verify_months(fs, root, months, keys, pool, POOL_MIN_GROUPS if workers is None else 0)
    if report.ok and live is not None:
        report.live = _live_continues(live, report)
        if report.live.startswith("BROKEN"):
            report.ok, report.problem, report.where = False, report.live, "live log"
    return report


def _verify_months(
    fs: Any,
    root: str,
    months: list[str],
    keys: ChainKeys,
    pool: Executor | None,
    min_groups: int = POOL_MIN_GROUPS,
) -> ArchiveReport:
    report = ArchiveReport(True, months=months, rows={t: 0 for t in (*SEGMENTED, *COPIED)})
    manifests = []
    for month in months:
        manifest = read_manifest(fs, root, month)
        problem = _check_manifest(manifest, keys)
        if problem:
            return _bad(report, f"{month}/manifest.json", problem)
        manifests.append(manifest)
        for section in ("segments", "copies"):
            for part in parts_of(manifest, section).values():
                path = f"{root}/{month}/{part.file}"
                if not fs.exists(path):
                    return _bad(report, f"{month}/{part.file}", "file listed in the manifest is missing")
                if not hmac.compare_digest(file_sha256(fs, path), part.sha256):
                    return _bad(
                        report, f"{month}/{part.file}", "sha256 differs from the manifest (file altered)"
                    )
    jobs = [
        (month, section, table, part, task)
        for month, manifest in zip(months, manifests, strict=True)
        for section in ("segments", "copies")
        for table, part in parts_of(manifest, section).items()
        for task in _tasks(fs, root, month, table, part)
    ]
    spans = _run([(*job[4], keys) for job in jobs], pool, "memory" in fs.protocol, min_groups)
    by_part: dict[tuple[str, str], list[_Span]] = {}
    for job, span in zip(jobs, spans, strict=True):
        by_part.setdefault((job[0], job[2]), []).append(span)
    used: set[str] = set()
    ends: dict[str, Part] = {}
    keyed_seen: dict[str, int | None] = {}
    for month, manifest in zip(months, manifests, strict=True):
        for section in ("segments", "copies"):
            for table, part in parts_of(manifest, section).items():
                found = by_part.get((month, table), [])
                where, problem = _join(found, part, f"{month}/{part.file}")
                problem = problem or _keyed_order(found, keyed_seen, table, section)
                problem = problem or _follows(ends.get(table), part, section, found)
                if problem:
                    return _bad(report, where, problem)
                if table not in ends and section == "segments":
                    report.starts[table] = part.prev_hash
                ends[table] = part
                for span in found:
                    used |= span.key_ids
                if section == "segments" or month == months[-1]:
                    report.rows[table] += part.rows
    report.heads = {t: (p.last_seq, p.last_hash) for t, p in ends.items()}
    report.key_ids = sorted(used)
    return report


def _run(tasks: list[tuple[Any, ...]], pool: Executor | None, memory: bool, min_groups: int) -> list[_Span]:
    groups = sum(len(t[3]) for t in tasks)
    # memory:// lives in this process only; a small run costs less than starting the workers.
    if pool is None or memory or len(tasks) <= 1 or groups < min_groups:
        return [_check_span(*t) for t in tasks]
    return list(pool.map(_check_span, *zip(*tasks, strict=True)))


def _keyed_order(
    spans: list[_Span], keyed_seen: dict[str, int | None], table: str, section: str
) -> str | None:
    """Across tasks and months: an unkeyed row after a keyed one was rewritten without the key."""
    if section != "segments":
        return None
    for span in spans:
        first_keyed = keyed_seen.get(table)
        if first_keyed is not None and span.last_unkeyed is not None and span.last_unkeyed > first_keyed:
            return (
                f"an unkeyed row (seq {span.last_unkeyed}) after keyed rows "
                "(rows rewritten without the chain key)"
            )
        if first_keyed is None and span.first_keyed is not None:
            keyed_seen[table] = span.first_keyed
    return None


def _follows(before: Part | None, part: Part, section: str, spans: list[_Span]) -> str | None:
    """A month's segment starts where the previous month's ended; a later copy extends the earlier."""
    if before is None:
        return None
    if section == "segments":
        if part.prev_hash != before.last_hash or (part.first_seq or before.last_seq + 1) <= before.last_seq:
            return (
                f"does not continue the previous month (which ended at seq {before.last_seq}): "
                "a month is missing or altered"
            )
        return None
    hashes = {seq: h for span in spans for seq, h in span.hashes.items()}
    if before.rows and hashes.get(before.last_seq) != before.last_hash:
        return f"this copy does not extend the previous month's copy (seq {before.last_seq} differs)"
    return None


def _live_continues(db: Database, report: ArchiveReport) -> str:
    """The live chains hold, or continue from, every archived head."""
    with db.reading(snapshot=True) as reader:
        for table, (seq, head) in report.heads.items():
            if seq == 0:
                continue
            row = reader.one(f"SELECT row_hash FROM {table} WHERE seq = ?", (seq,))
            if row is not None:
                if row[0] != head:
                    return f"BROKEN: the live {table} row at seq {seq} differs from the archive's last row"
                continue
            after = reader.one(
                f"SELECT seq, prev_hash FROM {table} WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
            )
            if after is not None and after[1] != head:
                return f"BROKEN: the live {table} chain (seq {after[0]}) does not continue from the archive"
    return "the live log continues from the archived heads"


def _bad(report: ArchiveReport, where: str, problem: str) -> ArchiveReport:
    report.ok, report.where, report.problem = False, where, problem
    return report
