"""`keel verify-log` and `keel log-key`: the log package verifies and signs; this reads settings, prints."""

from __future__ import annotations

import sys
from pathlib import Path

from keel.decision_log.database import Database, redact
from keel.decision_log.log_key import create_key_file, load_keys
from keel.decision_log.settings import LogSettings
from keel.decision_log.verify import append_checkpoint, read_checkpoints, verify

__all__ = ["log_key_create", "verify_log"]


def verify_log(log_url: str, checkpoint: Path | None = None) -> int:
    """Verify both chains on one snapshot; with a checkpoint file, check it and append a new one.

    Exit 0: intact; 1: broken (table and seq named on stderr); 2: could not verify (no key)."""
    settings = LogSettings()
    try:
        keys = load_keys(settings.key_file)
    except ValueError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    if checkpoint is not None and keys.current is None:
        print("keel: --checkpoint needs the chain key file (KEEL_LOG_KEY_FILE)", file=sys.stderr)
        return 2
    checkpoints = read_checkpoints(checkpoint) if checkpoint else []
    db = Database(log_url)
    try:
        result = verify(db, keys, checkpoints=checkpoints)
    finally:
        db.dispose()
    if not result.ok:
        where = f"in table {result.table} at seq {result.bad_seq}" if result.table else "in the checkpoints"
        print(
            f"decision log BROKEN {where}: {result.problem} ({result.rows_checked} rows checked)",
            file=sys.stderr,
        )
        return 1
    signed = f"signed with {', '.join(result.key_ids)}" if result.key_ids else "no rows keyed"
    print(
        f"decision log {redact(log_url)}: {result.rows_checked} rows, hash chains intact "
        f"({signed}; {result.unkeyed_rows} unkeyed rows; {result.checkpoints_checked} checkpoints matched)"
    )
    if checkpoint is not None:
        cp = append_checkpoint(checkpoint, keys, result.heads)
        heads = ", ".join(f"{t} seq {s}" for t, (s, _) in cp.heads.items())
        print(f"checkpoint written to {checkpoint}: {heads}, signed with {cp.key_id}")
    return 0


def log_key_create(path: Path | None, rotate: bool) -> int:
    target = path or LogSettings().key_file
    if target is None:
        print("keel: give --file or set KEEL_LOG_KEY_FILE", file=sys.stderr)
        return 2
    try:
        key_id = create_key_file(target, rotate=rotate)
    except FileExistsError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 1
    print(
        f"chain key {key_id} written to {target} (mode 600); give every replica this file "
        "as KEEL_LOG_KEY_FILE and keep a copy with the backups"
    )
    return 0
