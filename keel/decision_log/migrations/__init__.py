"""Alembic migrations of the decision log; `upgrade` brings any log (new, ad hoc, older) to head.

Logs made before migrations existed have the tables but no `alembic_version`: the baseline
revision creates only what is missing, so they upgrade in place like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

__all__ = ["HEAD", "downgrade", "upgrade"]

HEAD = "0013"
_ADVISORY_LOCK = 4242
"""PostgreSQL: replicas that start together take turns migrating."""


def upgrade(engine: sa.Engine, postgres: bool, to: str = "head") -> None:
    """Run every revision the log lacks (up to `to`), in one transaction that holds the write lock."""
    _migrate(engine, postgres, lambda config: command.upgrade(config, to))


def downgrade(engine: sa.Engine, postgres: bool, to: str) -> None:
    """Undo the revisions after `to`, likewise (benchmarks and tests of a revision's cost)."""
    _migrate(engine, postgres, lambda config: command.downgrade(config, to))


def _migrate(engine: sa.Engine, postgres: bool, run: Callable[[Config], None]) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    # One transaction for the lock and every revision (SQLite: BEGIN IMMEDIATE, from the engine).
    with engine.execution_options(keel_write=True).begin() as conn:
        if postgres:
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))
        config.attributes["connection"] = conn
        run(config)
