"""Monitoring's reads of one model's time window: aggregates in SQL, records streamed in chunks.

A window may hold millions of decisions, so counts are SQL aggregates over the
`segments`/`intervened` columns and the covering `decisions_monitoring` index (rows logged before
those columns existed are read from the record JSON, in a separate query), and whole records are
streamed (a server-side cursor on PostgreSQL). The window is half-open, [start, end), on
`decisions.created_at`; only a decision's latest feedback row counts (a reviewer may revise).
keel.monitoring.log_reader shapes these rows into frames and summaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from keel.decision_log.chain import BATCH, BATCH_CALLER_PREFIX, LIVE
from keel.decision_log.database import Database

__all__ = ["AUDITED", "BATCH_CALLER_PREFIX", "Window", "WindowQueries"]

Window = tuple[str, str, str]
"""(model, start, end) with the bounds in the writer's UTC isoformat."""

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_WINDOW = "d.model = ? AND d.created_at >= ? AND d.created_at < ? AND d.origin IN (<origins>)"
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

AUDITED = '%"audit":{"selected":true%'
"""LIKE pattern of a record selected for audit: records are compact JSON (strict_json.dumps) and
the audit object starts with `selected` (keel.decision_log.audit_plans.AuditPlan.select). Text
matching, not JSON parsing: the queue's scan reads every automatic decision of the window."""
_AUDITED_SQL = "CASE WHEN d.record LIKE ? THEN 1 ELSE 0 END"


