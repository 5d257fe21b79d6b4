"""Indexes for the console's remaining decision filters: route, version, origin, final outcome,
overridden (keel.decision_log.search).

Migration 0009 indexed the filters that can match few rows; these can too (a canary version, a
route or origin few decisions take, a final outcome reviewers rarely give, a window without
overrides) and, unindexed, a search that matches few or none walks the whole window newest first.
Each index is the narrowest that turns such a search into a probe, with the least written per
decision:

- `decisions_model_version` (model_version, seq);
- `decisions_route` (route, seq) WHERE route <> 'auto': decisions decided automatically, most of
  them, write nothing to it; search.py states `route <> 'auto'` beside any other route it looks
  for, so the planner can use the partial index whatever the parameter (route = 'auto' matches
  most rows, and walks the primary key);
- `decisions_origin` (origin, seq) WHERE origin <> 'live': only batch and shadow decisions write
  to it (the same way);
- `feedback_final_outcome` (final_outcome, decision_id) and `feedback_override` (decision_id)
  WHERE kind = 'override': on feedback, written once per feedback revision, not per decision.
  search.py narrows a final-outcome or overridden search to the decisions such feedback names
  (then keeps those whose latest revision says so, as before), so a search matching none reads
  an empty index range instead of every decision of the window with a lookup each.

PostgreSQL: CREATE INDEX on the partitioned tables builds each partition's index and every
partition made later gets them. SQLite runs the same statements and gets the same indexes.
As for 0009: plain CREATE INDEX in the migration's transaction (writes wait while it builds; on
a large live log build them first, partition by partition, as docs/console.md says).
"""

from alembic import op

revision = "0013"
down_revision = "0012"

INDEXES = {
    "decisions_model_version": "decisions (model_version, seq)",
    "decisions_route": "decisions (route, seq) WHERE route <> 'auto'",
    "decisions_origin": "decisions (origin, seq) WHERE origin <> 'live'",
    "feedback_final_outcome": "feedback (final_outcome, decision_id)",
    "feedback_override": "feedback (decision_id) WHERE kind = 'override'",
}


def upgrade() -> None:
    for name, body in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {body}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
