"""Decisions whose month left the live log, found by id: `decision_ids` (which keeps every id
ever logged, with its seq) says where it sat in the chain, the `remove` event covering that seq
says which archive and month hold it, and the month's Parquet file gives the row back as the live
log stored it, with `archived` = {"url", "month"} saying where it came from.

Feedback on an archived decision is read from the same archive (its month and every later removed
month: a reviewer's word may come months later) and the live log; new feedback on it is logged
live as usual.
"""

from __future__ import annotations

from typing import Any

import fsspec
import pyarrow.parquet as pq

from keel.decision_log.database import Database
from keel.decision_log.retention import Event, events

__all__ = ["archived_decision", "archived_feedback"]


def _covering(removals: list[Event], seq: int) -> Event | None:
    for event in reversed(removals):
        part = event.detail["segments"]["decisions"]
        if part["first_seq"] is not None and part["first_seq"] <= seq <= part["last_seq"]:
            return event
    return None


def _rows(url: str, month: str, table: str, column: str, value: Any) -> list[dict[str, Any]]:
    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root.rstrip('/')}/{month}/{table}.parquet"
    if not fs.exists(path):
        return []  # that month's archive was deleted under the retention policy
    with fs.open(path, "rb") as handle:
        found = pq.read_table(handle, filters=[(column, "==", value)]).to_pylist()
    return sorted(found, key=lambda r: int(r["seq"]))


def archived_decision(db: Database, decision_id: str) -> dict[str, Any] | None:
    """The decision as its archive holds it (None: never logged, or its archive is gone)."""
    with db.reading() as reader:
        row = reader.one("SELECT seq FROM decision_ids WHERE decision_id = ?", (decision_id,))
        if row is None:
            return None
        event = _covering(events(reader, ("remove",)), int(row[0]))
    if event is None or event.month is None:
        return None
    found = _rows(event.detail["url"], event.month, "decisions", "seq", int(row[0]))
    if not found:
        return None
    return {**found[0], "archived": {"url": event.detail["url"], "month": event.month}}


def archived_feedback(db: Database, decision: dict[str, Any]) -> list[dict[str, Any]]:
    """Feedback on an archived decision kept in the archive, oldest first."""
    where = decision["archived"]
    with db.reading() as reader:
        later = [e for e in events(reader, ("remove",)) if e.month and e.month >= where["month"]]
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for event in later:
        place = (event.detail["url"], str(event.month))
        if place in seen:  # removed, restored and removed again
            continue
        seen.add(place)
        out.extend(_rows(*place, "feedback", "decision_id", decision["decision_id"]))
    return out
