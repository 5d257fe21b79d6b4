"""SQL of the `api_keys` table (SQLAlchemy Core); `keel.serving.keys.KeyStore` is the API over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from keel.decision_log.database import Database
from keel.decision_log.schema import api_keys

__all__ = ["KeyRow", "active_keys", "all_keys", "insert_key", "revoke_key"]


@dataclass(frozen=True)
class KeyRow:
    name: str
    key_hash: str
    roles: str
    created_at: str
    revoked_at: str | None
    rate_per_second: float | None


def _rows(result: sa.Result[Any]) -> list[KeyRow]:
    return [
        KeyRow(r.name, r.key_hash, r.roles, r.created_at, r.revoked_at, r.rate_per_second) for r in result
    ]


def insert_key(
    db: Database, name: str, key_hash: str, roles: str, created_at: str, rate: float | None
) -> bool:
    """Add a key; False while an active key has that name. A revoked key keeps its row under a
    dated name (`NAME~revoked~WHEN`), so the name can be given to a new key."""
    with db.writing() as conn:
        active = sa.select(api_keys.c.name).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        if conn.execute(active).first():
            return False
        conn.execute(
            api_keys.update()
            .where(api_keys.c.name == name)
            .values(name=api_keys.c.name + "~revoked~" + api_keys.c.revoked_at)
        )
        conn.execute(
            api_keys.insert().values(
                name=name, key_hash=key_hash, roles=roles, created_at=created_at, rate_per_second=rate
            )
        )
    return True


def all_keys(db: Database) -> list[KeyRow]:
    with db.engine.connect() as conn:
        return _rows(conn.execute(sa.select(api_keys).order_by(api_keys.c.name)))


def active_keys(db: Database) -> list[KeyRow]:
    with db.engine.connect() as conn:
        return _rows(conn.execute(sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))))


def revoke_key(db: Database, name: str, revoked_at: str) -> bool:
    """Revoke an active key (its hash is overwritten); False when there is none by that name."""
    with db.writing() as conn:
        done = conn.execute(
            api_keys.update()
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=revoked_at, key_hash=f"revoked:{name}:{revoked_at}")
        )
    return done.rowcount > 0
