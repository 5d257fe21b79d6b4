"""A write waiting for the log's writer, and how its waiter hears back (thread or event loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from keel.decision_log.database import Connection
from keel.decision_log.errors import LogUnavailable
from keel.errors import Conflict

__all__ = ["Replay", "Submission", "deliver", "expire", "reject_changed_replay"]

Replay = Callable[[Connection], list[dict[str, Any]] | None]
"""Looks up an earlier identical write (idempotency); its rows are returned instead."""


def reject_changed_replay(stored: list[dict[str, Any]], request_hash: str) -> list[dict[str, Any]]:
    """An idempotency key reused with a different request body is a client error."""
    if any(r.get("request_hash") != request_hash for r in stored):
        raise Conflict("this Idempotency-Key was used before with a different request body")
    return stored


@dataclass(eq=False)
class Submission:
    table: str
    values: list[tuple[Any, ...]]
    digests: list[str]
    rows: list[dict[str, Any]]
    """What the caller gets back once the values are committed."""
    replay: Replay | None = None
    future: Future[list[dict[str, Any]]] | None = None  # a waiting thread
    loop: asyncio.AbstractEventLoop | None = None  # or a waiting coroutine
    waiter: asyncio.Future[list[dict[str, Any]]] | None = None
    result: list[dict[str, Any]] | None = None
    error: BaseException | None = None


def deliver(batch: list[Submission], then: Callable[[], None] | None = None) -> None:
    """Wake every waiter of a written batch: threads directly, each event loop once; then run
    `then` (the writer's metrics hook) where it holds nobody up.

    With a coroutine waiting, `then` runs on its event loop after the woken request has sent
    its response. Run here, it would keep the writer holding the GIL just when the woken event
    loop needs it, and the request would wait for it.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[Submission]] = {}
    for sub in batch:
        if sub.future is not None:
            if sub.error is not None:
                sub.future.set_exception(sub.error)
            else:
                sub.future.set_result(sub.result or [])
        elif sub.loop is not None:
            by_loop.setdefault(sub.loop, []).append(sub)
    for loop, subs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, subs, then)
            then = None
    if then is not None:
        then()


def _settle(subs: list[Submission], then: Callable[[], None] | None = None) -> None:
    for sub in subs:
        waiter = sub.waiter
        if waiter is None or waiter.done():
            continue
        if sub.error is not None:
            waiter.set_exception(sub.error)
        else:
            waiter.set_result(sub.result or [])
    if then is not None:
        # Queued behind the wake-ups of the requests just answered, so it runs after them.
        asyncio.get_running_loop().call_soon(then)


def expire(waiter: asyncio.Future[list[dict[str, Any]]], error: LogUnavailable) -> None:
    if not waiter.done():
        waiter.set_exception(error)
