"""`keel events`: deliver the event outbox where no service runs, list it, retry failed events."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keel.cli.common import _state
from keel.errors import ExitCode

if TYPE_CHECKING:
    from keel.decision_log.database import Database

__all__ = ["cmd_events"]

MAX_PASSES = 10_000
"""Bound on one `deliver`'s passes (each claims one batch): it stops once nothing due is left."""


def cmd_events(args: argparse.Namespace) -> int:
    from keel.decision_log.database import Database

    db = Database(_state(registry=False, log=True).log_url)
    db.create_schema()  # a log made before the outbox existed gets its table (migration 0010)
    if args.events_command == "deliver":
        return _deliver(db)
    if args.events_command == "retry":
        from keel.decision_log import outbox

        print(f"events: {outbox.requeue(db, time.time())} failed event(s) pending again")
        return 0
    return _list(db, args.status, args.limit, args.json)


def _deliver(db: Database) -> int:
    from keel.events.dispatcher import DeliveryReport, Dispatcher
    from keel.events.settings import EventSettings

    settings = EventSettings.load()
    if not settings.enabled:
        print("events: no sinks configured (KEEL_EVENTS_SINKS); nothing delivered")
        return int(ExitCode.NO_STATE)
    dispatcher, total = Dispatcher(db, settings), DeliveryReport()
    for _ in range(MAX_PASSES):
        report = dispatcher.deliver()
        total.add(report)
        if report.claimed < settings.batch:
            break
    for line in total.errors[:20]:
        print(f"events: {line}")
    print(f"events: {total.delivered} delivered, {total.retrying} to retry later, {total.failed} failed")
    return 0 if total.retrying == total.failed == 0 else 1


def _list(db: Database, status: str | None, limit: int, as_json: bool) -> int:
    from keel.decision_log import outbox

    rows = outbox.listing(db, status, limit)
    if as_json:
        print(json.dumps({"counts": outbox.counts(db), "events": rows}, default=str))
        return 0
    counts = outbox.counts(db)
    print("events: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in rows:
        due = ""
        if r["status"] == outbox.PENDING:
            due = " next " + datetime.fromtimestamp(r["next_attempt_at"], UTC).isoformat(timespec="seconds")
        error = f"  [{r['last_error']}]" if r["last_error"] and r["status"] != outbox.DELIVERED else ""
        print(
            f"{r['seq']:>6}  {r['status']:<9} {r['attempts']:>2} tries  {r['time'][:19]}  {r['type']:<28} "
            f"{r['source']} {r['subject'] or ''}  {r['event_id']}{due}{error}"
        )
    return 0
