"""Reads one model's time window from the decision log, aggregating in the database.

A window may hold millions of decisions, so nothing here walks them in Python: counts are SQL
aggregates over the `segments`/`intervened` columns and the covering `decisions_monitoring` index
(rows logged before those columns existed are read from the record JSON, in a separate query),
and only `sample` parses whole records, at most `n`, in chunks. The window is half-open,
[start, end), on `decisions.created_at`; feedback belongs to the window of the decision it
reviews, and only a decision's latest feedback row counts (a reviewer may revise a verdict).
"Policy-intervened" means a rule fired, as the frame's `policy_intervened`; "routed" means the
model decided and a rule moved the case off the automatic route. The SQL itself lives in
keel.decision_log.windows (the package that owns the log); this module shapes its rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from keel.decision_log.database import Database
from keel.decision_log.windows import WindowQueries
from keel.feature_defs.contract import Contract
from keel.models.frames import audit_flag, records_to_frame
from keel.monitoring.reviewer_agreement import WORD_COLUMNS
from keel.monitoring.stats import check_edges

CHUNK = 5000
REVIEWED_COLUMNS = (
    "decision_id", "created_at", "model_version", "outcome", "abstained", "confidence", "most_likely",
    "final_outcome", "kind", "reason", "actor",
)  # fmt: skip
AUDIT_COLUMNS = ("audit_selected", "audit_probability", "audit_pool", "reviewer_pool", "reviewer_segment")
"""The audit evidence of a reviewed case (keel.models.frames.audit_values): False/None on rows
logged before audit sampling, which count as discretionary reviews."""
# Few distinct values: stored as shared strings so 300,000 reviewed rows stay small.
_LOW_CARDINALITY = ("model_version", "outcome", "most_likely", "final_outcome", "kind", "actor")


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
        """`include_batch`: also count decisions logged by `keel score --log` (left out of live
        monitoring by default)."""
        self.db = db
        self.sql = WindowQueries(db, include_batch)

    def summary(self, model: str, start: datetime, end: datetime) -> WindowSummary:
        window = (model, iso(start), iso(end))
        # Group by the few (version, outcome, route, abstained) combinations, from the index,
        # and marginalise in Python; the groups are tens of rows.
        groups = self.sql.groups(window)
        g = pd.DataFrame(
            groups, columns=["version", "outcome", "route", "abst", "n", "fired", "first", "last"]
        )
        g["abst"], g["n"], g["fired"] = g["abst"].astype(bool), g["n"].astype(int), g["fired"].astype(int)
        dec = g[~g["abst"]]
        feedback = self.sql.feedback_kinds(window)
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
        total = self.sql.seq_range(window)[0]
        if total == 0 or n <= 0:
            return records_to_frame([], contract), total
        k = max(1, math.ceil(total / n))
        frames = []
        # Parse one chunk at a time so raw JSON text of the whole sample never coexists.
        for chunk in self.sql.sample(window, k, CHUNK):
            records, feedback = [], {}
            for record_text, final, kind, actor, reason in chunk:  # reviewer_pool: from `reviewed`
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
        pulled from the record in SQL; columns REVIEWED_COLUMNS, AUDIT_COLUMNS, then one per
        segment field.
        Row order is not part of the contract (no ORDER BY: sorting 300,000 wide rows costs)."""
        names = list(segments)
        clash = set(names) & {*REVIEWED_COLUMNS, *AUDIT_COLUMNS}
        if clash:
            raise ValueError(f"segment fields clash with reviewed columns: {sorted(clash)}")
        window = (model, iso(start), iso(end))
        frame = _chunked_frame(
            self.sql.reviewed(window, names, 50_000, audit=True),
            [*REVIEWED_COLUMNS, *AUDIT_COLUMNS, *names],
            [*_LOW_CARDINALITY, "audit_pool", "reviewer_pool", "reviewer_segment", *names],
        )
        raw_selected = frame["audit_selected"].astype(object)
        frame["audit_selected"] = [audit_flag(v) for v in raw_selected]
        frame["audit_probability"] = pd.to_numeric(frame["audit_probability"], errors="coerce").astype(
            "float64"
        )
        frame["abstained"] = frame["abstained"].astype(bool)
        frame["confidence"] = frame["confidence"].astype("float64")
        return frame

    def review_words(
        self, model: str, start: datetime, end: datetime, segments: Sequence[str]
    ) -> pd.DataFrame:
        """Reviewers' latest words on the window's cases that more than one reviewer answered:
        columns keel.monitoring.reviewer_agreement.WORD_COLUMNS, then one per segment field."""
        names = list(segments)
        columns = [*WORD_COLUMNS, *names]
        return _chunked_frame(
            self.sql.review_words((model, iso(start), iso(end)), names, CHUNK),
            columns,
            ["actor", "final_outcome", "reviewer_pool", *names],
        )

    def decided_by_segment(
        self, model: str, start: datetime, end: datetime, segments: Sequence[str], bands: Sequence[float]
    ) -> pd.DataFrame:
        """Decided cases per segment value and confidence band (band i: edges[i] <= c < edges[i+1],
        outer bands open-ended, as `monitoring.stats.band_index`); columns field, value, band,
        n_decided, n_intervened (a rule fired), n_routed (route != auto)."""
        check_edges(bands)
        names = list(segments)
        rows = self.sql.decided_cube((model, iso(start), iso(end)), names, bands)
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


def _chunked_frame(chunks_in: Iterator[list[Any]], columns: list[str], shared: list[str]) -> pd.DataFrame:
    """Rows to a frame chunk by chunk; repeated strings (versions, classes, regions) become one
    shared object each via categoricals, instead of one Python string per row."""
    chunks = []
    for rows in chunks_in:
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
