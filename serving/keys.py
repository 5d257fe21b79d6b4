"""API keys: stored as sha256 hashes with roles; checked in constant time; never logged.

Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
The table lives beside the decision log (keel.decision_log.api_keys) so every replica sees the
same keys. A serving process authenticates against an in-memory key set: a background thread
refreshes it every few seconds (each attempt bounded by the connect timeout) and, when the
database is away, the last good set keeps authenticating. A key the set does not hold is
looked up in the database (in a worker thread, never on the event loop), so a key made by
`keel keys add` works at once: a request with an unknown key waits for a read that starts after
it arrived. Such reads start at most once per READ_THROUGH_SECONDS and every request waiting
shares one, so a flood of unknown keys costs the database two reads a second, not one per
request, and a new key is never refused because another request read a moment earlier.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.decision_log import api_keys
from keel.decision_log.chain import BATCH_CALLER_PREFIX
from keel.decision_log.database import Database
from keel.decision_log.errors import LogUnavailable
from keel.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthorized

__all__ = [
    "IMPLIED",
    "PREFIX",
    "READ_THROUGH_SECONDS",
    "ROLES",
    "ApiKey",
    "KeySettings",
    "KeyStore",
    "TokenBucket",
    "hash_key",
]

ROLES = ("decide", "feedback", "read", "review", "admin")
IMPLIED: dict[str, frozenset[str]] = {"review": frozenset({"read", "feedback"})}
"""Roles another role includes: `review` is read and feedback (a reviewer's console and
outcomes), never decide or admin."""
PREFIX = "keel_"
READ_THROUGH_SECONDS = 0.5
"""Least time between two database reads for keys the in-memory set does not hold."""
log = logging.getLogger("keel.keys")


class KeySettings(BaseSettings):
    """Per-key request rates (KEEL_KEYS_*)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_KEYS_", extra="ignore")

    default_rate_per_second: float | None = None
    """Requests per second a key may make when it has no rate of its own (unset: unlimited)."""

    burst_seconds: float = 1.0
    """A key may burst this many seconds' worth of its rate at once."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    roles: frozenset[str]
    created_at: str
    revoked_at: str | None = None
    rate_per_second: float | None = None


class TokenBucket:
    """A token bucket: `rate` tokens a second, holding at most `capacity`."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.tokens, self.stamp = rate, capacity, capacity, time.monotonic()

    def take(self) -> float | None:
        """None when a token was taken; else the seconds until one is there."""
        wait = self.wait()
        if wait is None:
            self.tokens -= 1.0
        return wait

    def wait(self) -> float | None:
        """None when a token is there (left in the bucket); else the seconds until one is."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return None if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class KeyStore:
    """Manages keys and authenticates bearer tokens against an in-memory copy of the key set."""

    def __init__(self, db: Database, cache_seconds: float = 2.0, settings: KeySettings | None = None) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.settings = settings or KeySettings()
        self._cache: list[tuple[str, ApiKey]] | None = None
        self._loaded_at = -1e9
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self._refresher: threading.Thread | None = None
        self._stop = threading.Event()
        self._read_started = -1e9
        """When the latest read-through began (monotonic seconds)."""
        self._reading: asyncio.Event | None = None
        """Set when the read-through in flight ends; None when none is."""

    # -- management (command line) ------------------------------------------------------------
    def add(self, name: str, roles: list[str], rate_per_second: float | None = None) -> str:
        bad = sorted(set(roles) - set(ROLES))
        if bad or not roles:
            raise ValueError(f"roles must be among {', '.join(ROLES)}; got {', '.join(bad) or 'none'}")
        if rate_per_second is not None and not rate_per_second > 0:
            raise ValueError("a key's rate must be a positive number of requests per second")
        if name.startswith(BATCH_CALLER_PREFIX):
            raise ValueError(f"key names starting {BATCH_CALLER_PREFIX!r} are kept for batch decisions")
        key = PREFIX + secrets.token_urlsafe(32)
        if not api_keys.insert_key(
            self.db, name, hash_key(key), ",".join(sorted(set(roles))), _now(), rate_per_second
        ):
            raise Conflict(f"an active key named {name!r} exists; `keel keys rotate {name}` replaces it")
        return key

    def list_keys(self) -> list[ApiKey]:
        return [_key(r) for r in api_keys.all_keys(self.db)]

    def revoke(self, name: str) -> None:
        if not api_keys.revoke_key(self.db, name, _now()):
            raise NotFound(f"no active key named {name!r}")
        self._loaded_at = -1e9

    def rotate(self, name: str) -> str:
        """A new key with the same name, roles and rate; the old one stops working (for a lost key)."""
        active = [k for k in self.list_keys() if k.name == name and not k.revoked_at]
        if not active:
            raise NotFound(f"no active key named {name!r}; `keel keys add {name} --role ...` creates one")
        self.revoke(name)
        return self.add(name, sorted(active[0].roles), active[0].rate_per_second)

    # -- the serving side ---------------------------------------------------------------------
    def start(self) -> KeyStore:
        """Load the keys once (bounded by the connect timeout), then refresh them in the background."""
        self.refresh()
        self._refresher = threading.Thread(target=self._refresh_loop, name="key-refresh", daemon=True)
        self._refresher.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """Re-read the active keys; on a database error keep the last good set. True on success."""
        try:
            rows = api_keys.active_keys(self.db)
        except Exception as exc:
            log.warning("could not refresh API keys (%s); keeping the last good set", type(exc).__name__)
            return False
        with self._lock:
            self._cache = [(r.key_hash, _key(r)) for r in rows]
            self._loaded_at = time.monotonic()
        return True

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.cache_seconds):
            self.refresh()

    def _active(self) -> list[tuple[str, ApiKey]]:
        if self._refresher is None and time.monotonic() - self._loaded_at > self.cache_seconds:
            self.refresh()  # not serving (no background refresh): read on demand
        cache = self._cache
        if cache is None:
            raise LogUnavailable("API keys are not loaded yet: the decision log's database is unreachable")
        return cache

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

    async def authenticate_async(self, authorization: str | None) -> ApiKey:
        """`authenticate` for the event loop: a well-formed key the in-memory set does not hold
        is looked up again after a database read that starts after this request arrived (in a
        worker thread; shared with every request waiting; at most one per READ_THROUGH_SECONDS)
        before it is refused."""
        try:
            return self.authenticate(authorization)
        except Unauthorized:
            if authorization is None or not authorization.startswith("Bearer "):
                raise  # a malformed header never reads the database
            await self._read_after(time.monotonic())
        return self.authenticate(authorization)

    async def _read_after(self, arrived: float) -> None:
        """Return once a read of the keys that began after `arrived` has ended. One event loop
        runs the gate, so the checks and claims between awaits cannot interleave."""
        while self._read_started < arrived:
            if self._reading is not None:  # began before this request arrived: not enough
                await self._reading.wait()
                continue
            wait = self._read_started + READ_THROUGH_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._read_started = time.monotonic()
            self._reading = done = asyncio.Event()
            try:
                await anyio.to_thread.run_sync(self.refresh)  # a failed read keeps the last good set
            finally:
                self._reading = None
                done.set()
            return
        if self._reading is not None:  # one began after this request arrived and is still going
            await self._reading.wait()

    def retry_after(self, key: ApiKey) -> float | None:
        """Seconds until this key may make another request, or None if it may now (takes a token).

        In memory only, no database on the hot path; one bucket per key name and process."""
        rate = key.rate_per_second or self.settings.default_rate_per_second
        if not rate:
            return None
        bucket = self._buckets.get(key.name)
        if bucket is None or bucket.rate != rate:
            capacity = max(1.0, rate * self.settings.burst_seconds)
            bucket = self._buckets[key.name] = TokenBucket(rate, capacity)
        return bucket.take()

    def check_rate(self, key: ApiKey) -> None:
        """429 (RateLimited) when the key is over its rate; the gate calls this per request."""
        wait = self.retry_after(key)
        if wait is not None:
            raise RateLimited(key.name, wait)

    def session_key(self, name: str, hash_prefix: str) -> ApiKey | None:
        """The active key a console session names (by name and the start of its hash), or None
        once it is revoked or rotated: a session lives no longer than its key."""
        found: ApiKey | None = None
        for stored, key in self._active():
            if key.name == name and hmac.compare_digest(stored[: len(hash_prefix)], hash_prefix):
                found = key
        return found

    @staticmethod
    def holds(key: ApiKey, role: str) -> bool:
        """Whether the key has `role`, itself or through a role that includes it (IMPLIED)."""
        return role in key.roles or any(role in IMPLIED.get(r, ()) for r in key.roles)

    @staticmethod
    def authorize(key: ApiKey, role: str) -> None:
        if not KeyStore.holds(key, role):
            raise Forbidden(f"key {key.name!r} lacks the {role!r} role")


def _key(r: api_keys.KeyRow) -> ApiKey:
    return ApiKey(r.name, frozenset(r.roles.split(",")), r.created_at, r.revoked_at, r.rate_per_second)


def _now() -> str:
    return datetime.now(UTC).isoformat()
