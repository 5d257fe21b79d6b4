"""Shadow and canary challengers of a served model, beside its champion.

A canary decides a deterministic share of the cases: a case goes to it when a hash of its
`case_id` (of its content, when it has none) falls below the share, so the same case always
meets the same version and the split is independent of everything the models look at. Each
decision names the version and alias that made it.

A shadow scores the cases of every committed live request again, in one worker thread fed by a
bounded queue: the champion's answer is already committed and on its way back when the shadow
sees the cases, a full queue drops the work (counted in /metrics as keel_shadow_dropped) instead
of waiting, and shadow decisions are logged with origin `shadow` (never returned, never in the
served decision metrics), each naming the live decision it shadows (`shadow_of`) and carrying
its correlation context and trace context.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson

from keel.decision_log.chain import SHADOW
from keel.decision_log.rows import log_row
from keel.serving.correlation import inherit
from keel.serving.decision_record import decide_valid
from keel.serving.metrics import Metrics
from keel.serving.model_set import Challengers, Served

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = ["Challengers", "ShadowScorer", "canary_mask", "decide_cases", "in_canary"]

log = logging.getLogger("keel.challengers")


def _unit(model: str, case: Any) -> float:
    """A case's position in [0, 1): sha256 of the model and its case_id (or its content)."""
    case_id = case.get("case_id") if isinstance(case, dict) else None
    if case_id is not None:
        key = b"id:" + str(case_id).encode()
    else:
        key = b"content:" + orjson.dumps(case, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    digest = hashlib.sha256(model.encode() + b"\n" + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_canary(model: str, case: Any, share: float) -> bool:
    return _unit(model, case) < share


def canary_mask(model: str, cases: Sequence[Any], share: float) -> np.ndarray:
    return np.fromiter((in_canary(model, c, share) for c in cases), bool, len(cases))


def decide_cases(
    served: Served,
    challengers: Challengers | None,
    cases: list[Any],
    matrix: np.ndarray,
    top_k: int,
    metrics: Metrics | None = None,
) -> list[DecisionRecord]:
    """Decision records in request order: the canary's share of cases by the canary, the rest
    (all of them, without a canary) by the champion."""
    if challengers is None or challengers.canary is None or challengers.share <= 0.0:
        return decide_valid(served, cases, matrix, top_k, metrics)
    mask = canary_mask(served.loaded.model.name, cases, challengers.share)
    if not mask.any():
        return decide_valid(served, cases, matrix, top_k, metrics)
    # cast: placeholders, each replaced by its case's record below.
    out: list[DecisionRecord] = [cast("DecisionRecord", {})] * len(cases)
    for who, picked in ((served, ~mask), (challengers.canary, mask)):
        idx = np.flatnonzero(picked)
        if len(idx):
            records = decide_valid(who, [cases[i] for i in idx], matrix[idx], top_k, metrics)
            for i, r in zip(idx, records, strict=True):
                out[i] = r
    return out


@dataclass(frozen=True)
class _Work:
    shadow: Served
    cases: list[Any]
    live: list[DecisionRecord]
    """The champion's records of the same cases, in the same order."""
    caller: str


class ShadowScorer:
    """One daemon thread that decides queued live cases with the shadow and logs them."""

    def __init__(self, decisions: Any, metrics: Metrics, top_k: int, capacity_cases: int) -> None:
        self.log = decisions
        self.metrics = metrics
        self.top_k = top_k
        self.capacity = capacity_cases
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._queued = 0  # cases waiting; a counter, as Queue bounds items, not cases
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def offer(
        self, shadow: Served, cases: list[Any], live_rows: Sequence[dict[str, Any]], caller: str
    ) -> None:
        """Queue a committed request's cases for the shadow; never blocks (drops when full)."""
        model = shadow.loaded.model.name
        with self._lock:
            if self._queued + len(cases) > self.capacity:
                self.metrics.shadow_dropped.labels(model).inc(len(cases))
                return
            self._queued += len(cases)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
                self._thread.start()
        self._queue.put_nowait(_Work(shadow, cases, [r["record"] for r in live_rows], caller))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put_nowait(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            try:
                self._score(work)
            except Exception:  # a failing shadow never affects serving; it is counted and logged
                log.exception("shadow scoring failed for %s", work.shadow.loaded.model.name)
                self.metrics.shadow_failures.labels(work.shadow.loaded.model.name).inc(len(work.cases))
            finally:
                with self._lock:
                    self._queued -= len(work.cases)

    def _score(self, work: _Work) -> None:
        shadow = work.shadow
        model = shadow.loaded.model
        checked = model.contract.validate_records(work.cases)
        if checked.matrix is None:
            self.metrics.shadow_failures.labels(model.name).inc(len(work.cases))
            return
        records = decide_valid(shadow, work.cases, checked.matrix, self.top_k)
        inherit(records, work.live)
        rows = []
        for i, (record, live) in enumerate(zip(records, work.live, strict=True)):
            record["shadow_of"] = live["decision_id"]
            rows.append(log_row(record, i, work.caller, None, None, shadow.spec.segment_fields, SHADOW))
        self.log.append("decisions", rows)
        self.metrics.shadow_decisions.labels(model.name).inc(len(rows))
