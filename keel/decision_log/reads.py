"""Reads of single decisions and feedback: lookups, idempotent replays, the latest word.

Every statement here runs either on a pooled connection (pre-pinged, so a database restart
costs nothing) or on the writer's connection inside its transaction, when a replay must see
exactly what the write would race with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from keel.decision_log.chain import SHADOW
from keel.decision_log.database import Connection, Database

__all__ = [
    "MAX_PAGE",
    "as_dicts",
    "decided_per_segment",
    "decision",
    "decisions_by_key",
    "decisions_of_process",
    "decisions_per_model",
    "feedback_by_id",
    "feedback_for",
    "feedback_id_archived",
    "labelled_rows",
    "latest_feedback",
]

# Through `decision_ids`, which says who holds a key now: a restored month may bring back rows with
# a key that a newer live decision holds (keel.decision_log.retention), and the replay is the
# holder's. The join on (seq, created_at) reads one partition on PostgreSQL.
_BY_KEY = (
    "SELECT d.* FROM decision_ids i JOIN decisions d ON d.seq = i.seq AND d.created_at = i.created_at "
    "WHERE i.caller = ? AND i.model = ? AND i.idempotency_key = ? ORDER BY i.request_index"
)


def as_dicts(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [_from_db(dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def _one_shot(db: Database, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    with db.reading() as reader:
        return as_dicts(reader.conn, sql, params)


def decision(db: Database, decision_id: str) -> dict[str, Any] | None:
    """The decision from the live log, else from the archive of its month (with `archived` saying
    which: keel.decision_log.archived)."""
    rows = _one_shot(db, "SELECT * FROM decisions WHERE decision_id = ?", (decision_id,))
    if rows:
        return rows[0]
    # Imported here: archives bring pyarrow and fsspec, which only a lookup of an archived id needs.
    from keel.decision_log.archived import archived_decision

    found = archived_decision(db, decision_id)
    return _from_db(found) if found else None


def decisions_per_model(db: Database) -> dict[str, int]:
    """Decisions logged per model (from the (model, created_at) index)."""
    rows = _one_shot(db, "SELECT model, COUNT(*) AS n FROM decisions GROUP BY model ORDER BY model", ())
    return {str(r["model"]): int(r["n"]) for r in rows}


def feedback_for(
    db: Database, decision_id: str, decision: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every feedback revision on a decision, oldest first (the last one counts); given the
    decision as `decision()` returned it from an archive, the archived revisions first."""
    live = _one_shot(db, "SELECT * FROM feedback WHERE decision_id = ? ORDER BY seq", (decision_id,))
    if decision is None or "archived" not in decision:
        return live
    from keel.decision_log.archived import archived_feedback

    return [_from_db(r) for r in archived_feedback(db, decision)] + live


def decisions_by_key(
    target: Database | Connection, caller: str, model: str, key: str
) -> list[dict[str, Any]]:
    """The decisions an earlier request with this Idempotency-Key logged, in request order."""
    if isinstance(target, Database):
        return _one_shot(target, _BY_KEY, (caller, model, key))
    return as_dicts(target, _BY_KEY, (caller, model, key))


MAX_PAGE = 200
"""Most decisions one page of a process instance's decisions holds."""


def decisions_of_process(
    db: Database, process_instance: str, limit: int, after: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
    """One page of a process instance's decisions, oldest first (keyset on seq, from the partial
    index on (process_instance, seq)), the feedback on them, and the seq to continue after
    (None: last page). Live and batch decisions: a shadow's carry the context of the decision
    they shadow, but the process was never answered with them."""
    limit = max(1, min(limit, MAX_PAGE))
    with db.reading() as reader:
        rows = as_dicts(
            reader.conn,
            "SELECT * FROM decisions WHERE process_instance = ? AND seq > ? AND origin <> ? "
            "ORDER BY seq LIMIT ?",
            (process_instance, after or 0, SHADOW, limit + 1),
        )
        page = rows[:limit]
        ids = [r["decision_id"] for r in page]
        feedback = (
            as_dicts(
                reader.conn,
                f"SELECT * FROM feedback WHERE decision_id IN ({', '.join('?' * len(ids))}) ORDER BY seq",
                ids,
            )
            if ids
            else []
        )
    return page, feedback, (int(page[-1]["seq"]) if len(rows) > limit else None)


def feedback_by_id(conn: Connection, feedback_id: str) -> list[dict[str, Any]]:
    return as_dicts(conn, "SELECT * FROM feedback WHERE feedback_id = ?", (feedback_id,))


def feedback_id_archived(conn: Connection, feedback_id: str) -> bool:
    """Whether the id was logged but its row has left the live log (its month was archived and
    removed): `feedback_ids` keeps every id, so it cannot be logged again."""
    return (
        conn.execute("SELECT 1 FROM feedback_ids WHERE feedback_id = ?", (feedback_id,)).fetchone()
        is not None
    )


def latest_feedback(conn: Connection, decision_id: str, actor: str) -> dict[str, Any] | None:
    """This reviewer's latest word on a decision, or None."""
    rows = as_dicts(
        conn,
        "SELECT * FROM feedback WHERE decision_id = ? AND actor = ? ORDER BY seq DESC LIMIT 1",
        (decision_id, actor),
    )
    return rows[0] if rows else None


LABELLED_SQL = """
SELECT d.record, f.final_outcome, d.created_at
FROM decisions d
JOIN feedback f ON f.decision_id = d.decision_id
WHERE d.model = ? AND f.seq = (SELECT max(f2.seq) FROM feedback f2 WHERE f2.decision_id = d.decision_id)
ORDER BY d.created_at, d.seq
"""


def labelled_rows(db: Database, model: str, chunk: int = 5000) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(record, latest final outcome, created_at) of every reviewed decision of a model, oldest
    first, streamed (a server-side cursor on PostgreSQL)."""
    with db.reading() as reader:
        for batch in reader.stream(LABELLED_SQL, (model,), chunk):
            for record, final, created in batch:
                yield json.loads(record), final, created


def _from_db(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out.get("record"), str):
        out["record"] = json.loads(out["record"])
    if "abstained" in out:
        out["abstained"] = bool(out["abstained"])
    return out


def decided_per_segment(db: Database, model: str, field: str, start: str, end: str) -> dict[str, int]:
    """Live decided (not abstained) cases of `model` created in [start, end), per value of the
    segment field `field` (a missing value counts as "None")."""
    sql = (
        "SELECT segments FROM decisions WHERE model = ? AND created_at >= ? AND created_at < ? "
        "AND abstained = 0 AND origin = 'live'"
    )
    counts: dict[str, int] = {}
    with db.reading() as reader:
        for chunk in reader.stream(sql, (model, start, end)):
            for (text,) in chunk:
                value = str(json.loads(text or "{}").get(field))
                counts[value] = counts.get(value, 0) + 1
    return counts
