"""Searches of the log for the review console (keel/console); its aggregate pages read the
summaries each monitor run stores (keel.monitoring.workload), not this.

Parameterised SQL only: a filter's value is always a bound parameter, and the only names put
into SQL text come from fixed tuples (schema.SEGMENT_FIELDS). Lists are keyset-paginated on
`seq` (newest first) and every result is bounded.
A segment filter on SQLite matches the `segments` column's JSON text, which rows.py writes with
sorted keys and no spaces, so `"region":"EMEA"` is an exact match; on PostgreSQL it compares
`(segments::jsonb ->> field)`, the expression migration 0009 indexes, so a value no decision has
is an empty index probe rather than a scan of the log. `abstained` is put into the SQL as 0 or 1
(a bool, never user text) so PostgreSQL can use the partial index on abstentions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.decision_log.chain import (
    BATCH,
    BATCH_CALLER_PREFIX,
    DECISION_COLUMNS,
    LIVE,
    ORIGIN,
    hashed_values,
    legacy_row_hash,
    row_hash,
)
from keel.decision_log.database import Database, Reader
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.schema import SEGMENT_FIELDS
from keel.decision_log.windows import AUDITED

__all__ = [
    "FEW_FEEDBACK",
    "MAX_PAGE",
    "SEGMENT_FIELDS",
    "ChainPlace",
    "DecisionQuery",
    "chain_place",
    "search",
    "search_sql",
    "stream",
]

MAX_PAGE = 200

_NAMES = (
    "seq", "decision_id", "model", "model_version", "created_at", "caller", "case_id", "outcome",
    "abstained", "route", "confidence", "origin",
)  # fmt: skip
_SEGMENTS = sorted(SEGMENT_FIELDS)  # the order the `segments` JSON keeps (sorted keys)
_SEGMENT_RECORD = "json_to_record(d.segments::json) AS s(" + ", ".join(f"{f} text" for f in _SEGMENTS) + ")"
"""PostgreSQL: the segment values as columns of `s`, the JSON parsed once a row (each `->>` parses
the whole text again)."""
_LATEST = "FROM feedback f WHERE f.decision_id = d.decision_id ORDER BY f.seq DESC LIMIT 1"
"""The decision's latest feedback revision: one probe of feedback's decision index (per partition)."""


def _select(postgres: bool, columns: str | None = None) -> str:
    """SELECT _NAMES, each segment field's value, the latest feedback's final_outcome and kind,
    FROM decisions d; on PostgreSQL `columns` may replace that list (over `d`, the decision, `s`,
    its segment values, and `lf`, its latest feedback revision: keel.decision_log.export's CSV).
    The database takes the segment values out of the JSON (10,000 json.loads were a third of an
    export's Python time).
    On PostgreSQL one LATERAL probe serves both feedback columns: a correlated subquery per column
    sorts every feedback partition's match per row, twice (a 10,000-row export at 100k decisions:
    290-520 ms against 110-250 ms); SQLite has no LATERAL, and no partitions to sort."""
    pick = "s.{}" if postgres else "json_extract(d.segments, '$.{}')"
    if columns is not None and not postgres:
        raise ValueError("a select list of its own is for PostgreSQL's statement only")
    if columns is None:
        names = ", ".join([*(f"d.{name}" for name in _NAMES), *(pick.format(f) for f in _SEGMENTS)])
        columns = f"{names}, lf.final_outcome, lf.kind" if postgres else names
    if postgres:
        return (
            f"SELECT {columns} FROM decisions d LEFT JOIN LATERAL {_SEGMENT_RECORD} ON TRUE "
            f"LEFT JOIN LATERAL (SELECT f.final_outcome, f.kind {_LATEST}) lf ON TRUE"
        )
    return f"SELECT {columns}, (SELECT f.final_outcome {_LATEST}), (SELECT f.kind {_LATEST}) FROM decisions d"


# The decisions some feedback revision overrode / gave this final outcome: a superset of those
# whose latest revision did, read from migration 0013's feedback indexes.
_OVERRIDDEN = "SELECT f.decision_id FROM feedback f WHERE f.kind = 'override'"
_FINALLY = "SELECT f.decision_id FROM feedback f WHERE f.final_outcome = ?"
FEW_FEEDBACK = 50
"""An overridden or final-outcome search looks its candidates up while they number fewer than
sqrt(FEW_FEEDBACK x the window's decisions), else walks the window (see search_sql): then either
way costs at most about that many probes (some 22,000 at 10M decisions; a page is 50 rows)."""


@dataclass(frozen=True)
class DecisionQuery:
    """A decision search: every field set narrows it; `since`/`until` are ISO timestamps (UTC)."""

    since: str
    until: str
    model: str | None = None
    model_version: str | None = None
    outcome: str | None = None
    abstained: bool | None = None
    route: str | None = None
    case_id: str | None = None
    decision_id: str | None = None
    caller: str | None = None
    origin: str | None = None
    overridden: bool | None = None
    answered: bool | None = None
    """Has any feedback (False: still waiting for its final outcome)."""
    to_review: bool | None = None
    """Routed to a person (any route but `auto`)."""
    queued: bool | None = None
    """In the review queue: routed to a person or selected for audit (windows.AUDITED)."""
    final_outcome: str | None = None
    segments: dict[str, str] = field(default_factory=dict)
    before_seq: int | None = None
    """Keyset: only rows older than this seq (the last row of the previous page)."""

    def where(self, postgres: bool = False, by_feedback: bool = False) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters. `by_feedback`: narrow an overridden or final-outcome
        search to the decisions such feedback names (see search_sql)."""
        clauses = ["d.created_at >= ?", "d.created_at < ?"]
        params: list[Any] = [self.since, self.until]
        for column, value in (
            ("model", self.model),
            ("model_version", self.model_version),
            ("outcome", self.outcome),
            ("route", self.route),
            ("case_id", self.case_id),
            ("decision_id", self.decision_id),
            ("caller", self.caller),
            ("origin", self.origin),
        ):
            if value is not None:
                clauses.append(f"d.{column} = ?")
                params.append(value)
        # Implied by the equality, stated as literals so the planner may use the partial indexes
        # of migration 0013 whatever the bound value (a generic plan cannot see it).
        if self.route is not None and self.route != "auto":
            clauses.append("d.route <> 'auto'")
        if self.origin is not None and self.origin != LIVE:
            clauses.append("d.origin <> 'live'")
        if self.abstained is not None:
            clauses.append(f"d.abstained = {int(self.abstained)}")
        for name in SEGMENT_FIELDS:
            if name not in self.segments:
                continue
            if postgres:
                clauses.append(f"((d.segments::jsonb) ->> '{name}') = ?")
                params.append(self.segments[name])
            else:
                clauses.append("d.segments LIKE ? ESCAPE '!'")
                params.append(f"%{_like(json.dumps(name))}:{_like(json.dumps(self.segments[name]))}%")
        if self.overridden and by_feedback:
            clauses.append(f"d.decision_id IN ({_OVERRIDDEN})")
        if self.overridden is not None:
            clauses.append(_latest_is("f.kind = 'override'", self.overridden))
        if self.answered is not None:
            clauses.append(
                ("" if self.answered else "NOT ")
                + "EXISTS (SELECT 1 FROM feedback f WHERE f.decision_id = d.decision_id)"
            )
        if self.to_review is not None:
            clauses.append("d.route <> 'auto'" if self.to_review else "d.route = 'auto'")
        if self.queued is not None:
            clauses.append(("" if self.queued else "NOT ") + "(d.route <> 'auto' OR d.record LIKE ?)")
            params.append(AUDITED)
        if self.final_outcome is not None and by_feedback:
            clauses.append(f"d.decision_id IN ({_FINALLY})")
            params.append(self.final_outcome)
        if self.final_outcome is not None:
            clauses.append(_latest_is("f.final_outcome = ?"))
            params.append(self.final_outcome)
        if self.before_seq is not None:
            clauses.append("d.seq < ?")
            params.append(self.before_seq)
        return " AND ".join(clauses), params


def _latest_is(condition: str, holds: bool = True) -> str:
    """The decision's latest feedback revision meets `condition` (or, `holds` False, does not): one
    that does with none after it. A decision without feedback costs one probe of feedback's
    decision index (per partition), where comparing with its max(seq) would cost two. Tested as
    `IS TRUE`/`IS FALSE`, which PostgreSQL keeps a per-row check of the rows walked (a bare EXISTS
    it may turn into a join that reads the whole window to sort it)."""
    return (
        f"(EXISTS (SELECT 1 FROM feedback f WHERE f.decision_id = d.decision_id AND {condition} "
        "AND NOT EXISTS (SELECT 1 FROM feedback g WHERE g.decision_id = d.decision_id AND g.seq > f.seq)))"
        f" IS {'TRUE' if holds else 'FALSE'}"
    )


def _like(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(_NAMES, values[: len(_NAMES)], strict=True))
    row["abstained"] = bool(row["abstained"])
    segments = values[len(_NAMES) : len(_NAMES) + len(_SEGMENTS)]
    row["segments"] = {f: v for f, v in zip(_SEGMENTS, segments, strict=True) if v is not None}
    row["final_outcome"], row["feedback_kind"] = values[-2:]
    return row


def search_sql(
    db: Database, query: DecisionQuery, limit: int, columns: str | None = None
) -> tuple[str, list[Any]]:
    """The statement a search or export runs (newest first, at most `limit` rows) and its parameters;
    `columns` replaces the select list on PostgreSQL (see _select).

    An overridden or final-outcome search can go two ways: look up each decision that feedback of
    that kind names (an index range of migration 0013, then one probe each), or walk the window
    newest first checking each decision's latest feedback until the page is full. The first costs
    what the candidates number, the second what the page's rarity does: with few candidates
    (a final outcome reviewers rarely give, none at all) the first is cheap and the second would
    read the whole window; with many, matches are common and the walk stops after a few pages'
    worth while the lookups would not. The planner cannot tell the two apart (it cannot estimate
    "latest revision"), so the candidates are counted first, by index, up to the square root of
    FEW_FEEDBACK times the window's size: below it the lookups cost less than the walk's worst case.
    (The counts cover all feedback, not just the window's, so a window holding few of many
    candidates still walks; it is bounded by the window.)"""
    where, params = query.where(db.is_postgres, by_feedback=_few_candidates(db, query))
    return f"{_select(db.is_postgres, columns)} WHERE {where} ORDER BY d.seq DESC LIMIT ?", [*params, limit]


def _few_candidates(db: Database, query: DecisionQuery) -> bool:
    conditions, params = [], []
    if query.overridden:
        conditions.append("f.kind = 'override'")
    if query.final_outcome is not None:
        conditions.append("f.final_outcome = ?")
        params.append(query.final_outcome)
    if not conditions:
        return False
    with db.reading() as reader:
        cap = math.isqrt(FEW_FEEDBACK * _window_size(reader, query)) + 1
        sql = f"SELECT count(*) FROM (SELECT 1 FROM feedback f WHERE {' AND '.join(conditions)} LIMIT ?) c"
        row = reader.one(sql, [*params, cap])
    return row is not None and int(row[0]) < cap


def _window_size(reader: Reader, query: DecisionQuery) -> int:
    """About how many decisions the window holds: PostgreSQL's estimate from its statistics; on
    SQLite (no statistics, no created_at index) the whole log's, from its first and last seq."""
    if reader.postgres:
        row = reader.one(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM decisions d WHERE d.created_at >= ? AND d.created_at < ?",
            [query.since, query.until],
        )
        return int(row[0][0]["Plan"]["Plan Rows"]) if row else 0
    row = reader.one("SELECT max(seq) - min(seq) + 1 FROM decisions")
    return int(row[0]) if row and row[0] is not None else 0


def search(db: Database, query: DecisionQuery, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
    """One page of matching decisions, newest first, and the seq to continue from (None: last page)."""
    limit = max(1, min(limit, MAX_PAGE))
    sql, params = search_sql(db, query, limit + 1)
    with db.reading() as reader:
        reader.without_jit()
        rows = reader.all(sql, params)
    page = [_row(r) for r in rows[:limit]]
    return page, (page[-1]["seq"] if len(rows) > limit else None)


def stream(db: Database, query: DecisionQuery, limit: int, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Up to `limit` matching decisions, newest first, read in chunks (a CSV export)."""
    sql, params = search_sql(db, query, limit)
    with db.reading() as reader:
        reader.without_jit()
        for batch in reader.stream(sql, params, chunk):
            for values in batch:
                yield _row(values)


@dataclass(frozen=True)
class ChainPlace:
    """Whether one decision's row fits its place in the hash chain."""

    seq: int
    content_ok: bool
    """Its hash is recomputed from its content and the previous hash it records."""
    linked_before: bool
    """The previous row's hash is the one it records."""
    linked_after: bool | None
    """The next row records its hash (None: it is the newest row and the chain head is it)."""
    problem: str | None


_DECISION_COLUMNS_SQL = ", ".join(DECISION_COLUMNS)


def chain_place(db: Database, keys: ChainKeys, decision_id: str) -> ChainPlace | None:
    """Recompute one decision row's hash and check its links to the rows before and after it."""
    with db.reading(snapshot=True) as reader:
        row = reader.one(
            f"SELECT seq, {_DECISION_COLUMNS_SQL}, prev_hash, row_hash, key_id "
            "FROM decisions WHERE decision_id = ?",
            (decision_id,),
        )
        if row is None:
            return None
        seq, values, prev, stored, key_id = int(row[0]), tuple(row[1:-3]), row[-3], row[-2], row[-1]
        before = reader.one("SELECT row_hash FROM decisions WHERE seq < ? ORDER BY seq DESC LIMIT 1", (seq,))
        after = reader.one("SELECT prev_hash FROM decisions WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))
        head = reader.one("SELECT seq, row_hash FROM chain_heads WHERE name = 'decisions'")
    variants = [hashed_values("decisions", values)]
    if values[ORIGIN] == BATCH and str(values[4]).startswith(BATCH_CALLER_PREFIX):
        variants.append(values[:ORIGIN])  # a batch row logged before the origin column existed
    if key_id is None:
        content_ok = any(row_hash(prev, v) == stored or legacy_row_hash(prev, v) == stored for v in variants)
        problem = None if content_ok else "row content does not match its hash"
    elif key_id not in keys.keys:
        content_ok, problem = False, f"signed with chain key {key_id!r}, which this service's key file lacks"
    else:
        content_ok = any(row_hash(prev, v, keys.keys[key_id]) == stored for v in variants)
        problem = None if content_ok else "row content does not match its keyed hash"
    linked_before = (before[0] if before else "0" * 64) == prev
    if not linked_before and problem is None:
        problem = "the previous row's hash is not the one this row records"
    linked_after = None if after is None else after[0] == stored
    if after is None and head is not None and (int(head[0]), str(head[1])) != (seq, stored):
        linked_after = False
    if linked_after is False and problem is None:
        problem = "the next row does not record this row's hash"
    return ChainPlace(seq, content_ok, linked_before, linked_after, problem)
