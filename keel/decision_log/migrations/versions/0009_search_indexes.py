"""Search indexes for the review console's Decisions page (keel.decision_log.search).

Every search is `WHERE <window> AND <filters> ORDER BY seq DESC LIMIT page`. A filter matching
many rows is answered by walking the primary key backwards until the page is full; a filter
matching few or none needs an index that starts with it and ends with `seq`, so the page is an
index range read in seq order and "nothing" is an empty probe, not a scan of the whole table:

- `decisions_case_id` (case_id, seq), partial: rows without a case_id are skipped;
- `decisions_caller` (caller, seq);
- PostgreSQL only: `decisions_created_at` (created_at, seq), for a window with few or no rows (a
  week in 2020). Not on SQLite: without range statistics its planner would read a whole 7-day
  window through it and sort, instead of walking the primary key newest first to a page;
- `decisions_outcome` (outcome, seq);
- `decisions_abstained` (seq) WHERE abstained = 1: abstentions are few, so it is small;
- PostgreSQL only: `decisions_segment_<field>` ((segments::jsonb ->> field), seq) for each declared
  segment field (search.SEGMENT_FIELDS), which search.py matches with the same expression.
  SQLite keeps its portable `LIKE` match on the segments text (a scan), as it needs no budget
  of 300 ms at 10M decisions. Expression indexes get planner statistics on ANALYZE, so a region
  that covers a quarter of the log still walks the primary key while an unknown one probes.

Plain CREATE INDEX, not CONCURRENTLY: `upgrade` runs every revision in one transaction holding
the advisory lock that keeps replicas from migrating together, and CONCURRENTLY cannot run in a
transaction. The build holds a SHARE lock on `decisions` (reads go on, writes wait) for its
duration. On a large existing log, an operator builds the same indexes first with CREATE INDEX
CONCURRENTLY (docs/console.md, "Speed"); the `IF NOT EXISTS` here then finds them and only
records the revision.
"""

from alembic import op

revision = "0009"
down_revision = "0008"

SEGMENT_FIELDS = ("region", "channel", "entity", "product_line")  # = search.SEGMENT_FIELDS, frozen here
BOTH = {
    "decisions_case_id": "(case_id, seq) WHERE case_id IS NOT NULL",
    "decisions_caller": "(caller, seq)",
    "decisions_outcome": "(outcome, seq)",
    "decisions_abstained": "(seq) WHERE abstained = 1",
}
POSTGRESQL = {"decisions_created_at": "(created_at, seq)"} | {
    f"decisions_segment_{f}": f"(((segments::jsonb) ->> '{f}'), seq)" for f in SEGMENT_FIELDS
}


def _indexes() -> dict[str, str]:
    postgres = op.get_bind().dialect.name == "postgresql"
    return {**BOTH, **(POSTGRESQL if postgres else {})}


def upgrade() -> None:
    for name, body in _indexes().items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON decisions {body}")


def downgrade() -> None:
    for name in _indexes():
        op.execute(f"DROP INDEX IF EXISTS {name}")
