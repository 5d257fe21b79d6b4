"""Reads one model's time window from the decision log, aggregating in the database.

A window may hold millions of decisions, so nothing here walks them in Python: counts are SQL
aggregates over the `segments`/`intervened` columns and the covering `decisions_monitoring` index
(rows logged before those columns existed are read from the record JSON, in a separate query),
and only `sample` parses whole records, at most `n`, in chunks. The window is half-open,
[start, end), on `decisions.created_at`; feedback belongs to the window of the decision it
reviews, and only a decision's latest feedback row counts (a reviewer may revise a verdict).
"Policy-intervened" means a rule fired, as the frame's `policy_intervened`; "routed" means the
model decided and a rule moved the case off the automatic route.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from keel.feature_defs.contract import Contract
from keel.monitoring.frames import records_to_frame
from keel.monitoring.stats import check_edges
from keel.serving.batch_io import BATCH_CALLER_PREFIX
from keel.serving.database import Connection, Database

CHUNK = 5000
REVIEWED_COLUMNS = (
    "decision_id", "created_at", "model_version", "outcome", "abstained", "confidence", "most_likely",
    "final_outcome", "kind", "reason", "actor",
)  # fmt: skip
# Few distinct values: stored as shared strings so 300,000 reviewed rows stay small.
_LOW_CARDINALITY = ("model_version", "outcome", "most_likely", "final_outcome", "kind", "actor")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_WINDOW = "d.model = ? AND d.created_at >= ? AND d.created_at < ?"
# Latest feedback per decision of the window, in two steps that suit SQLite on big logs: walk the
# feedback index in decision_id order, touching only indexes (decision_id -> seq, restricted to
# the window's seq range), then fetch the decision and feedback rows in seq order and apply the
# exact window. Random row lookups by decision_id cost ~15 us each on a 4 GB log; these don't.
_HITS = (
    "WITH hit AS MATERIALIZED (SELECT MAX(d.seq) AS dseq, MAX(f.seq) AS fseq, COUNT(*) AS n_rows "
    "FROM feedback f CROSS JOIN decisions d WHERE d.decision_id = f.decision_id AND d.seq BETWEEN ? AND ? "
    "GROUP BY f.decision_id ORDER BY 1) "
)
_HIT_ROWS = (
    "FROM hit h CROSS JOIN decisions d CROSS JOIN feedback f "
    f"WHERE d.seq = h.dseq AND f.seq = h.fseq AND {_WINDOW}"
)


@dataclass(frozen=True)
class WindowSummary:
    """Counts for one model and window. `n_policy_intervened`: a rule fired; `n_policy_routed`:
    decided, and a rule moved it off route 'auto';
    `feedback_by_kind`: the latest feedback of each decision in the window, by kind;
    `n_feedback_rows`: all feedback rows on decisions in the window, revisions included."""

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
    n_feedback_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso(moment: datetime) -> str:
    """The writer's own timestamp format (UTC isoformat), so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    return moment.astimezone(UTC).isoformat()


