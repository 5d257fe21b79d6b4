"""The local engine's deciders: chunks decided side by side in worker processes, in input order.

Deciding a chunk is CPU-bound (validation, compiled trees, exact explanations, policy, records)
and mostly Python, so one process uses one core. `keel score --engine local` hands chunks to
`KEEL_BATCH_WORKERS` processes (one per core by default) while its own process reads the input
and writes the output, error file and log, which stay single-writer and in input order.

Each worker loads the same registered version from the model cache, verified against the hashes
recorded at registration as `keel serve` loads it (no model object crosses the process
boundary), and refuses to decide when its contract or policy differs from the driver's. Workers
are spawned, not forked: the driver has LightGBM's OpenMP and numba loaded, and forking a
process with threads can leave a lock held in the child. At most workers + 1 chunks are in
flight, so memory stays bounded by a few chunks. The first chunk is decided in-process, and
with the worker count left to Keel the first `POOL_AFTER_ROWS` rows are: for a small file,
starting interpreters would cost more than it saves.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import FieldError, InvalidInput, KeelError
from keel.models import registry
from keel.models.registry import VersionRef
from keel.serving.batch_io import Chunk
from keel.serving.model_set import Served

__all__ = ["POOL_AFTER_ROWS", "Deciders", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """What a worker needs to build the driver's decider: the version, where its bundle is cached,
    the versions the driver resolved (contract and policy digests) and the run's context."""

    ref: VersionRef
    cache_dir: Path
    versions: dict[str, Any]
    context: dict[str, Any] | None


_decider: Any = None


def _start(recipe: Recipe) -> None:
    """Worker initializer: load and verify the version, then check it is the driver's."""
    from keel.serving.batch import ChunkDecider  # here: serving.batch imports this module

    served = Served(registry.load(recipe.ref, recipe.cache_dir))
    if served.versions != recipe.versions:
        raise InvalidInput(
            "a batch worker's contract or policy differs from the driver's",
            [FieldError(-1, "versions", f"worker {served.versions} != driver {recipe.versions}")],
        )
    global _decider
    _decider = ChunkDecider(served, context=recipe.context)


def _decide(chunk: Chunk) -> Any:
    return _decider.decide(chunk)


POOL_AFTER_ROWS = 10_000
"""With the worker count left to Keel (KEEL_BATCH_WORKERS=0), rows decided in this process before
workers start: spawning two interpreters costs several seconds of CPU, which a few thousand rows
never pay back (bench.batch: two workers lost to one at 60,000 rows and gained 1.38x at 300,000)."""


@dataclass
class Deciders:
    """Deciding a run's chunks: `decider` in this process when `workers` is 1 or there is no
    `recipe`; else the first `after_rows` rows (at least one chunk) here and the rest, if any, in
    `workers` spawned processes. `spawned` says whether they were."""

    decider: Any
    workers: int
    recipe: Recipe | None
    after_rows: int = 0
    spawned: bool = False

    def decided(self, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Any]]:
        """(chunk, Decided) in input order."""
        it = iter(chunks)
        seen = 0
        for chunk in it:
            yield chunk, self.decider.decide(chunk)
            seen += len(chunk.cases)
            if self.workers > 1 and self.recipe is not None and seen >= self.after_rows:
                break
        rest = list(itertools.islice(it, 1))
        if not rest:
            return
        recipe = self.recipe
        assert recipe is not None  # the loop above leaves input only when there is one
        spawn = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=spawn, initializer=_start, initargs=(recipe,))
        self.spawned = True
        pending: deque[tuple[Chunk, Future[Any]]] = deque()
        try:
            for chunk in itertools.chain(rest, it):
                pending.append((chunk, pool.submit(_decide, chunk)))
                if len(pending) > self.workers:
                    done, future = pending.popleft()
                    yield done, _result(future)
            while pending:
                done, future = pending.popleft()
                yield done, _result(future)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _result(future: Future[Any]) -> Any:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        # A worker that failed to load the version (its traceback is printed above) or was killed.
        raise KeelError(
            f"a batch worker process stopped ({exc}); its error, if any, is printed above. The output "
            "files are removed; logged chunks are kept and a re-run skips them. KEEL_BATCH_WORKERS=1 "
            "decides in the keel score process alone"
        ) from exc
