"""The chain key file: HMAC keys for the log's hash chains, kept outside the database.

A JSON file {"current": ID, "keys": {ID: hex}} that every replica receives (KEEL_LOG_KEY_FILE).
It is made by an explicit command (`keel log-key create`), never silently per host, since a
replica with a key of its own would sign rows no other replica can verify. Rotation adds a key
and makes it current: new rows are signed with it, old rows still verify under theirs.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["NO_KEYS", "ChainKeys", "create_key_file", "load_keys"]


@dataclass(frozen=True)
class ChainKeys:
    current: str | None
    keys: dict[str, bytes]
    created_at: dict[str, str] = field(default_factory=dict)
    """When each key was made (UTC isoformat): once a key exists, new rows are keyed."""

    @property
    def keyed_since(self) -> str | None:
        """When the first key was made; an unkeyed row logged after it was not written by Keel."""
        return min(self.created_at.values(), default=None)

    @property
    def current_key(self) -> bytes | None:
        return self.keys[self.current] if self.current else None


NO_KEYS = ChainKeys(None, {})


def load_keys(path: Path | None) -> ChainKeys:
    """The keys in `path`; no path means an unkeyed chain. A named but missing file is an error."""
    if path is None:
        return NO_KEYS
    try:
        data = json.loads(Path(path).read_text())
        keys = {str(k): bytes.fromhex(v) for k, v in data["keys"].items()}
        current = str(data["current"])
        created = {str(k): str(v) for k, v in data.get("created_at", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"chain key file {path} is missing or unreadable: {exc}") from exc
    if current not in keys:
        raise ValueError(f"chain key file {path}: current key {current!r} is not among its keys")
    return ChainKeys(current, keys, created)


def create_key_file(path: Path, rotate: bool = False) -> str:
    """Write a new key file, or with `rotate` add a new current key to an existing one; returns its id."""
    path = Path(path)
    if path.exists() and not rotate:
        raise FileExistsError(f"{path} exists; use --rotate to add a new key to it")
    old = load_keys(path) if rotate and path.exists() else NO_KEYS
    now = datetime.now(UTC)
    key_id = now.strftime("k%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    keys = {**{k: v.hex() for k, v in old.keys.items()}, key_id: secrets.token_bytes(32).hex()}
    created = {**old.created_at, key_id: now.isoformat()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Readable by its owner only; written whole, then moved into place.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"current": key_id, "keys": keys, "created_at": created}, out, indent=1)
    os.replace(tmp, path)
    return key_id
