"""AsyncKeelClient: the asyncio client, the same calls as KeelClient awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from keel.client import calls
from keel.client.calls import Call, ContextLike, RetryPolicy, Tries
from keel.client.results import Decision, DecisionPage, Feedback, LoggedDecision
from keel.client.sync import DEFAULT_TIMEOUT, MAX_PAGES

__all__ = ["AsyncKeelClient"]

T = TypeVar("T")


class AsyncKeelClient:
    """`async with AsyncKeelClient(url, key) as keel: await keel.decide("routing", case)`; the
    same idempotent retries as KeelClient (see there and docs/client.md)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=self.timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncKeelClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call, parse: Callable[[httpx.Response], T]) -> T:
        tries = Tries(self.retry, self.timeout)
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, timeout=tries.attempt_timeout(), **call.send_args()
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(calls.after_transport_error(exc, call, tries))
                continue
            wait = calls.after_response(response, tries)
            if wait is None:
                return parse(response)
            await asyncio.sleep(wait)

    async def decide(
        self,
        model: str,
        case: Mapping[str, Any],
        context: ContextLike = None,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Decision:
        """Decide one case; `context` says which process step asks (keel.client.Context)."""
        decided = await self.decide_batch(
            model, [case], context, idempotency_key=idempotency_key, traceparent=traceparent
        )
        return decided[0]

    async def decide_batch(
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
        return await self._run(call, calls.decisions_from)

    async def feedback(
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
        """Record a reviewer's final outcome; each call a new revision, its retries never."""
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
        return await self._run(call, calls.feedback_from)

    async def decision(self, decision_id: str) -> LoggedDecision:
        """The logged decision with its caller and every feedback revision (read role)."""
        return await self._run(calls.decision_call(decision_id), calls.logged_from)

    async def decisions_page(
        self, process_instance: str, limit: int = 50, after: int | None = None
    ) -> DecisionPage:
        """One page of a process instance's decisions, oldest first (read role)."""
        return await self._run(calls.process_call(process_instance, limit, after), calls.page_from)

    async def process_decisions(
        self, process_instance: str, page_size: int = 200
    ) -> AsyncIterator[LoggedDecision]:
        """Every decision a process instance asked for, oldest first, page by page."""
        after: int | None = None
        for _ in range(MAX_PAGES):
            page = await self.decisions_page(process_instance, page_size, after)
            for decision in page.decisions:
                yield decision
            if page.next_after is None:
                return
            after = page.next_after
