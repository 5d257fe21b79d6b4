"""`keel log maintain|remove|restore|hold|release|retention`: the log package acts; this prints.

Exit 0: done; 1: refused (said on stderr: a hold, an archive that does not verify, a gap);
2: bad arguments or no chain key.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from keel.decision_log.database import Database, redact
from keel.decision_log.log_key import ChainKeys, load_keys
from keel.decision_log.migrations import upgrade
from keel.decision_log.partitions import ensure_months
from keel.decision_log.retention import (
    Restored,
    RetentionError,
    hold,
    release,
    remove_months,
    restore_months,
)
from keel.decision_log.retention_policy import RetentionSettings, apply, plan
from keel.decision_log.settings import LogSettings

__all__ = ["records"]


def records(log_url: str, args: argparse.Namespace, actor: str) -> int:
    db = Database(log_url)
    try:
        if args.log_command == "maintain":
            upgrade(db.engine, db.is_postgres)  # not create_schema: it would make the partitions unreported
            done = ensure_months(db.engine)
            moved = ", ".join(f"{n} ({c} rows moved in)" for n, c in done.moved.items())
            print(
                f"{redact(log_url)}: partitions made: {', '.join(done.created) or 'none due'}"
                + (f"; {moved}" if moved else "")
            )
            return 0
        keys = load_keys(LogSettings().key_file)
        if keys.current is None:
            print(
                "keel: every records step is chained under the chain key: set KEEL_LOG_KEY_FILE",
                file=sys.stderr,
            )
            return 2
        return _act(db, keys, args, actor)
    except RetentionError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()


def _act(db: Database, keys: ChainKeys, args: argparse.Namespace, actor: str) -> int:
    command = args.log_command
    if command == "hold":
        hold(db, keys, args.month, actor, args.reason)
        print(f"{args.month}: under legal hold ({actor}: {args.reason})")
    elif command == "release":
        release(db, keys, args.month, actor, args.reason)
        print(f"{args.month}: hold released ({actor}: {args.reason})")
    elif command == "remove":
        months = remove_months(db, keys, args.archive, args.through, actor, args.reason)
        done = ", ".join(months) or "nothing (already removed)"
        print(f"removed from the live log: {done}; archive {args.archive}")
    elif command == "restore":
        restored = restore_months(db, keys, args.archive, args.month, actor, args.reason)
        print(f"restored into the live log from {args.archive}: {', '.join(restored.months)}")
        _print_conflicts(restored)
    elif command == "retention":
        settings, today = RetentionSettings(), datetime.now(UTC).date()
        if not args.apply:
            due = plan(args.archive, settings, today)
            print(
                json.dumps(
                    {
                        "remove_through": due.remove_through,
                        "delete_through": due.delete_through,
                        "months": due.months,
                    },
                    indent=2,
                )
            )
            return 0
        removed, deleted = apply(db, keys, args.archive, settings, today, actor)
        gone, dropped = ", ".join(removed) or "none due", ", ".join(deleted) or "none due"
        print(f"removed from the live log: {gone}; archives deleted: {dropped}")
    return 0


SHOWN_CONFLICTS = 20


def _print_conflicts(done: Restored) -> None:
    conflicts = done.key_conflicts
    if not conflicts:
        return
    print(
        f"{len(conflicts)} restored decision(s) carry an idempotency key that a live decision logged "
        "since holds: the live decision keeps it (replays answer with it); the restored rows are "
        "unchanged and the restore event lists the pairs"
    )
    for c in conflicts[:SHOWN_CONFLICTS]:
        print(f"  {c.restored} ({c.caller}, {c.model}, key {c.idempotency_key!r}) -> kept by {c.held_by}")
    if len(conflicts) > SHOWN_CONFLICTS:
        print(f"  ... and {len(conflicts) - SHOWN_CONFLICTS} more")
