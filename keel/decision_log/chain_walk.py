"""Walking one hash chain row by row: the rules a row must meet, wherever the rows come from.

`keel verify-log` walks the live tables; `keel verify-archive` walks Parquet files with no
database at all. Both feed rows, in sequence order, to one `ChainWalk`, so an archived row is held
to exactly the rules it met in the live log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.decision_log.alias_history import legacy_alias_hash
from keel.decision_log.chain import (
    BATCH,
    BATCH_CALLER_PREFIX,
    CHAINS,
    ORIGIN,
    chain_hash,
    chain_hashes,
    hashed_values,
    legacy_row_hash,
    row_hash,
)
from keel.decision_log.database import GENESIS
from keel.decision_log.log_key import ChainKeys

__all__ = ["ChainWalk"]


@dataclass
class ChainWalk:
    """The state of one chain walked from `prev` (GENESIS, or the head an earlier segment ended at)."""

    table: str
    keys: ChainKeys
    prev: str = GENESIS
    last_seq: int = 0
    keyed: bool = False
    """Whether a keyed row was seen: an unkeyed row after it was rewritten without the key."""
    legacy_until: int = 0
    """Alias moves up to this seq were chained in the pre-0004 format."""
    rows: int = 0
    unkeyed_rows: int = 0
    key_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._created = CHAINS[self.table].index("created_at")

    def step(
        self, seq: int, values: tuple[Any, ...], stored_prev: str, stored_hash: str, key_id: str | None
    ) -> str | None:
        """Check the next row; on success move past it. Returns what is wrong with it, if anything."""
        if seq <= self.legacy_until and key_id is None and stored_prev == self.prev:
            problem = (
                None
                if legacy_alias_hash(self.prev, values) == stored_hash
                else "row content does not match its hash"
            )
        else:
            problem = _origin_problem(self.table, values) or self._check(
                values, stored_prev, stored_hash, key_id
            )
        if problem:
            return problem
        self.rows += 1
        if key_id is None:
            self.unkeyed_rows += 1
        else:
            self.keyed = True
            self.key_ids.add(key_id)
        self.prev, self.last_seq = stored_hash, seq
        return None

    def step_digest(
        self,
        seq: int,
        digest: str,
        values: tuple[Any, ...],
        stored_prev: str,
        stored_hash: str,
        key_id: str | None,
    ) -> str | None:
        """`step` for a row whose content digest the caller built in bulk (`column_digests`): a keyed
        row whose link and hash fit costs one HMAC; any other row takes `step`'s full path, which
        knows the older formats and names what is wrong."""
        key = self.keys.keys.get(key_id) if key_id is not None else None
        if (
            key is not None
            and stored_prev == self.prev
            and chain_hash(self.prev, digest, key) == stored_hash
            and not _origin_problem(self.table, values)
        ):
            self.rows += 1
            self.keyed = True
            self.key_ids.add(str(key_id))
            self.prev, self.last_seq = stored_hash, seq
            return None
        return self.step(seq, values, stored_prev, stored_hash, key_id)

    def run_keyed(
        self, seqs: list[int], digests: list[str], prevs: list[str], hashes: list[str], key_id: str
    ) -> bool:
        """Many rows signed with one key, whose contents the caller has held to `_origin_problem`:
        True when every link and hash fits and the walk moved past them all; False, the walk
        unmoved, otherwise (walk them with `step_digest` to learn what is wrong and where)."""
        key = self.keys.keys.get(key_id)
        if key is None or not seqs or prevs[0] != self.prev or prevs[1:] != hashes[:-1]:
            return False
        if chain_hashes(prevs, digests, key) != hashes:
            return False
        self.rows += len(seqs)
        self.keyed = True
        self.key_ids.add(key_id)
        self.prev, self.last_seq = hashes[-1], seqs[-1]
        return True

    def _check(
        self, values: tuple[Any, ...], stored_prev: str, stored: str, key_id: str | None
    ) -> str | None:
        if stored_prev != self.prev:
            return "previous-hash link broken (a row before it was deleted or altered)"
        variants = _variants(self.table, values)
        if key_id is None:
            if self.keyed:
                return "an unkeyed row after keyed rows (rows were rewritten without the chain key)"
            since, created = self.keys.keyed_since, values[self._created]
            if since is not None and isinstance(created, str) and created > since:
                return "an unkeyed row logged after the chain key was made (rewritten without the key)"
            if all(
                row_hash(self.prev, v) != stored and legacy_row_hash(self.prev, v) != stored for v in variants
            ):
                return "row content does not match its hash"
            return None
        key = self.keys.keys.get(key_id)
        if key is None:
            return f"row signed with chain key {key_id!r}, which the key file (KEEL_LOG_KEY_FILE) lacks"
        if all(row_hash(self.prev, v, key) != stored for v in variants):
            return "row content does not match its keyed hash"
        return None


def _origin_problem(table: str, values: tuple[Any, ...]) -> str | None:
    """Batch decisions, and only they, carry a batch caller (no API key may be named so); a row
    whose origin and caller disagree had its origin edited."""
    if table != "decisions":
        return None
    if str(values[4]).startswith(BATCH_CALLER_PREFIX) != (values[ORIGIN] == BATCH):
        return f"origin {values[ORIGIN]!r} does not fit caller {values[4]!r} (the origin was edited)"
    return None


def _variants(table: str, values: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...]:
    """The value tuples a row's hash may cover: the current form, and for a batch decision logged
    before the `origin` column existed (migration 0003 set its origin from its caller) the form
    without it."""
    current = hashed_values(table, values)
    if table == "decisions" and values[ORIGIN] == BATCH and str(values[4]).startswith(BATCH_CALLER_PREFIX):
        return current, values[:ORIGIN]
    return (current,)
