"""Read-ahead for the log's long scans: the next item is made on a thread of its own.

A bulk load builds its next batch while the database takes in the current one; verification
fetches the next chunk of rows while it hashes the current one. Both wait on a socket half the
time with the GIL released, so the two halves overlap even in one process. The queue holds
`depth` items, so memory stays bounded: at most depth + 2 items exist at once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T], depth: int = 1, name: str = "keel-prefetch") -> Iterator[T]:
    """`items` in order, each made ahead on a worker thread; its errors are raised here."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put(item)
            ready.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(_Failed(exc))
        finally:
            # Close the source here, before the consumer goes on: a stream's cursor belongs to a
            # transaction the consumer is about to end.
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # unblock a producer waiting to put
            while True:
                ready.get_nowait()
        worker.join(timeout=10)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
