"""Delivering the event outbox: claim due events, POST each to every sink, record the outcome.

Each event goes to every configured sink that receives its type (keel.events.sinks) as a
CloudEvent in HTTP binary mode (the `cloudevents` package), signed (keel.events.signing). A 2xx
from a sink counts as delivered there; anything else (a refused connection, a timeout, any
other status) is retried after a jittered exponential backoff (at least a 429 or 503's
Retry-After), for the sinks still missing it only, until `max_attempts` when the event is marked
failed. The event's id never changes, so a receiver that got an event twice (a lease that ran
out mid-delivery) can drop the second copy.

`keel serve` runs `Dispatcher.run` in a thread of its own; `keel events deliver` calls
`deliver_due` until nothing is due. Neither ever runs on a request's path. The running
dispatcher also purges settled events past their keep (`purge_settled`), in bounded batches,
every `purge_every_seconds`; `keel events purge` is the one-shot form.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent

from keel.decision_log import outbox
from keel.decision_log.database import Database
from keel.events.settings import EventSettings
from keel.events.signing import SIGNATURE_HEADER, sign
from keel.events.sinks import claimable_types

__all__ = ["DeliveryReport", "Dispatcher", "backoff", "deliver_due", "purge_settled", "request_of"]

log = logging.getLogger("keel.events")
MAX_ERROR_CHARS = 500


@dataclass
class DeliveryReport:
    """What one pass did: events claimed, delivered to every sink, left for a retry, given up."""

    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.failed += other.failed
        self.errors += other.errors


def backoff(attempts: int, settings: EventSettings, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: base * 2^(attempts-1), capped,
    drawn uniformly from its upper half so that retries of many events spread out."""
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** min(attempts - 1, 30))
    delay = random.uniform(ceiling / 2, ceiling)
    return min(settings.backoff_max, max(delay, retry_after or 0.0))


def request_of(event: outbox.OutboxEvent, settings: EventSettings) -> tuple[dict[str, str], bytes]:
    """The headers and body of the event's binary-mode request, signed by the newest key."""
    attributes = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": datetime.fromisoformat(event.time),
        "datacontenttype": "application/json",
    }
    if event.subject:
        attributes["subject"] = event.subject
    message = to_binary_event(CloudEvent(attributes, event.data))
    headers = dict(message.headers)
    key_id, secret = list(settings.signing_keys.items())[-1]
    headers[SIGNATURE_HEADER] = sign(headers, message.body, key_id, secret.get_secret_value())
    return headers, message.body


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _post(
    client: httpx.Client, url: str, headers: dict[str, str], body: bytes
) -> tuple[bool, str, float | None]:
    """One attempt at one sink: (delivered, what went wrong, the sink's Retry-After)."""
    try:
        response = client.post(url, headers=headers, content=body)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}", None
    if response.is_success:
        return True, "", None
    return False, f"HTTP {response.status_code}", _retry_after(response)


def deliver_due(
    db: Database,
    settings: EventSettings,
    worker: str,
    client: httpx.Client,
    stopping: threading.Event | None = None,
) -> DeliveryReport:
    """Claim one batch of due events (of the types some sink wants) and try each at every sink
    that wants it and lacks it."""
    report = DeliveryReport()
    sinks = settings.targets
    if not sinks:
        return report
    claimed = outbox.claim(
        db, worker, settings.batch, settings.lease_seconds, time.time(), claimable_types(sinks)
    )
    report.claimed = len(claimed)
    for item in claimed:
        if stopping is not None and stopping.is_set():
            break  # the rest go back to the outbox when their lease ends
        headers, body = request_of(item.event, settings)
        done, problems, waits = set(item.delivered_to), [], []
        for sink in sinks:
            if sink.id in done or not sink.wants(item.event.type):
                continue
            ok, problem, wait = _post(client, sink.url, headers, body)
            if ok:
                done.add(sink.id)
            else:
                problems.append(f"sink {sink.id}: {problem}")
                waits.append(wait or 0.0)
        attempts = item.attempts + 1
        if not problems:
            status, due, error = outbox.DELIVERED, time.time(), None
            report.delivered += 1
        else:
            error = "; ".join(problems)[:MAX_ERROR_CHARS]
            report.errors.append(f"{item.event.type} {item.event.id}: {error}")
            if attempts >= settings.max_attempts:
                status, due = outbox.FAILED, time.time()
                report.failed += 1
            else:
                status, due = outbox.PENDING, time.time() + backoff(attempts, settings, max(waits))
                report.retrying += 1
        if not outbox.settle(db, worker, item, frozenset(done), status, due, error):
            log.warning("event %s: lease lost during delivery; another dispatcher has it", item.event.id)
    return report


_DAY = 86400.0


def purge_settled(db: Database, settings: EventSettings, stopping: threading.Event | None = None) -> int:
    """Delete delivered and failed events past their keep, one bounded batch per transaction,
    until none is left (or `stopping` is set); how many. Pending events are never touched."""
    now, total = time.time(), 0
    keep = {
        outbox.DELIVERED: now - settings.keep_delivered_days * _DAY,
        outbox.FAILED: now - settings.keep_failed_days * _DAY,
    }
    for status, before in keep.items():
        while stopping is None or not stopping.is_set():
            gone = outbox.purge(db, status, before, settings.purge_batch)
            total += gone
            if gone < settings.purge_batch:
                break
    return total


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Delivers the outbox of one decision log, pass after pass."""

    def __init__(self, db: Database, settings: EventSettings) -> None:
        self.db = db
        self.settings = settings
        self.worker = _worker_name()

    def deliver(self, stopping: threading.Event | None = None) -> DeliveryReport:
        """One pass: one claimed batch."""
        with httpx.Client(timeout=self.settings.timeout) as client:
            return deliver_due(self.db, self.settings, self.worker, client, stopping)

    def run(self, stopping: threading.Event) -> None:
        """Deliver until `stopping` is set: at once while batches come back full, else every
        `poll_seconds`; purge settled events once at the start and then every
        `purge_every_seconds`. A log that cannot be reached is logged and retried at the next poll."""
        next_purge = time.monotonic()
        with httpx.Client(timeout=self.settings.timeout) as client:
            while not stopping.is_set():
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self.settings.purge_every_seconds
                    self._purge(stopping)
                try:
                    report = deliver_due(self.db, self.settings, self.worker, client, stopping)
                except Exception as exc:  # the log away, a bad row: the next poll tries again
                    log.warning("event delivery pass failed: %s", _one_line(exc))
                    report = DeliveryReport()
                if report.claimed < self.settings.batch:
                    stopping.wait(self.settings.poll_seconds)

    def _purge(self, stopping: threading.Event) -> None:
        try:
            if gone := purge_settled(self.db, self.settings, stopping):
                log.info("purged %d settled event(s) past their keep", gone)
        except Exception as exc:  # the log away: the next purge (an interval later) tries again
            log.warning("event purge failed: %s", _one_line(exc))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
