"""The reads `keel compare` needs: a window's live and shadow decisions with their latest feedback.

Each row carries what pairs a shadow decision with the live one it shadows (`shadow_of` in the
shadow's record) and which alias served a live decision (champion or canary, in its record's
versions), extracted in SQL so the records themselves are not shipped to the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from keel.decision_log.chain import LIVE, SHADOW
from keel.decision_log.database import Database

__all__ = ["ComparedRow", "compared_rows", "window_mix"]


@dataclass(frozen=True)
class ComparedRow:
    decision_id: str
    origin: str
    version: str
    alias: str | None
    shadow_of: str | None
    outcome: str | None
    abstained: bool
    segments: str | None
    final_outcome: str | None
    """The latest reviewer's word on the (live) decision, if any."""


def _field(db: Database, *path: str) -> str:
    if db.is_postgres:
        return "(d.record::json" + "".join(f"->'{p}'" for p in path[:-1]) + f"->>'{path[-1]}')"
    return f"json_extract(d.record, '$.{'.'.join(path)}')"


def compared_rows(db: Database, model: str, start: str, end: str, chunk: int = 5000) -> Iterator[ComparedRow]:
    """Live and shadow decisions of `model` in [start, end), in log order."""
    sql = (
        f"SELECT d.decision_id, d.origin, d.model_version, {_field(db, 'versions', 'alias')}, "
        f"{_field(db, 'shadow_of')}, d.outcome, d.abstained, d.segments, "
        "(SELECT f.final_outcome FROM feedback f WHERE f.decision_id = d.decision_id "
        "ORDER BY f.seq DESC LIMIT 1) "
        "FROM decisions d WHERE d.model = ? AND d.created_at >= ? AND d.created_at < ? "
        f"AND d.origin IN ('{LIVE}', '{SHADOW}') ORDER BY d.seq"
    )
    with db.reading(snapshot=True) as reader:
        for rows in reader.stream(sql, (model, start, end), chunk):
            for r in rows:
                yield ComparedRow(str(r[0]), str(r[1]), str(r[2]), r[3], r[4], r[5], bool(r[6]), r[7], r[8])


def window_mix(db: Database, model: str, start: str, end: str) -> tuple[int, int, int]:
    """(live decisions, shadow decisions, versions that served live) in [start, end), counted
    from the monitoring index: whether there is anything to compare before streaming the rows."""
    sql = (
        "SELECT d.origin, COUNT(*), COUNT(DISTINCT d.model_version) FROM decisions d "
        "WHERE d.model = ? AND d.created_at >= ? AND d.created_at < ? "
        f"AND d.origin IN ('{LIVE}', '{SHADOW}') GROUP BY d.origin"
    )
    with db.reading() as reader:
        counts = {str(o): (int(n), int(v)) for o, n, v in reader.all(sql, (model, start, end))}
    live, versions = counts.get(LIVE, (0, 0))
    return live, counts.get(SHADOW, (0, 0))[0], versions
