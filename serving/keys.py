"""API keys: stored as sha256 hashes with roles; checked in constant time; never logged.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
The table lives beside the decision log so every replica sees the same keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from keel.serving.batch_io import BATCH_CALLER_PREFIX
from keel.serving.database import Database

from keel.errors import Conflict, Forbidden, NotFound, Unauthorized

ROLES = ("decide", "feedback", "read", "admin")
PREFIX = "keel_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    roles: frozenset[str]
    created_at: str
    revoked_at: str | None = None


class KeyStore:
    """Manages keys and authenticates bearer tokens against a short-lived in-memory copy."""

    def __init__(self, db: Database, cache_seconds: float = 2.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._cache: list[tuple[str, ApiKey]] = []
        self._loaded_at = -1e9
        self._lock = threading.Lock()

    def add(self, name: str, roles: list[str]) -> str:
        bad = sorted(set(roles) - set(ROLES))
        if bad or not roles:
            raise ValueError(f"roles must be among {', '.join(ROLES)}; got {', '.join(bad) or 'none'}")
        if name.startswith(BATCH_CALLER_PREFIX):
            raise ValueError(f"key names starting {BATCH_CALLER_PREFIX!r} are kept for batch decisions")
        key = PREFIX + secrets.token_urlsafe(32)
        conn = self.db.connect()
        try:
            if conn.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a key named {name!r} exists; revoke it first or pick another name")
            conn.execute(
                "INSERT INTO api_keys (name, key_hash, roles, created_at) VALUES (?, ?, ?, ?)",
                (name, hash_key(key), ",".join(sorted(set(roles))), _now()),
            )
            conn.commit()
        finally:
            conn.close()
        return key

    def list_keys(self) -> list[ApiKey]:
        conn = self.db.connect()
        try:
            rows = conn.execute(
                "SELECT name, roles, created_at, revoked_at FROM api_keys ORDER BY name"
            ).fetchall()
            conn.commit()
        finally:
            conn.close()
        return [ApiKey(r[0], frozenset(r[1].split(",")), r[2], r[3]) for r in rows]

    def revoke(self, name: str) -> None:
        conn = self.db.connect()
        try:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ?, key_hash = ? WHERE name = ? AND revoked_at IS NULL",
                (_now(), f"revoked:{name}", name),
            )
            conn.commit()
        finally:
            conn.close()
        if cur.rowcount == 0:
            raise NotFound(f"no active key named {name!r}")
        self._loaded_at = -1e9

    def _active(self) -> list[tuple[str, ApiKey]]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.cache_seconds:
                conn = self.db.connect()
                try:
                    rows = conn.execute(
                        "SELECT key_hash, name, roles, created_at FROM api_keys WHERE revoked_at IS NULL"
                    ).fetchall()
                    conn.commit()
                finally:
                    conn.close()
                self._cache = [(r[0], ApiKey(r[1], frozenset(r[2].split(",")), r[3])) for r in rows]
                self._loaded_at = time.monotonic()
            return self._cache

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key's identity for an `Authorization: Bearer <key>` header, or 401."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        presented = hash_key(authorization[len("Bearer ") :].strip())
        found: ApiKey | None = None
        # Compare against every key so timing does not reveal where a match was.
        for stored, key in self._active():
            if hmac.compare_digest(stored, presented):
                found = key
        if found is None:
            raise Unauthorized("unknown or revoked API key")
        return found

    @staticmethod
    def authorize(key: ApiKey, role: str) -> None:
        if role not in key.roles:
            raise Forbidden(f"key {key.name!r} lacks the {role!r} role")


def _now() -> str:
    return datetime.now(UTC).isoformat()
