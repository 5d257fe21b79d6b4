"""`keel events`: deliver the event outbox where no service runs, list it, retry failed events,
purge settled ones past their keep."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from keel.cli.common import _state
from keel.errors import ExitCode, InvalidInput

if TYPE_CHECKING:
    from keel.decision_log.database import Database

__all__ = ["cmd_events"]

MAX_PASSES = 10_000
"""Bound on one `deliver`'s passes (each claims one batch): it stops once nothing due is left."""


def cmd_events(args: argparse.Namespace) -> int:
    from keel.decision_log.database import Database

    state = _state(registry=False, log=True)
    db = Database(state.log_url)
    db.create_schema()  # a log made before the outbox existed gets its table (migration 0010)
    if args.events_command == "deliver":
        return _deliver(db, state.home_dir)
    if args.events_command == "retry":
        from keel.decision_log import outbox

        print(f"events: {outbox.requeue(db, time.time())} failed event(s) pending again")
        return 0
    if args.events_command == "purge":
        return _purge(db, state.home_dir)
    return _list(db, state.home_dir, args.status, args.limit, args.json)


def _purge(db: Database, home: Path) -> int:
    from keel.events.dispatcher import purge_settled
    from keel.events.settings import EventSettings

    settings = EventSettings.load(home)
    gone = purge_settled(db, settings)
    print(
        f"events: {gone} settled event(s) purged (delivered over {settings.keep_delivered_days:g} "
        f"days ago, failed over {settings.keep_failed_days:g} days ago); pending events are kept"
    )
    return 0


def _deliver(db: Database, home: Path) -> int:
    from keel.events.dispatcher import DeliveryReport, Dispatcher
    from keel.events.settings import EventSettings

    settings = EventSettings.load(home)
    if not settings.enabled:
        print("events: no sinks configured (KEEL_EVENTS_SINKS, KEEL_MONITOR_WEBHOOK_URL); nothing delivered")
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


def _sink_lines(home: Path) -> list[str]:
    """The configured sinks by id (as errors name them), with scheme and host only: a webhook's
    path often holds its secret."""
    from urllib.parse import urlsplit

    from keel.events.settings import LOCAL_KEY_FILE, LOCAL_KEY_ID, EventSettings

    try:
        settings = EventSettings.load(home)
    except InvalidInput as exc:  # the listing still helps; say what is wrong with the settings
        return [f"sinks: {exc}"]
    out = []
    if settings.own_key:
        out.append(f"signing key id {LOCAL_KEY_ID!r}: KEEL_HOME's own ({home / LOCAL_KEY_FILE})")
    for sink in settings.targets:
        where = urlsplit(sink.url)
        kinds = "every type" if sink.types is None else ", ".join(sorted(sink.types))
        out.append(f"sink {sink.id}  {where.scheme}://{where.netloc.rpartition('@')[2]}  ({kinds})")
    return (
        out
        if settings.targets
        else ["sinks: none configured here (KEEL_EVENTS_SINKS, KEEL_MONITOR_WEBHOOK_URL)"]
    )


def _list(db: Database, home: Path, status: str | None, limit: int, as_json: bool) -> int:
    from keel.decision_log import outbox

    rows = outbox.listing(db, status, limit)
    if as_json:
        print(json.dumps({"counts": outbox.counts(db), "events": rows}, default=str))
        return 0
    counts = outbox.counts(db)
    print("events: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for line in _sink_lines(home):
        print(line)
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
