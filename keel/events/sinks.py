"""The webhook sinks events are delivered to, derived from the settings in this one place.

Two settings name sinks: `KEEL_EVENTS_SINKS` (every event type) and `KEEL_MONITOR_WEBHOOK_URL`,
kept from before events existed, which receives what monitoring decides only: monitor verdicts
and canary rollbacks (Keel's own judgement on a canary). Alias moves made by people stay off it:
a monitoring channel that paged on every `keel shadow` would be muted. A URL named by both
settings is one sink that takes every type, so nothing reaches it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keel.events.catalog import CANARY_ROLLED_BACK, MONITOR_VERDICT

__all__ = ["MONITOR_WEBHOOK_TYPES", "Sink", "claimable_types", "configured_sinks", "sink_id"]

MONITOR_WEBHOOK_TYPES = frozenset({MONITOR_VERDICT, CANARY_ROLLED_BACK})
"""The event types KEEL_MONITOR_WEBHOOK_URL receives."""


def sink_id(url: str) -> str:
    """How the outbox names a sink: a digest, so a URL's credentials are never stored."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sink:
    """One webhook URL and the event types it receives (None: every type)."""

    url: str
    types: frozenset[str] | None = None

    @property
    def id(self) -> str:
        return sink_id(self.url)

    def wants(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types


def configured_sinks(every_type: Sequence[str], monitor_webhook: str | None) -> tuple[Sink, ...]:
    """The sinks of KEEL_EVENTS_SINKS and KEEL_MONITOR_WEBHOOK_URL, one per URL, in that order."""
    sinks = {url: Sink(url) for url in every_type}
    if monitor_webhook and monitor_webhook not in sinks:
        sinks[monitor_webhook] = Sink(monitor_webhook, MONITOR_WEBHOOK_TYPES)
    return tuple(sinks.values())


def claimable_types(sinks: Iterable[Sink]) -> frozenset[str] | None:
    """The event types some sink wants (None: all of them). A dispatcher claims only these, so a
    host configured with the monitor webhook alone leaves alias moves to the hosts that deliver
    them instead of settling them as delivered to nobody."""
    wanted: set[str] = set()
    for sink in sinks:
        if sink.types is None:
            return None
        wanted |= sink.types
    return frozenset(wanted)
