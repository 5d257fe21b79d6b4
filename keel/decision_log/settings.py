"""Decision-log settings (KEEL_LOG_*): timeouts, queue bounds, the chain key file."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class LogSettings(BaseSettings):
    """How the decision log connects, queues, times out and signs its chain."""

    model_config = SettingsConfigDict(env_prefix="KEEL_LOG_", extra="ignore")

    connect_timeout: float = 3.0
    """Seconds to wait for a database connection before giving up (every connection)."""

    commit_timeout: float = 10.0
    """Seconds a request waits for its write to commit before answering 503 (outcome unknown)."""

    queue_rows: int = 20_000
    """Most rows waiting for the writer; past it writes get 503 with Retry-After at once."""

    batch_rows: int = 2_000
    """Most rows written in one transaction (one submission bigger than this goes alone)."""

    retry_after: float = 2.0
    """Retry-After seconds suggested to callers while the log cannot commit."""

    key_file: Path | None = None
    """Chain key file (`keel log-key create`); every replica gets the same file. Unset: unkeyed chain."""
