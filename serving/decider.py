"""The decision path: validate -> model -> explanation -> policy -> durable log -> response.

A failing model routes its cases to human review and a failing explanation is marked
unavailable; neither becomes a 5xx. Nothing is answered before the log has committed it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread
import numpy as np

from keel.decision_log import DecisionLog, Replay, reads, reject_changed_replay
from keel.decision_log.audit_plans import POOLS, AuditPlan, PlanBook
from keel.decision_log.chain import FEEDBACK_COLUMNS
from keel.decision_log.errors import DATABASE_ERRORS, LogUnavailable
from keel.decision_log.rows import log_row, process_instance
from keel.errors import Conflict, FieldError, InvalidInput, NotFound
from keel.serving.challengers import ShadowScorer, decide_cases
from keel.serving.correlation import attach, case_contexts
from keel.serving.decision_record import public, with_audit
from keel.serving.metrics import Metrics
from keel.serving.model_set import ModelSet, Served
from keel.serving.settings import ServingSettings

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord, FeedbackRecord, LookedUpDecision

log = logging.getLogger("keel.decide")

INLINE_CASES = 4
"""Batches up to this size are decided on the event loop, with no thread hop (0.2 to 0.4 ms of
CPU per invoice case in bench.decide_path, a quarter to two fifths of it in the compiled trees
and explanation); bigger ones go to a worker thread so they do not hold up the loop's other
requests."""


def request_digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


T = TypeVar("T")


def _same(decisions: list[DecisionRecord]) -> list[DecisionRecord]:
    return decisions


@dataclass
class _Plan:
    model: str
    cases: list[Any]
    """The cases as the model saw them (without their correlation contexts)."""
    rows: list[dict[str, Any]]
    replay: Replay | None
    """Finds this request's rows if an identical one was logged first (idempotency), or None."""
    replayed: list[DecisionRecord] | None
    """The decisions of an earlier request with the same Idempotency-Key: nothing to write."""


