"""The decision log's tables as SQLAlchemy Core definitions: the schema the migrations arrive at.

`decisions`, `feedback` and `alias_history` (every move of a model's registry aliases) are hash
chains (keel.decision_log.chain); `chain_heads` holds each
chain's last (seq, hash) so a truncation shows; `api_keys` sits beside the log so every replica
sees the same keys. `key_id` names the chain key a row was signed with (NULL: an unkeyed row).
`audit_plans` holds every audit plan (keel.decision_log.audit_plans), hash-linked, and
`audit_secret` the one value default plans derive their seeds from.
`monitor_runs`, `monitor_sequential` and `monitor_imports` hold `keel monitor`'s shared state
(keel.decision_log.monitor_runs): one row per run, the sequential test's evidence per model and
field, and the old reports folders already imported.
`event_outbox` holds CloudEvents staged with their cause and their delivery state
(keel.decision_log.outbox).
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "FILTER_INDEXES",
    "SEARCH_INDEXES",
    "SEGMENT_FIELDS",
    "alias_history",
    "api_keys",
    "audit_plans",
    "audit_secret",
    "chain_heads",
    "decision_ids",
    "decisions",
    "event_outbox",
    "feedback",
    "feedback_ids",
    "metadata",
    "monitor_imports",
    "monitor_runs",
    "monitor_sequential",
    "retention_events",
]

metadata = sa.MetaData()
SEGMENT_FIELDS = ("region", "channel", "entity", "product_line")
"""The declared segment fields a decision's `segments` JSON may hold (search filters on each)."""
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY = rowid

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.Text, nullable=False, unique=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("caller", sa.Text, nullable=False),
    sa.Column("case_id", sa.Text),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("request_hash", sa.Text),
    sa.Column("request_index", sa.Integer, nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("abstained", sa.Integer, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("confidence", sa.Double),
    sa.Column("segments", sa.Text),
    sa.Column("intervened", sa.Integer, nullable=False, server_default="0"),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
    # live, batch or shadow (keel.decision_log.chain.ORIGINS); monitoring windows count live rows
    sa.Column("origin", sa.Text, nullable=False, server_default="live"),
    # the caller's process instance, from the record's correlation context (migration 0008)
    sa.Column("process_instance", sa.Text),
)
sa.Index(
    "decisions_idempotency",
    decisions.c.caller,
    decisions.c.model,
    decisions.c.idempotency_key,
    decisions.c.request_index,
    sqlite_where=decisions.c.idempotency_key.isnot(None),
    postgresql_where=decisions.c.idempotency_key.isnot(None),
)
# PostgreSQL (migration 0011): `decisions` and `feedback` are partitioned by month on created_at
# ("C" collation), their primary key is (seq, created_at), and the unique keys above are plain
# indexes there (a unique key of a partitioned table must hold created_at): `decision_ids` and
# `feedback_ids` below keep ids and idempotency keys unique, on both dialects. The idempotency
# index is plain on SQLite too (migration 0014): a restored month's rows keep keys that live
# decisions may hold again (keel.decision_log.retention).
sa.Index("decisions_decision_id", decisions.c.decision_id).ddl_if(dialect="postgresql")
# Covers every column monitoring aggregates, so a window of a million decisions is counted
# from the index without reading the (large) records.
sa.Index(
    "decisions_monitoring",
    *(
        decisions.c[c]
        for c in (
            "model",
            "created_at",
            "model_version",
            "outcome",
            "abstained",
            "route",
            "confidence",
            "intervened",
            "segments",
            "origin",
        )
    ),
)

# The review console's search (keel.decision_log.search; migration 0009): each filter that can
# match few or no rows has an index ending in seq, so a page is an index range in seq order and
# "nothing" is an empty probe. Segment fields: PostgreSQL only (SQLite matches the text).
SEARCH_INDEXES = (
    sa.Index("decisions_case_id", decisions.c.case_id, decisions.c.seq,
             sqlite_where=decisions.c.case_id.isnot(None), postgresql_where=decisions.c.case_id.isnot(None)),
    sa.Index("decisions_caller", decisions.c.caller, decisions.c.seq),
    # PostgreSQL only: SQLite's planner, without range statistics, would read a whole window
    # through it and sort rather than walk the primary key newest first and stop at a page.
    sa.Index("decisions_created_at", decisions.c.created_at, decisions.c.seq).ddl_if(dialect="postgresql"),
    sa.Index("decisions_outcome", decisions.c.outcome, decisions.c.seq),
    sa.Index("decisions_abstained", decisions.c.seq,
             sqlite_where=decisions.c.abstained == 1, postgresql_where=decisions.c.abstained == 1),
    *(
        sa.Index(f"decisions_segment_{f}", sa.text(f"((segments::jsonb) ->> '{f}')"), decisions.c.seq)
        .ddl_if(dialect="postgresql")
        for f in SEGMENT_FIELDS
    ),
)  # fmt: skip
"""Migration 0009's indexes (created_at and the segment ones: PostgreSQL only)."""

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("feedback_id", sa.Text, nullable=False, unique=True),
    sa.Column("decision_id", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("caller", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("final_outcome", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
    # the feedback's own process instance, else its decision's (migration 0008)
    sa.Column("process_instance", sa.Text),
)
sa.Index("feedback_decision", feedback.c.decision_id)
_ROUTED, _NOT_LIVE, _OVERRIDE = (
    decisions.c.route != "auto",
    decisions.c.origin != "live",
    feedback.c.kind == "override",
)
FILTER_INDEXES = (
    sa.Index("decisions_model_version", decisions.c.model_version, decisions.c.seq),
    sa.Index("decisions_route", decisions.c.route, decisions.c.seq,
             sqlite_where=_ROUTED, postgresql_where=_ROUTED),
    sa.Index("decisions_origin", decisions.c.origin, decisions.c.seq,
             sqlite_where=_NOT_LIVE, postgresql_where=_NOT_LIVE),
    sa.Index("feedback_final_outcome", feedback.c.final_outcome, feedback.c.decision_id),
    sa.Index("feedback_override", feedback.c.decision_id, sqlite_where=_OVERRIDE, postgresql_where=_OVERRIDE),
)  # fmt: skip
"""Migration 0013's indexes: the rest of the console's decision filters (both dialects)."""
sa.Index("feedback_feedback_id", feedback.c.feedback_id).ddl_if(dialect="postgresql")
# A process instance's decisions and feedback, in log order (GET /v1/decisions?process_instance=).
sa.Index(
    "decisions_process_instance",
    decisions.c.process_instance,
    decisions.c.seq,
    sqlite_where=decisions.c.process_instance.isnot(None),
    postgresql_where=decisions.c.process_instance.isnot(None),
)
sa.Index(
    "feedback_process_instance",
    feedback.c.process_instance,
    feedback.c.seq,
    sqlite_where=feedback.c.process_instance.isnot(None),
    postgresql_where=feedback.c.process_instance.isnot(None),
)

# Migration 0011: every id ever logged, filled by a row trigger on `decisions` / `feedback`. They
# keep ids and idempotency keys unique on PostgreSQL, whose partitioned tables cannot (a unique key
# there must hold the partition column), and stay when a month leaves the live log: the index
# that finds an archived decision by id (keel.decision_log.archived).
decision_ids = sa.Table(
    "decision_ids",
    metadata,
    sa.Column("decision_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("caller", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.Text),  # cleared when the decision leaves the live log
    sa.Column("request_index", sa.Integer, nullable=False),
)
sa.Index(
    "decision_ids_idempotency",
    decision_ids.c.caller,
    decision_ids.c.model,
    decision_ids.c.idempotency_key,
    decision_ids.c.request_index,
    unique=True,
    sqlite_where=decision_ids.c.idempotency_key.isnot(None),
    postgresql_where=decision_ids.c.idempotency_key.isnot(None),
)
sa.Index("decision_ids_seq", decision_ids.c.seq)
feedback_ids = sa.Table(
    "feedback_ids",
    metadata,
    sa.Column("feedback_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)

# Every archive, removal, restore, hold, release and archive deletion: a hash chain
# (keel.decision_log.retention).
retention_events = sa.Table(
    "retention_events",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("month", sa.Text),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: segments, archive URL, live bases
    sa.Column("policy", sa.Text, nullable=False),  # JSON: the retention policy applied
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
)

alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("from_version", sa.Text),
    sa.Column("to_version", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("forced", sa.Boolean, nullable=False),
    sa.Column("gates", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
)
sa.Index("alias_history_model", alias_history.c.model, alias_history.c.seq)

chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("row_hash", sa.Text, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("roles", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("revoked_at", sa.Text),
    sa.Column("rate_per_second", sa.Double),
)

monitor_runs = sa.Table(
    "monitor_runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("generated_at", sa.Text, nullable=False),
    sa.Column("window_start", sa.Text),
    sa.Column("window_end", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("recommendation", sa.Text, nullable=False),
    sa.Column("decisions", sa.BigInteger),
    sa.Column("versions", sa.Text, nullable=False),  # JSON: reference_version, served
    sa.Column("verdicts", sa.Text, nullable=False),  # JSON: [{check, status, value, warn, alert, detail}]
    # JSON: the few numbers trend charts draw, taken from the summary when the run is recorded,
    # so a chart over many runs never parses their (large) summaries.
    sa.Column("trend", sa.Text, nullable=False),
    sa.Column("summary", sa.Text),  # summary.json as written (NULL: an imported run without one)
    sa.Column("report_dir", sa.Text),  # on the machine that ran it (`host`)
    sa.Column("mlflow_run_id", sa.Text),  # the same report folder as MLflow artifacts
    sa.Column("host", sa.Text, nullable=False),
)
sa.Index("monitor_runs_model_time", monitor_runs.c.model, monitor_runs.c.generated_at)

monitor_sequential = sa.Table(
    "monitor_sequential",
    metadata,
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("field", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),  # compare-and-swap: +1 per update
    sa.Column("updated_at", sa.Text, nullable=False),
)

monitor_imports = sa.Table(
    "monitor_imports",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),  # host:absolute reports folder
    sa.Column("imported_at", sa.Text, nullable=False),
    sa.Column("runs", sa.Integer, nullable=False),
    sa.Column("states", sa.Integer, nullable=False),
)

audit_plans = sa.Table(
    "audit_plans",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("field", sa.Text),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON: {cell value: probability}
    sa.Column("default_probability", sa.Double, nullable=False),
    sa.Column("cross_share", sa.Double, nullable=False),
    sa.Column("seed", sa.Text, nullable=False),  # hex; never returned to callers
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text),
    sa.Column("detect_ratio", sa.Double),  # 0012: the plan's --detect target (NULL: none recorded)
    sa.UniqueConstraint("model", "version", name="audit_plans_model_version"),
)

audit_secret = sa.Table(
    "audit_secret",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
)

event_outbox = sa.Table(
    "event_outbox",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),  # the CloudEvent id
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.Text, nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Double, nullable=False),  # epoch seconds
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", sa.Double),  # epoch seconds: the claim's lease end
    sa.Column("delivered_to", sa.Text, nullable=False),  # JSON list of sink ids
    sa.Column("delivered_at", sa.Text),
    sa.Column("last_error", sa.Text),
)
sa.Index("event_outbox_due", event_outbox.c.status, event_outbox.c.next_attempt_at)
