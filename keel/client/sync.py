"""KeelClient: the blocking client (for threads, scripts and most workflow-engine workers)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from keel.client import calls
from keel.client.calls import Call, ContextLike, RetryPolicy, Tries
from keel.client.results import Decision, DecisionPage, Feedback, LoggedDecision

__all__ = ["KeelClient"]

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MAX_PAGES = 10_000
"""Most pages `process_decisions` reads (2 million decisions at the largest page)."""


class KeelClient:
    """`KeelClient(url, key).decide("routing", case)`; see docs/client.md.

    Every call is one logical request: it is sent with one Idempotency-Key (yours, or a new one)
    and retried under `retry` on connection errors, timeouts, 429, 502, 503 and 504, so it is
    decided (or its feedback recorded) at most once however often it was sent.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=self.timeout,
            transport=transport,
        )

    def __enter__(self) -> KeelClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call, parse: Callable[[httpx.Response], T]) -> T:
        tries = Tries(self.retry, self.timeout)
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, timeout=tries.attempt_timeout(), **call.send_args()
                )
            except httpx.TransportError as exc:
                time.sleep(calls.after_transport_error(exc, call, tries))
                continue
            wait = calls.after_response(response, tries)
            if wait is None:
                return parse(response)
            time.sleep(wait)

    def decide(
        self,
        model: str,
        case: Mapping[str, Any],
        context: ContextLike = None,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Decision:
        """Decide one case; `context` says which process step asks (keel.client.Context)."""
        return self.decide_batch(
            model, [case], context, idempotency_key=idempotency_key, traceparent=traceparent
        )[0]

    def decide_batch(
        self,
        model: str,
        cases: Sequence[Mapping[str, Any]],
        context: ContextLike = None,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> list[Decision]:
        """Decide 1 to 1,000 cases in one request, in order; each case may carry its own `context`."""
        call = calls.decide_call(model, cases, context, idempotency_key, traceparent)
        return self._run(call, calls.decisions_from)

    def feedback(
        self,
        decision_id: str,
        final_outcome: str,
        actor: str,
        reason: str | None = None,
        *,
        reviewer_pool: str | None = None,
        reviewer_segment: str | None = None,
        context: ContextLike = None,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Feedback:
        """Record a reviewer's final outcome. Each call is a new revision (the latest counts);
        its retries never are. Pass your own `idempotency_key` to make a repeat of the same
        step (e.g. after your worker restarted) return the first revision."""
        call = calls.feedback_call(
            decision_id,
            final_outcome,
            actor,
            reason,
            reviewer_pool,
            reviewer_segment,
            context,
            idempotency_key,
            traceparent,
        )
        return self._run(call, calls.feedback_from)

    def decision(self, decision_id: str) -> LoggedDecision:
        """The logged decision with its caller and every feedback revision (read role)."""
        return self._run(calls.decision_call(decision_id), calls.logged_from)

    def decisions_page(
        self, process_instance: str, limit: int = 50, after: int | None = None
    ) -> DecisionPage:
        """One page of a process instance's decisions, oldest first (read role)."""
        return self._run(calls.process_call(process_instance, limit, after), calls.page_from)

    def process_decisions(self, process_instance: str, page_size: int = 200) -> Iterator[LoggedDecision]:
        """Every decision a process instance asked for, oldest first, page by page."""
        after: int | None = None
        for _ in range(MAX_PAGES):
            page = self.decisions_page(process_instance, page_size, after)
            yield from page.decisions
            if page.next_after is None:
                return
            after = page.next_after
