"""Verification of the log's chains on one consistent snapshot, with signed checkpoints.

Rows and chain heads are read in one snapshot (SQLite: one read transaction; PostgreSQL:
REPEATABLE READ), so a log being written at full speed, by one replica or many, verifies intact;
only a real edit, deletion or truncation fails, named by table and sequence number.

A checkpoint is the chain heads at one moment, signed (HMAC-SHA256) with the chain key and kept
in a file outside the database. Whoever can write the database can rewrite rows and recompute
every hash; they cannot make the rows at checkpointed positions match the signed hashes again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from keel.decision_log.alias_history import LEGACY_HEAD
from keel.decision_log.alias_history import TABLE as ALIAS_TABLE
from keel.decision_log.chain import CHAINS
from keel.decision_log.chain_walk import ChainWalk
from keel.decision_log.database import GENESIS, Database, Reader
from keel.decision_log.log_key import NO_KEYS, ChainKeys
from keel.decision_log.prefetch import prefetched

__all__ = ["VerifyResult", "append_checkpoint", "read_checkpoints", "verify"]


@dataclass
class VerifyResult:
    ok: bool
    rows_checked: int
    table: str | None = None
    bad_seq: int | None = None
    problem: str | None = None
    unkeyed_rows: int = 0
    """Rows chained without a key (written before the log had one)."""
    key_ids: list[str] = field(default_factory=list)
    """Chain keys the rows were signed with."""
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    """The verified chain ends, (seq, hash) per table."""
    checkpoints_checked: int = 0


@dataclass(frozen=True)
class Checkpoint:
    at: str
    key_id: str
    heads: dict[str, tuple[int, str]]
    mac: str


def _mac(key: bytes, at: str, key_id: str, heads: dict[str, tuple[int, str]]) -> str:
    body = json.dumps({"at": at, "key_id": key_id, "heads": heads}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def read_checkpoints(path: Path) -> list[Checkpoint]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            heads = {t: (int(v[0]), str(v[1])) for t, v in d["heads"].items()}
            out.append(Checkpoint(d["at"], d["key_id"], heads, d["mac"]))
    return out


def append_checkpoint(path: Path, keys: ChainKeys, heads: dict[str, tuple[int, str]]) -> Checkpoint:
    """Sign the verified heads with the current chain key and append them to the checkpoint file."""
    if keys.current is None or keys.current_key is None:
        raise ValueError("checkpoints are signed with the chain key: set KEEL_LOG_KEY_FILE")
    at = datetime.now(UTC).isoformat()
    cp = Checkpoint(at, keys.current, heads, _mac(keys.current_key, at, keys.current, heads))
    with Path(path).open("a") as out:
        out.write(json.dumps({"at": at, "key_id": cp.key_id, "heads": heads, "mac": cp.mac}) + "\n")
    return cp


def verify(
    db: Database,
    keys: ChainKeys = NO_KEYS,
    batch_size: int = 5000,
    checkpoints: Sequence[Checkpoint] = (),
    tables: Sequence[str] = tuple(CHAINS),
) -> VerifyResult:
    """Recompute every hash in the chains on one snapshot; report the first row that does not fit."""
    result = VerifyResult(True, 0)
    used: set[str] = set()
    wanted = {t: {cp.heads[t][0] for cp in checkpoints if t in cp.heads} for t in CHAINS}
    seen: dict[str, dict[int, str]] = {t: {} for t in CHAINS}
    present = set(sa.inspect(db.engine).get_table_names())  # a log not yet migrated lacks newer chains
    # Imported here: retention reads archives (pyarrow), which a plain verification never opens.
    from keel.decision_log.retention import TABLE as RETENTION
    from keel.decision_log.retention import bases

    with db.reading(snapshot=True) as reader:
        # Archived months removed from the live log: each chain starts where the archive ends
        # (recorded in the retention chain, itself verified below).
        starts = bases(reader) if RETENTION in present else {}
        for table in tables:
            columns = CHAINS[table]
            if table not in present:
                continue
            base_seq, base_hash = starts.get(table, (0, GENESIS))
            walk = ChainWalk(
                table, keys, prev=base_hash, last_seq=base_seq, legacy_until=_legacy_rows(reader, table)
            )
            sql = f"SELECT seq, {', '.join(columns)}, prev_hash, row_hash, key_id FROM {table} ORDER BY seq"
            # Fetch the next chunk while this one is hashed (the snapshot stays one transaction).
            for chunk in prefetched(reader.stream(sql, (), batch_size), name="verify-fetch"):
                for row in chunk:
                    seq = row[0]
                    result.rows_checked += 1
                    problem = walk.step(seq, tuple(row[1:-3]), row[-3], row[-2], row[-1])
                    if problem:
                        return _bad(result, table, seq, problem)
                    if seq in wanted[table]:
                        seen[table][seq] = row[-2]
            result.unkeyed_rows += walk.unkeyed_rows
            used |= walk.key_ids
            last_seq, prev = walk.last_seq, walk.prev
            head = reader.one("SELECT seq, row_hash FROM chain_heads WHERE name = ?", (table,))
            head_seq, head_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS)
            if (head_seq, head_hash) != (last_seq, prev):
                return _bad(
                    result,
                    table,
                    head_seq or None,
                    f"chain ends at seq {last_seq} but its recorded head is seq {head_seq} "
                    "(rows were removed from the end, or the head was altered)",
                )
            result.heads[table] = (last_seq, prev)
    result.key_ids = sorted(used)
    for cp in checkpoints:
        mismatch = _check_checkpoint(cp, keys, seen, result.heads, starts)
        if mismatch:
            return _bad(result, *mismatch)
        result.checkpoints_checked += 1
    return result


def _legacy_rows(reader: Reader, table: str) -> int:
    if table != ALIAS_TABLE:
        return 0
    row = reader.one("SELECT seq FROM chain_heads WHERE name = ?", (LEGACY_HEAD,))
    return int(row[0]) if row else 0


def _check_checkpoint(
    cp: Checkpoint,
    keys: ChainKeys,
    seen: dict[str, dict[int, str]],
    heads: dict[str, tuple[int, str]],
    starts: dict[str, tuple[int, str]],
) -> tuple[str | None, int | None, str] | None:
    key = keys.keys.get(cp.key_id)
    if key is None:
        return None, None, f"checkpoint of {cp.at} is signed with key {cp.key_id!r}, which the key file lacks"
    if not hmac.compare_digest(_mac(key, cp.at, cp.key_id, cp.heads), cp.mac):
        return None, None, f"checkpoint of {cp.at} does not match its signature (the file was edited)"
    for table, (seq, hash_) in cp.heads.items():
        if seq <= starts.get(table, (0, GENESIS))[0]:
            continue  # none yet, or archived and removed (keel verify-archive checks those)
        if seq > heads.get(table, (0, GENESIS))[0]:
            return table, seq, f"the checkpoint of {cp.at} saw seq {seq}; the chain now ends before it"
        if seen.get(table, {}).get(seq) != hash_:
            return table, seq, f"row differs from the checkpoint of {cp.at} (rows rewritten and rehashed)"
    return None


def _bad(result: VerifyResult, table: str | None, seq: int | None, problem: str) -> VerifyResult:
    result.ok, result.table, result.bad_seq, result.problem = False, table, seq, problem
    return result