class LogReader:
    def __init__(self, db: Database, include_batch: bool = False) -> None:
        self.db = db
        self.include_batch = include_batch
        """Also count decisions logged by `keel score --log` (left out of live monitoring by default)."""
        self._has_batch: bool | None = None

    def _live(self, sql: str) -> str:
        """`sql` with every window condition limited to live (not batch) decisions, if the log
        holds any batch decision; asked once, through the idempotency index, where batch rows
        always have a key, so logs without batch rows keep their index-only plans."""
        if self.include_batch:
            return sql
        # A range, not LIKE: indexable in both databases, and no '%' for psycopg to misread.
        lo, hi = BATCH_CALLER_PREFIX, BATCH_CALLER_PREFIX[:-1] + chr(ord(BATCH_CALLER_PREFIX[-1]) + 1)
        if self._has_batch is None:
            with self._reading() as conn:
                self._has_batch = bool(
                    conn.execute(
                        "SELECT 1 FROM decisions WHERE caller >= ? AND caller < ? "
                        "AND idempotency_key IS NOT NULL LIMIT 1",
                        (lo, hi),
                    ).fetchall()
                )
        if not self._has_batch:
            return sql
        return sql.replace(_WINDOW, f"{_WINDOW} AND NOT (d.caller >= '{lo}' AND d.caller < '{hi}')")

    def _json(self, column: str, *path: str) -> str:
        for part in path:
            if not _NAME.match(part):
                raise ValueError(f"not a plain field name: {part!r}")
        if self.db.is_postgres:
            return f"({column}::json" + "".join(f"->'{p}'" for p in path[:-1]) + f"->>'{path[-1]}')"
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def _segment(self, name: str, legacy: bool) -> str:
        """A segment value: from the `segments` column, or the record JSON on legacy rows."""
        return self._json("d.record", "inputs", name) if legacy else self._json("d.segments", name)

    def _fired(self, legacy: bool) -> str:
        """1 when a policy rule fired: the `intervened` column, or the record JSON on legacy rows."""
        if not legacy:
            return "d.intervened"
        rules = "(d.record::json)->'rules_fired'" if self.db.is_postgres else "d.record, '$.rules_fired'"
        return f"(CASE WHEN json_array_length({rules}) > 0 THEN 1 ELSE 0 END)"

    def _both(
        self, sql: str, window: tuple[str, str, str], names: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """`sql` (taking the window's parameters) over rows with the monitoring columns, then over
        legacy rows (`segments` NULL), apart so the first stays an index-only scan. In `sql`,
        <kind> selects the rows, <fired> is 1 when a rule fired, <segments> lists s0, s1, ..."""
        rows = []
        # Legacy rows are rare (migrated logs); their query reads every row, so skip it if none.
        (legacy_rows,) = self._query(
            f"SELECT COUNT(*) FROM decisions d WHERE {_WINDOW} AND d.segments IS NULL", window
        )[0]
        for legacy in (False, True) if legacy_rows else (False,):
            segs = "".join(f"{self._segment(s, legacy)} AS s{i}, " for i, s in enumerate(names))
            kind = f"d.segments IS {'' if legacy else 'NOT '}NULL"
            text = sql.replace("<kind>", kind).replace("<fired>", self._fired(legacy))
            rows += self._query(text.replace("<segments>", segs), window)
        return rows

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
            return [tuple(r) for r in conn.execute(self._live(sql), params).fetchall()]

    def _seq_range(self, window: tuple[str, str, str]) -> tuple[int, int, int]:
        """(decisions, lowest seq, highest seq) of the window, from the (model, created_at) index."""
        n, lo, hi = self._query(
            f"SELECT COUNT(*), MIN(d.seq), MAX(d.seq) FROM decisions d WHERE {_WINDOW}", window
        )[0]
        return int(n), int(lo or 0), int(hi or 0)

    def summary(self, model: str, start: datetime, end: datetime) -> WindowSummary:
        window = (model, iso(start), iso(end))
        # Group by the few (version, outcome, route, abstained) combinations, from the index,
        # and marginalise in Python; the groups are tens of rows.
        groups = self._both(
            "SELECT d.model_version, d.outcome, d.route, d.abstained, COUNT(*), SUM(<fired>), "
            f"MIN(d.created_at), MAX(d.created_at) FROM decisions d WHERE {_WINDOW} AND <kind> "
            "GROUP BY 1, 2, 3, 4",
            window,
        )
        g = pd.DataFrame(
            groups, columns=["version", "outcome", "route", "abst", "n", "fired", "first", "last"]
        )
        g["abst"], g["n"], g["fired"] = g["abst"].astype(bool), g["n"].astype(int), g["fired"].astype(int)
        dec = g[~g["abst"]]
        _, lo, hi = self._seq_range(window)
        feedback = self._query(
            f"{_HITS}SELECT f.kind, COUNT(*), SUM(h.n_rows) {_HIT_ROWS} GROUP BY f.kind", (lo, hi, *window)
        )
        return WindowSummary(
            model, window[1], window[2], int(g["n"].sum()), int(g["n"][g["abst"]].sum()), int(dec["n"].sum()),
            int(g["fired"].sum()), int(dec["n"][dec["route"] != "auto"].sum()), _counts(dec, "outcome"),
            _counts(g, "route"), _counts(g, "version"),
            min(g["first"], default=None), max(g["last"], default=None),
            {str(k): int(c) for k, c, _ in sorted(feedback)}, sum(int(r[2]) for r in feedback),
        )  # fmt: skip

    def sample(
        self, model: str, start: datetime, end: datetime, contract: Contract, n: int
    ) -> tuple[pd.DataFrame, int]:
        """Every k-th decision of the window in time order (k = ceil(total / n)), as the monitoring
        frame with latest feedback joined; returns (frame, decisions in the window).

        Systematic rather than random so two runs over the same window read the same rows."""
        window = (model, iso(start), iso(end))
        total = self._seq_range(window)[0]
        if total == 0 or n <= 0:
            return records_to_frame([], contract), total
        k = max(1, math.ceil(total / n))
        sql = (
            "WITH picked AS MATERIALIZED (SELECT seq, rn FROM (SELECT d.seq, ROW_NUMBER() OVER "
            f"(ORDER BY d.created_at, d.seq) AS rn FROM decisions d WHERE {_WINDOW}) AS numbered "
            f"WHERE (rn - 1) / {k} * {k} = rn - 1) "
            f"SELECT d.record, f.final_outcome, f.kind, f.actor, {self._json('f.record', 'reason')} "
            "FROM picked p JOIN decisions d ON d.seq = p.seq LEFT JOIN feedback f ON f.seq = "
            "(SELECT MAX(f2.seq) FROM feedback f2 WHERE f2.decision_id = d.decision_id) ORDER BY p.rn"
        )
        frames = []
        with self._reading() as conn:
            cur = conn.execute(self._live(sql), window)
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
        pulled from the record in SQL; columns REVIEWED_COLUMNS plus one per segment field.
        Row order is not part of the contract (no ORDER BY: sorting 300,000 wide rows costs)."""
        names = list(segments)
        clash = set(names) & set(REVIEWED_COLUMNS)
        if clash:
            raise ValueError(f"segment fields clash with reviewed columns: {sorted(clash)}")
        window = (model, iso(start), iso(end))
        _, lo, hi = self._seq_range(window)
        seg_sql = "".join(
            f", CASE WHEN d.segments IS NULL THEN {self._segment(s, True)} ELSE {self._segment(s, False)} END"
            for s in names
        )
        sql = (
            f"{_HITS}SELECT d.decision_id, d.created_at, d.model_version, d.outcome, d.abstained, "
            f"d.confidence, COALESCE(d.outcome, {self._json('d.record', 'explanation_full', 'class')}), "
            f"f.final_outcome, f.kind, {self._json('f.record', 'reason')}, f.actor{seg_sql} {_HIT_ROWS}"
        )
        with self._reading() as conn:
            cur = conn.execute(self._live(sql), (lo, hi, *window))
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
        keys = ", ".join([*(f"s{i}" for i in range(len(names))), "band"])
        # Grouping by every segment field at once is one scan; the combinations are few
        # (regions × channels × entities × lines × bands); per-field margins are summed below.
        # Materialised so SQLite does not carry each JSON text through the GROUP BY sorter to
        # re-extract the keys afterwards (13 s instead of 9 s on a million legacy rows).
        rows = self._both(
            f"WITH x AS MATERIALIZED (SELECT <segments>{band_sql} AS band, d.route, <fired> AS fired "
            f"FROM decisions d WHERE {_WINDOW} AND d.abstained = 0 AND <kind>) SELECT {keys}, COUNT(*), "
            f"SUM(fired), SUM(CASE WHEN route <> 'auto' THEN 1 ELSE 0 END) FROM x GROUP BY {keys}",
            (model, iso(start), iso(end)),
            names,
        )
        counts = ["n_decided", "n_intervened", "n_routed"]
        cube = pd.DataFrame(rows, columns=[*names, "band", *counts])
        parts = [pd.DataFrame(columns=["field", "value", "band", *counts])] + [
            cube.dropna(subset=[name]).groupby([name, "band"], as_index=False)[counts].sum()
            .rename(columns={name: "value"}).assign(field=name)
            for name in names
        ]  # fmt: skip
        out = pd.concat(parts, ignore_index=True)[["field", "value", "band", *counts]]
        return out.astype({"value": str, **{c: "int64" for c in ["band", *counts]}})


def _counts(groups: pd.DataFrame, column: str) -> dict[str, int]:
    counts = groups.groupby(column)["n"].sum().sort_values(ascending=False, kind="stable")
    return {str(k): int(v) for k, v in counts.items()}


def _chunked_frame(cur: Any, columns: list[str], shared: list[str]) -> pd.DataFrame:
    """Rows to a frame chunk by chunk; repeated strings (versions, classes, regions) become one
    shared object each via categoricals, instead of one Python string per row."""
    chunks = []
    while rows := cur.fetchmany(50_000):
        chunk = pd.DataFrame.from_records(rows, columns=columns)
        chunks.append(chunk.astype({c: "category" for c in shared}))
    if not chunks:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    data: dict[str, Any] = {
        c: pd.concat([k[c] for k in chunks], ignore_index=True) for c in columns if c not in shared
    }
    for col in shared:
        merged = pd.Series(pd.api.types.union_categoricals([c[col] for c in chunks], ignore_order=True))
        data[col] = merged.astype(object).where(merged.notna(), None)
    return pd.DataFrame(data)[columns]
