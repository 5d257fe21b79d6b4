"""Reads one model's time window from the decision log, aggregating in the database.

A window may hold millions of decisions, so nothing here walks all of them in Python: counts are
SQL aggregates, segment fields come out of the record JSON in SQL, and only `sample` parses whole
records, for at most `n` rows fetched in chunks. The window is half-open, [start, end), on
`decisions.created_at`; feedback belongs to the window of the decision it reviews, and only the
latest feedback row of a decision counts (a reviewer may revise a verdict).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from feature_defs.contract import Contract
from monitoring.frames import records_to_frame
from monitoring.stats import check_edges
from serving.database import Connection, Database

CHUNK = 5000
REVIEWED_COLUMNS = (
    "decision_id", "created_at", "model_version", "outcome", "abstained", "confidence", "most_likely",
    "final_outcome", "kind", "reason", "actor",
)  # fmt: skip
# Few distinct values: stored as shared strings so 300,000 reviewed rows stay small.
_LOW_CARDINALITY = ("model_version", "outcome", "most_likely", "final_outcome", "kind", "actor")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_LATEST = "f.seq = (SELECT MAX(f2.seq) FROM feedback f2 WHERE f2.decision_id = {d}.decision_id)"
_WINDOW = "d.model = ? AND d.created_at >= ? AND d.created_at < ?"


@dataclass(frozen=True)
class WindowSummary:
    """Counts for one model and window. `n_policy_intervened` counts decisions on which at least
    one policy rule fired (the frame's `policy_intervened`, notify-only rules included);
    `n_policy_routed` counts decided cases a rule sent off the automatic path (route != auto)."""

    model: str
    start: str
    end: str
    n_decisions: int
    n_abstained: int
    n_decided: int
    n_policy_intervened: int
    n_policy_routed: int
    outcomes: dict[str, int]
    routes: dict[str, int]
    model_versions: dict[str, int]
    first_at: str | None
    last_at: str | None
    feedback_by_kind: dict[str, int] = field(default_factory=dict)
    """Latest feedback per decision in the window, by kind (override/confirmation/label)."""
    n_feedback_rows: int = 0
    """All feedback rows on decisions in the window, revisions included."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso(moment: datetime) -> str:
    """The writer's own timestamp format (UTC isoformat), so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    return moment.astimezone(UTC).isoformat()


class LogReader:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _json(self, column: str, *path: str) -> str:
        for part in path:
            if not _NAME.match(part):
                raise ValueError(f"not a plain field name: {part!r}")
        if self.db.is_postgres:
            return f"({column}::json" + "".join(f"->'{p}'" for p in path[:-1]) + f"->>'{path[-1]}')"
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def _rules_fired(self, column: str) -> str:
        pg = self.db.is_postgres
        return (
            f"json_array_length(({column}::json)->'rules_fired')"
            if pg
            else f"json_array_length({column}, '$.rules_fired')"
        )

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        conn = self.db.connect()
        try:
            yield conn
            conn.commit()  # ends PostgreSQL's implicit read transaction
        finally:
            conn.close()

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._reading() as conn:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]

    def summary(self, model: str, start: datetime, end: datetime) -> WindowSummary:
        window = (model, iso(start), iso(end))
        # One scan: group by the few (version, outcome, route, abstained) combinations and
        # marginalise in Python; the groups are tens of rows, not the window's decisions.
        groups = self._query(
            "SELECT d.model_version, d.outcome, d.route, d.abstained, COUNT(*), "
            f"SUM(CASE WHEN {self._rules_fired('d.record')} > 0 THEN 1 ELSE 0 END), "
            "MIN(d.created_at), MAX(d.created_at) "
            f"FROM decisions d WHERE {_WINDOW} GROUP BY d.model_version, d.outcome, d.route, d.abstained",
            window,
        )
        versions, outcomes, routes = Counter[str](), Counter[str](), Counter[str]()
        n = abstained = intervened = routed = 0
        for version, outcome, route, abst, count, fired, _, _ in groups:
            n, intervened = n + int(count), intervened + int(fired or 0)
            versions[str(version)] += int(count)
            routes[str(route)] += int(count)
            if abst:
                abstained += int(count)
            else:
                outcomes[str(outcome)] += int(count)
                routed += int(count) if route != "auto" else 0
        feedback = self._query(
            f"SELECT f.kind, SUM(CASE WHEN {_LATEST.format(d='f')} THEN 1 ELSE 0 END), COUNT(*) "
            "FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id "
            f"WHERE {_WINDOW} GROUP BY f.kind",
            window,
        )
        return WindowSummary(
            model, window[1], window[2], n, abstained, n - abstained, intervened, routed,
            dict(outcomes.most_common()), dict(routes.most_common()), dict(versions.most_common()),
            min((g[6] for g in groups), default=None), max((g[7] for g in groups), default=None),
            {str(k): int(c) for k, c, _ in sorted(feedback) if c}, sum(int(r[2]) for r in feedback),
        )  # fmt: skip

    def sample(
        self, model: str, start: datetime, end: datetime, contract: Contract, n: int
    ) -> tuple[pd.DataFrame, int]:
        """Every k-th decision of the window in time order (k = ceil(total / n)), as the monitoring
        frame with latest feedback joined; returns (frame, decisions in the window).

        Systematic rather than random so two runs over the same window read the same rows."""
        window = (model, iso(start), iso(end))
        (total,) = self._query(f"SELECT COUNT(*) FROM decisions d WHERE {_WINDOW}", window)[0]
        total = int(total)
        if total == 0 or n <= 0:
            return records_to_frame([], contract), total
        k = max(1, math.ceil(total / n))
        sql = (
            "WITH numbered AS (SELECT d.seq, ROW_NUMBER() OVER (ORDER BY d.created_at, d.seq) AS rn "
            f"FROM decisions d WHERE {_WINDOW}) "
            f"SELECT d.record, f.final_outcome, f.kind, f.actor, {self._json('f.record', 'reason')} "
            "FROM numbered s JOIN decisions d ON d.seq = s.seq "
            f"LEFT JOIN feedback f ON {_LATEST.format(d='d')} "
            f"WHERE (s.rn - 1) / {k} * {k} = s.rn - 1 ORDER BY s.rn"
        )
        frames = []
        with self._reading() as conn:
            cur = conn.execute(sql, window)
            # Parse one chunk at a time so raw JSON text of the whole sample never coexists.
            while chunk := cur.fetchmany(CHUNK):
                records, feedback = [], {}
                for record_text, final, kind, actor, reason in chunk:
                    record = json.loads(record_text)
                    records.append(record)
                    if final is not None:
                        feedback[record["decision_id"]] = {
                            "final_outcome": final, "kind": kind, "actor": actor, "reason": reason,
                        }  # fmt: skip
                frames.append(records_to_frame(records, contract, feedback))
        return pd.concat(frames, ignore_index=True), total

    def reviewed(self, model: str, start: datetime, end: datetime, segments: Sequence[str]) -> pd.DataFrame:
        """Every decision of the window with feedback, latest feedback joined, segment fields
        pulled from the record in SQL; columns REVIEWED_COLUMNS plus one per segment field."""
        names = list(segments)
        clash = set(names) & set(REVIEWED_COLUMNS)
        if clash:
            raise ValueError(f"segment fields clash with reviewed columns: {sorted(clash)}")
        seg_sql = "".join(f", {self._json('d.record', 'inputs', s)}" for s in names)
        sql = (
            "SELECT d.decision_id, d.created_at, d.model_version, d.outcome, d.abstained, d.confidence, "
            f"COALESCE({self._json('d.record', 'explanation_full', 'class')}, d.outcome), "
            f"f.final_outcome, f.kind, {self._json('f.record', 'reason')}, f.actor{seg_sql} "
            "FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id "
            f"WHERE f.model = ? AND {_WINDOW} AND {_LATEST.format(d='f')} ORDER BY d.seq"
        )
        with self._reading() as conn:
            cur = conn.execute(sql, (model, model, iso(start), iso(end)))
            frame = _chunked_frame(cur, [*REVIEWED_COLUMNS, *names], [*_LOW_CARDINALITY, *names])
        frame["abstained"] = frame["abstained"].astype(bool)
        frame["confidence"] = frame["confidence"].astype("float64")
        return frame

    def decided_by_segment(
        self, model: str, start: datetime, end: datetime, segments: Sequence[str], bands: Sequence[float]
    ) -> pd.DataFrame:
        """Decided cases per segment value and confidence band (band i: edges[i] <= c < edges[i+1],
        outer bands open-ended, as `monitoring.stats.band_index`); columns field, value, band,
        n_decided, n_intervened (a rule fired), n_routed (route != auto)."""
        check_edges(bands)
        names = list(segments)
        whens = " ".join(f"WHEN d.confidence < {float(e)!r} THEN {i}" for i, e in enumerate(bands[1:-1]))
        band_sql = f"CASE {whens} ELSE {len(bands) - 2} END" if whens else "0"
        seg_sql = "".join(f"{self._json('d.record', 'inputs', s)}, " for s in names)
        # Grouping by every segment field at once is one scan; the combinations are few
        # (regions × channels × entities × lines × bands), and per-field margins are summed below.
        positions = ", ".join(str(i + 1) for i in range(len(names) + 1))
        rows = self._query(
            f"SELECT {seg_sql}{band_sql}, COUNT(*), "
            f"SUM(CASE WHEN {self._rules_fired('d.record')} > 0 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN d.route <> 'auto' THEN 1 ELSE 0 END) "
            f"FROM decisions d WHERE {_WINDOW} AND d.abstained = 0 GROUP BY {positions}",
            (model, iso(start), iso(end)),
        )
        counts = ["n_decided", "n_intervened", "n_routed"]
        cube = pd.DataFrame(rows, columns=[*names, "band", *counts])
        parts = [
            cube.dropna(subset=[name]).groupby([name, "band"], as_index=False)[counts].sum()
            .rename(columns={name: "value"}).assign(field=name)
            for name in names
        ]  # fmt: skip
        out = (
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["value", "band", *counts])
        )
        out = out.reindex(columns=["field", "value", "band", *counts])
        return out.astype({"value": str, **{c: "int64" for c in ["band", *counts]}})


def _chunked_frame(cur: Any, columns: list[str], shared: list[str]) -> pd.DataFrame:
    """Rows to a frame chunk by chunk; repeated strings (versions, classes, regions) become one
    shared object each via categoricals, instead of one Python string per row."""
    chunks = []
    while rows := cur.fetchmany(50_000):
        chunk = pd.DataFrame.from_records(rows, columns=columns)
        chunks.append(chunk.astype({c: "category" for c in shared}))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    data: dict[str, Any] = {}
    for col in columns:
        if col in shared:
            merged = pd.Series(pd.api.types.union_categoricals([c[col] for c in chunks], ignore_order=True))
            data[col] = merged.astype(object).where(merged.notna(), None)
        else:
            data[col] = pd.concat([c[col] for c in chunks], ignore_index=True)
    return pd.DataFrame(data)