class Decider:
    def __init__(
        self, models: ModelSet, decisions: DecisionLog, settings: ServingSettings, metrics: Metrics
    ) -> None:
        self.models = models
        self.log = decisions
        self.settings = settings
        self.metrics = metrics
        self._threads: anyio.CapacityLimiter | None = None
        self.shadow: ShadowScorer | None = None  # set by the runtime; scores shadow versions
        self.audits = PlanBook()  # refreshed by the runtime from the log; read on every decision

    def decide(
        self,
        model: str,
        cases: list[Any],
        caller: str,
        idempotency_key: str | None = None,
        context: Any = None,
        traceparent: str | None = None,
    ) -> list[DecisionRecord]:
        """Decide and log `cases`; `context` is the call's correlation context (each case may
        carry its own) and `traceparent` a valid W3C trace context (serving/correlation.py)."""
        plan = self._plan(model, cases, caller, idempotency_key, context, traceparent)
        if plan.replayed is not None:
            return plan.replayed
        out = self._finish(plan, self.log.append("decisions", plan.rows, replay=plan.replay))
        if self.models.snapshot.challengers and out and out[0]["decision_id"] == plan.rows[0]["decision_id"]:
            self._shadow(model, plan.cases, plan.rows, caller)
        return out

    async def decide_async(
        self,
        model: str,
        cases: list[Any],
        caller: str,
        idempotency_key: str | None = None,
        render: Callable[[list[DecisionRecord]], T] = _same,  # type: ignore[assignment]
        context: Any = None,
        traceparent: str | None = None,
    ) -> T:
        """`decide` for the event loop; returns `render(decisions)`.

        Small batches are computed inline and the commit is awaited, not waited for in a
        thread, so a request costs no thread hop. The decisions are rendered while the writer
        commits them (the result is still handed back only after the commit). A request with an
        Idempotency-Key reads the log before deciding: that read and everything else runs in a
        worker thread, as do batches too big to compute without holding up other requests.
        """
        # Until the audit plans are read (once per process, usually by the runtime's loader) the
        # read happens in the worker thread, never on the loop.
        if idempotency_key or len(cases) > INLINE_CASES or not self.audits.loaded:
            decisions = await anyio.to_thread.run_sync(
                self.decide,
                model,
                cases,
                caller,
                idempotency_key,
                context,
                traceparent,
                limiter=self.limiter(),
            )
            return render(decisions)
        # Inline even with other requests in flight. In a worker thread only the compiled
        # kernels drop the GIL, and the hops there and back cost more than that overlap saves:
        # 967 against 1,249 invoice decisions/s at 16 connections, 1.13 against 0.96 ms of
        # server CPU each (bench.serving --repeats 5, one machine, one session).
        plan = self._plan(model, cases, caller, None, context, traceparent)
        committed = self.log.submit("decisions", plan.rows)
        # Without an idempotency key nothing can be replayed: the stored rows are plan.rows.
        out = [public(r["record"]) for r in plan.rows]
        rendered = render(out)
        await committed
        # Counted once the response is on its way: the caller sends it before the loop runs this.
        asyncio.get_running_loop().call_soon(self.metrics.observe_decisions, plan.model, out)
        if self.models.snapshot.challengers:  # empty unless a shadow or canary is configured
            asyncio.get_running_loop().call_soon(self._shadow, model, plan.cases, plan.rows, caller)
        return rendered

    def _shadow(self, model: str, cases: list[Any], rows: list[dict[str, Any]], caller: str) -> None:
        """Hand committed cases to the model's shadow, if it has one (never blocks)."""
        challengers = self.models.challengers(model)
        if challengers is not None and challengers.shadow is not None and self.shadow is not None:
            self.shadow.offer(challengers.shadow, cases, rows, caller)

    def limiter(self) -> anyio.CapacityLimiter:
        """The worker threads the decide path may occupy at once."""
        # Created on first use: a CapacityLimiter belongs to the running event loop.
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(self.settings.threads)
        return self._threads

    def _plan(
        self,
        model: str,
        cases: list[Any],
        caller: str,
        idempotency_key: str | None,
        context: Any = None,
        traceparent: str | None = None,
    ) -> _Plan:
        """Everything before the log write: checks, an idempotent replay, the decisions, the rows."""
        if len(cases) > self.settings.max_cases:
            # A field error, not 413: the schema's maxItems says so, and 413 is about the body's bytes.
            too_many = f"{len(cases)} cases in one request; at most {self.settings.max_cases}"
            raise InvalidInput(too_many, [FieldError(-1, "cases", too_many)])
        if not cases:
            raise InvalidInput("no cases given", [FieldError(-1, "cases", "give 1 to 1000 cases")])
        if idempotency_key is not None and len(idempotency_key) > 200:
            raise InvalidInput(
                "Idempotency-Key is too long", [FieldError(-1, "Idempotency-Key", "at most 200 characters")]
            )
        served = self.models.get(model)
        asked, contexts = case_contexts(context, cases)
        # The body as sent (cases with their own contexts); the call's context only when there is
        # one, so a request without it digests as before. The traceparent is not part of it: a
        # retry is a new span of the same trace and replays the first answer.
        sent: Any = cases if context is None else {"cases": cases, "context": context}
        digest = request_digest(sent) if idempotency_key else None
        if idempotency_key:
            earlier = reads.decisions_by_key(self.log.db, caller, model, idempotency_key)
            if earlier:
                replayed = [public(r["record"]) for r in reject_changed_replay(earlier, digest or "")]
                return _Plan(model, asked, [], None, replayed)
        cases = asked
        contract = served.loaded.model.contract
        checked = contract.validate_records(cases)
        if checked.matrix is None:
            raise InvalidInput(
                f"{checked.error_count} field error(s) in the cases", checked.errors, checked.error_count
            )
        records = with_audit(self._decide_valid(served, cases, checked.matrix), self._audit_plan(model))
        attach(records, contexts, traceparent)
        segments = served.spec.segment_fields
        rows = [log_row(r, i, caller, idempotency_key, digest, segments) for i, r in enumerate(records)]
        replay = None
        if idempotency_key:
            key = idempotency_key

            def replay(conn: Any) -> list[dict[str, Any]] | None:
                found = reads.decisions_by_key(conn, caller, model, key)
                return reject_changed_replay(found, digest or "") if found else None

        return _Plan(model, cases, rows, replay, None)

    def _audit_plan(self, model: str) -> AuditPlan:
        """The model's current audit plan; the first call of a Decider the runtime did not load
        reads the plans (in the caller's thread: decide_async sends it to a worker)."""
        if not self.audits.loaded:
            try:
                self.audits.refresh(self.log.db)
            except DATABASE_ERRORS as exc:
                raise LogUnavailable(
                    f"cannot read the audit plans: {' '.join(str(exc).split())[:200]}"
                ) from exc
        return self.audits.plan(model)

    def _finish(self, plan: _Plan, stored: list[dict[str, Any]]) -> list[DecisionRecord]:
        out = [public(r["record"]) for r in stored]
        if stored and stored[0]["decision_id"] == plan.rows[0]["decision_id"]:
            self.metrics.observe_decisions(plan.model, out)
        return out

    def _decide_valid(self, served: Served, cases: list[Any], matrix: np.ndarray) -> list[DecisionRecord]:
        challengers = self.models.challengers(served.loaded.ref.name)  # a canary takes its share
        return decide_cases(served, challengers, cases, matrix, self.settings.top_k, self.metrics)

    # -- feedback and lookups ----------------------------------------------------------------
    def feedback(
        self,
        decision_id: str,
        final_outcome: str,
        actor: str,
        reason: str | None,
        caller: str,
        idempotency_key: str | None = None,
        reviewer_pool: str | None = None,
        reviewer_segment: str | None = None,
        context: dict[str, Any] | None = None,
        traceparent: str | None = None,
    ) -> tuple[FeedbackRecord, bool]:
        """Append a reviewer's final outcome; returns (feedback record, newly created).

        `reviewer_pool` says whether the reviewer works in the case's own segment (`local`) or
        outside it (`cross`), as the decision's audit asked; monitoring compares the two.
        `context` (checked fields of keel.client.context.Context) says which process step sent it;
        the row is found by its own process instance, else by its decision's."""
        if reviewer_pool is not None and reviewer_pool not in POOLS:
            raise InvalidInput(
                "reviewer_pool is not a reviewer pool",
                [FieldError(-1, "reviewer_pool", f"{reviewer_pool!r} is not one of {list(POOLS)}")],
            )
        decision = self.log.get_decision(decision_id)
        if decision is None:
            raise NotFound(f"no decision {decision_id}")
        classes = self.models.spec(decision["model"], decision["model_version"]).classes
        if final_outcome not in classes:
            raise InvalidInput(
                "final_outcome is not a class of this model",
                [FieldError(-1, "final_outcome", f"{final_outcome!r} is not one of {list(classes)}")],
            )
        if decision["abstained"]:
            kind = "label"
        else:
            kind = "override" if final_outcome != decision["outcome"] else "confirmation"
        # A revision is identified by its Idempotency-Key, so a late retry replays its own revision
        # and never becomes a newer one; without a key, a repeat of the reviewer's latest word is
        # a replay and anything else (A, B, then A again) is a new revision.
        asked_for: list[Any] = [decision_id, final_outcome, actor, reason]
        if reviewer_pool is not None or reviewer_segment is not None:
            # Only then: a request without them hashes as it did before they existed.
            asked_for += [reviewer_pool, reviewer_segment]
        if context:
            asked_for.append(context)
        asked = request_digest(asked_for)
        feedback_id = (
            str(uuid.UUID(hashlib.sha256(json.dumps([caller, idempotency_key]).encode()).hexdigest()[:32]))
            if idempotency_key
            else str(uuid.uuid4())
        )
        record: FeedbackRecord = {
            "feedback_id": feedback_id,
            "decision_id": decision_id,
            "model": decision["model"],
            "model_version": decision["model_version"],
            "model_outcome": decision["outcome"],
            "abstained": decision["abstained"],
            "final_outcome": final_outcome,
            "kind": kind,
            "actor": actor,
            "reason": reason,
            "reviewer_pool": reviewer_pool,
            "reviewer_segment": reviewer_segment,
            "caller": caller,
            "created_at": datetime.now(UTC).isoformat(),
            "request_hash": asked,
            "idempotency_key": idempotency_key,
        }
        if context:
            record["context"] = context
        if traceparent is not None:
            record["traceparent"] = traceparent
        columns: Mapping[str, Any] = record  # read by column name, not by literal key
        row = {k: columns[k] for k in FEEDBACK_COLUMNS if k not in ("record", "process_instance")}
        row["record"] = record
        row["process_instance"] = process_instance(context) or decision.get("process_instance")

        def replay(conn: Any) -> list[dict[str, Any]] | None:
            if idempotency_key:
                found = reads.feedback_by_id(conn, feedback_id)
                if not found and reads.feedback_id_archived(conn, feedback_id):
                    raise Conflict(
                        "the feedback this Idempotency-Key recorded is in a month that was archived and "
                        "removed from the live log (keel log restore brings it back); new feedback needs "
                        "a new Idempotency-Key"
                    )
                reject_changed_replay([f["record"] for f in found], asked)  # the digest is in the record
                return found or None
            latest = reads.latest_feedback(conn, decision_id, actor)
            same = latest is not None and latest["record"].get("request_hash", _digest_of(latest)) == asked
            return [latest] if same and latest is not None else None

        stored = self.log.append("feedback", [row], replay=replay)[0]
        created = (
            stored["feedback_id"] == feedback_id and stored["record"]["created_at"] == record["created_at"]
        )
        if created:
            self.metrics.feedback.labels(decision["model"], kind).inc()
        # cast: the stored row's record column is this record, or the one an earlier request logged.
        return cast("FeedbackRecord", stored["record"]), created

    def lookup(self, decision_id: str) -> LookedUpDecision:
        row = self.log.get_decision(decision_id)
        if row is None:
            raise NotFound(f"no decision {decision_id}")
        return _looked_up(row, self.log.feedback_for(decision_id, row))

    def of_process(self, process_instance: str, limit: int, after: int | None) -> dict[str, Any]:
        """A page of the decisions a process instance asked for (its context's
        process_instance_id), oldest first, each as `lookup` returns it; `next_after` continues."""
        rows, feedback, next_after = reads.decisions_of_process(self.log.db, process_instance, limit, after)
        by_decision: dict[str, list[dict[str, Any]]] = {}
        for f in feedback:
            by_decision.setdefault(f["decision_id"], []).append(f)
        return {
            "process_instance": process_instance,
            "decisions": [_looked_up(r, by_decision.get(r["decision_id"], [])) for r in rows],
            "next_after": next_after,
        }


def _looked_up(row: dict[str, Any], feedback: list[dict[str, Any]]) -> LookedUpDecision:
    # cast: the row's record column is a DecisionRecord; the row adds who asked and how.
    return cast(
        "LookedUpDecision",
        {
            **row["record"],
            "caller": row["caller"],
            "origin": row["origin"],
            "feedback": [f["record"] for f in feedback],
            **({"archived": row["archived"]} if "archived" in row else {}),
        },
    )


def _digest_of(feedback: dict[str, Any]) -> str:
    """The request digest of a feedback row logged before feedback records carried one."""
    r = feedback["record"]
    return request_digest([r["decision_id"], r["final_outcome"], r["actor"], r.get("reason")])