class WindowQueries:
    def __init__(self, db: Database, include_batch: bool = False) -> None:
        self.db = db
        self.include_batch = include_batch
        """Also count batch decisions (`keel score --log`); shadow decisions never count."""

    def _live(self, sql: str) -> str:
        """`sql` with every window condition limited to the origins monitoring counts (the
        `origin` column is in the covering index, so the scans stay index-only)."""
        origins = (LIVE, BATCH) if self.include_batch else (LIVE,)
        return sql.replace("<origins>", ", ".join(f"'{o}'" for o in origins))

    # -- SQL fragments ------------------------------------------------------------------------
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

    def _segment_values(self, names: Sequence[str]) -> str:
        """ ", s0, s1, ...": each segment value from whichever place the row keeps it."""
        return "".join(
            f", CASE WHEN d.segments IS NULL THEN {self._segment(s, True)} ELSE {self._segment(s, False)} END"
            for s in names
        )

    def _fired(self, legacy: bool) -> str:
        """1 when a policy rule fired: the `intervened` column, or the record JSON on legacy rows."""
        if not legacy:
            return "d.intervened"
        rules = "(d.record::json)->'rules_fired'" if self.db.is_postgres else "d.record, '$.rules_fired'"
        return f"(CASE WHEN json_array_length({rules}) > 0 THEN 1 ELSE 0 END)"

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.db.reading() as reader:
            return reader.all(self._live(sql), params)

    def _both(self, sql: str, window: Window, names: Sequence[str] = ()) -> list[tuple[Any, ...]]:
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

    # -- the reads ----------------------------------------------------------------------------
    def seq_range(self, window: Window) -> tuple[int, int, int]:
        """(decisions, lowest seq, highest seq) of the window, from the (model, created_at) index."""
        n, lo, hi = self._query(
            f"SELECT COUNT(*), MIN(d.seq), MAX(d.seq) FROM decisions d WHERE {_WINDOW}", window
        )[0]
        return int(n), int(lo or 0), int(hi or 0)

    def groups(self, window: Window) -> list[tuple[Any, ...]]:
        """(version, outcome, route, abstained, n, n rule fired, first, last) per combination."""
        return self._both(
            "SELECT d.model_version, d.outcome, d.route, d.abstained, COUNT(*), SUM(<fired>), "
            f"MIN(d.created_at), MAX(d.created_at) FROM decisions d WHERE {_WINDOW} AND <kind> "
            "GROUP BY 1, 2, 3, 4",
            window,
        )

    def feedback_kinds(self, window: Window) -> list[tuple[Any, ...]]:
        """(kind of the latest feedback, decisions, feedback rows incl. revisions) per kind."""
        _, lo, hi = self.seq_range(window)
        return self._query(
            f"{_HITS}SELECT f.kind, COUNT(*), SUM(h.n_rows) {_HIT_ROWS} GROUP BY f.kind", (lo, hi, *window)
        )

    def sample(self, window: Window, k: int, chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every k-th decision in time order with its latest feedback, in chunks of
        (record JSON, final_outcome, kind, actor, reason)."""
        sql = (
            "WITH picked AS MATERIALIZED (SELECT seq, rn FROM (SELECT d.seq, ROW_NUMBER() OVER "
            f"(ORDER BY d.created_at, d.seq) AS rn FROM decisions d WHERE {_WINDOW}) AS numbered "
            f"WHERE (rn - 1) / {int(k)} * {int(k)} = rn - 1) "
            f"SELECT d.record, f.final_outcome, f.kind, f.actor, {self._json('f.record', 'reason')} "
            "FROM picked p JOIN decisions d ON d.seq = p.seq LEFT JOIN feedback f ON f.seq = "
            "(SELECT MAX(f2.seq) FROM feedback f2 WHERE f2.decision_id = d.decision_id) ORDER BY p.rn"
        )
        with self.db.reading() as reader:
            yield from reader.stream(self._live(sql), window, chunk)

    def reviewed(
        self, window: Window, names: Sequence[str], chunk: int, audit: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Every decision of the window with feedback, latest feedback joined, in chunks of
        (decision_id, created_at, model_version, outcome, abstained, confidence, most likely class,
        final_outcome, kind, reason, actor, [audit columns,] *segment values). `audit` adds the
        record's audit.selected, audit.probability, audit.pool and the feedback's reviewer_pool,
        reviewer_segment (NULL where the JSON has none: rows from before audit sampling)."""
        _, lo, hi = self.seq_range(window)
        audit_sql = (
            "".join(f", {self._json('d.record', 'audit', k)}" for k in ("selected", "probability", "pool"))
            + "".join(f", {self._json('f.record', k)}" for k in ("reviewer_pool", "reviewer_segment"))
            if audit
            else ""
        )
        seg_sql = self._segment_values(names)
        sql = (
            f"{_HITS}SELECT d.decision_id, d.created_at, d.model_version, d.outcome, d.abstained, "
            f"d.confidence, COALESCE(d.outcome, {self._json('d.record', 'explanation_full', 'class')}), "
            f"f.final_outcome, f.kind, {self._json('f.record', 'reason')}, f.actor{audit_sql}{seg_sql} "
            f"{_HIT_ROWS}"
        )
        with self.db.reading() as reader:
            yield from reader.stream(self._live(sql), (lo, hi, *window), chunk)

    def review_words(
        self, window: Window, names: Sequence[str], chunk: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Each reviewer's latest word on a decision of the window whose case has a word from another
        reviewer (on the same decision, or on another decision of the window with the same
        `case_id`), in chunks of (case, decision_id, feedback created_at, actor, final_outcome,
        reviewer_pool, *segment values); case is the case_id, else the decision_id.

        Set-based, in three steps: each (decision, actor)'s latest feedback seq from the indexes
        (as _HITS), the case of each word with the lowest and highest actor over its case (a window
        function: a case has words from two reviewers exactly when they differ), then only the
        surviving rows fetched and their JSON parsed. A correlated probe per feedback row instead
        (MAX per actor, EXISTS over the case's other decisions) stalled for minutes at 10M."""
        sql = (
            "WITH word AS MATERIALIZED (SELECT MAX(d.seq) AS dseq, MAX(f.seq) AS fseq "
            "FROM feedback f CROSS JOIN decisions d WHERE d.decision_id = f.decision_id "
            "AND d.seq BETWEEN ? AND ? GROUP BY f.decision_id, f.actor), "
            "cased AS MATERIALIZED (SELECT w.dseq, w.fseq, f.actor, "
            "MIN(f.actor) OVER (PARTITION BY COALESCE(d.case_id, d.decision_id)) AS lo, "
            "MAX(f.actor) OVER (PARTITION BY COALESCE(d.case_id, d.decision_id)) AS hi "
            "FROM word w CROSS JOIN decisions d CROSS JOIN feedback f "
            f"WHERE d.seq = w.dseq AND f.seq = w.fseq AND {_WINDOW}) "
            "SELECT COALESCE(d.case_id, d.decision_id), d.decision_id, f.created_at, f.actor, "
            f"f.final_outcome, {self._json('f.record', 'reviewer_pool')}{self._segment_values(names)} "
            "FROM cased c CROSS JOIN decisions d CROSS JOIN feedback f "
            "WHERE c.lo <> c.hi AND c.actor IS NOT NULL AND d.seq = c.dseq AND f.seq = c.fseq "
            "ORDER BY c.dseq, c.fseq"
        )
        _, lo, hi = self.seq_range(window)
        with self.db.reading() as reader:
            yield from reader.stream(self._live(sql), (lo, hi, *window), chunk)

    def decided_cube(
        self, window: Window, names: Sequence[str], bands: Sequence[float]
    ) -> list[tuple[Any, ...]]:
        """Decided cases per combination of segment values and confidence band: (s0.., band,
        n_decided, n_intervened, n_routed). Band i: edges[i] <= c < edges[i+1], outer bands open."""
        whens = " ".join(f"WHEN d.confidence < {float(e)!r} THEN {i}" for i, e in enumerate(bands[1:-1]))
        band_sql = f"CASE {whens} ELSE {len(bands) - 2} END" if whens else "0"
        keys = ", ".join([*(f"s{i}" for i in range(len(names))), "band"])
        # Grouping by every segment field at once is one scan; the combinations are few.
        # Materialised so SQLite does not carry each JSON text through the GROUP BY sorter to
        # re-extract the keys afterwards (13 s instead of 9 s on a million legacy rows).
        return self._both(
            f"WITH x AS MATERIALIZED (SELECT <segments>{band_sql} AS band, d.route, <fired> AS fired "
            f"FROM decisions d WHERE {_WINDOW} AND d.abstained = 0 AND <kind>) SELECT {keys}, COUNT(*), "
            f"SUM(fired), SUM(CASE WHEN route <> 'auto' THEN 1 ELSE 0 END) FROM x GROUP BY {keys}",
            window,
            names,
        )

    def open_cases(self, window: Window, names: Sequence[str], chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        """The review queue at the window's end, in chunks of (route, created_at, audited,
        *segment values): decisions of the window routed to a person (any route but `auto`) or
        selected for audit, with no feedback logged before the window's end. "Selected for
        audit" is the console search's own test (AUDITED), so a count and its search agree."""
        sql = (
            f"SELECT d.route, d.created_at, {_AUDITED_SQL}{self._segment_values(names)} "
            f"FROM decisions d WHERE {_WINDOW} AND NOT EXISTS (SELECT 1 FROM feedback f "
            "WHERE f.decision_id = d.decision_id AND f.created_at < ?) "
            "AND (d.route <> 'auto' OR d.record LIKE ?)"
        )
        with self.db.reading() as reader:
            yield from reader.stream(self._live(sql), (AUDITED, *window, window[2], AUDITED), chunk)

    def answer_times(
        self, window: Window, names: Sequence[str], chunk: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Every decision of the window with feedback, in chunks of (route, created_at, first
        feedback's created_at, audited, *segment values): the time its case took to come back."""
        _, lo, hi = self.seq_range(window)
        sql = (
            "WITH hit AS MATERIALIZED (SELECT MAX(d.seq) AS dseq, MIN(f.created_at) AS first_at "
            "FROM feedback f CROSS JOIN decisions d WHERE d.decision_id = f.decision_id "
            "AND d.seq BETWEEN ? AND ? GROUP BY f.decision_id ORDER BY 1) "
            f"SELECT d.route, d.created_at, h.first_at, {_AUDITED_SQL}{self._segment_values(names)} "
            f"FROM hit h CROSS JOIN decisions d WHERE d.seq = h.dseq AND {_WINDOW}"
        )
        with self.db.reading() as reader:
            yield from reader.stream(self._live(sql), (lo, hi, AUDITED, *window), chunk)
