"""What the sync and async clients share: the requests they build, the retry rule they follow,
and how they read answers. Only the sending (and sleeping) differs between them.

Retry rule: a connection error or timeout, 429, 502, 503 and 504 are retried; every other status
is answered at once (no other 4xx is ever retried, nor a 500: the same request would fail the
same way). A wait honours the answer's Retry-After (plus up to `backoff` of jitter, so clients
refused together do not return together); otherwise it grows exponentially with equal jitter.
Every logical call sends one Idempotency-Key, generated once and reused on every retry, so a
retry after a lost answer replays what was recorded instead of deciding twice.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from keel.client.context import Context
from keel.client.errors import KeelAPIError, KeelConnectionError
from keel.client.results import Decision, DecisionPage, Feedback, LoggedDecision

__all__ = ["Call", "RetryPolicy", "Tries"]

ContextLike = Context | Mapping[str, Any] | None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a call tries: at most `attempts` tries within `deadline` seconds in all."""

    attempts: int = 6
    deadline: float = 60.0
    """Seconds for the whole logical call, waits and tries included; no try starts after it."""
    backoff: float = 0.2
    """The first wait without Retry-After; each later one doubles (with jitter), up to `max_backoff`."""
    max_backoff: float = 10.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    """Statuses retried; any other error status is raised at once."""


class Tries:
    """One logical call's tries: counts them and says how long to wait before the next, or None."""

    def __init__(self, policy: RetryPolicy, timeout: httpx.Timeout) -> None:
        self.policy = policy
        self.timeout = timeout
        self.started = time.monotonic()
        self.count = 0

    def remaining(self) -> float:
        return self.policy.deadline - (time.monotonic() - self.started)

    def attempt_timeout(self) -> httpx.Timeout:
        """The configured timeouts, none longer than what is left of the deadline."""
        left = max(0.05, self.remaining())
        t = self.timeout

        def clamp(value: float | None) -> float:
            return left if value is None else min(value, left)

        return httpx.Timeout(
            connect=clamp(t.connect), read=clamp(t.read), write=clamp(t.write), pool=clamp(t.pool)
        )

    def wait(self, retry_after: float | None) -> float | None:
        """After a failed try: seconds to wait before the next one, or None to give up."""
        self.count += 1
        p = self.policy
        if self.count >= p.attempts:
            return None
        if retry_after is not None:
            delay = retry_after + random.uniform(0, p.backoff)
        else:
            step = min(p.max_backoff, p.backoff * 2 ** (self.count - 1))
            delay = step / 2 + random.uniform(0, step / 2)
        return delay if delay < self.remaining() else None


@dataclass(frozen=True)
class Call:
    """One logical request; `headers` carry its Idempotency-Key, the same on every try."""

    method: str
    path: str
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")

    def send_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"headers": self.headers}
        if self.body is not None:
            args["json"] = self.body
        if self.params:
            args["params"] = self.params
        return args


def _headers(idempotency_key: str | None, traceparent: str | None) -> dict[str, str]:
    headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


def context_fields(context: ContextLike) -> dict[str, Any] | None:
    """A context as sent: checked against the schema here, so a mistake fails before any request."""
    if context is None:
        return None
    checked = context if isinstance(context, Context) else Context.model_validate(dict(context))
    return checked.fields()


def decide_call(
    model: str,
    cases: Sequence[Mapping[str, Any]],
    context: ContextLike,
    idempotency_key: str | None,
    traceparent: str | None,
) -> Call:
    body: dict[str, Any] = {"cases": [dict(c) for c in cases]}
    fields = context_fields(context)
    if fields:
        body["context"] = fields
    return Call(
        "POST", f"/v1/{quote(model, safe='')}/decide", body, headers=_headers(idempotency_key, traceparent)
    )


def feedback_call(
    decision_id: str,
    final_outcome: str,
    actor: str,
    reason: str | None,
    reviewer_pool: str | None,
    reviewer_segment: str | None,
    context: ContextLike,
    idempotency_key: str | None,
    traceparent: str | None,
) -> Call:
    body: dict[str, Any] = {"decision_id": decision_id, "final_outcome": final_outcome, "actor": actor}
    for name, value in (
        ("reason", reason),
        ("reviewer_pool", reviewer_pool),
        ("reviewer_segment", reviewer_segment),
        ("context", context_fields(context)),
    ):
        if value is not None:
            body[name] = value
    return Call("POST", "/v1/feedback", body, headers=_headers(idempotency_key, traceparent))


def decision_call(decision_id: str) -> Call:
    return Call("GET", f"/v1/decisions/{quote(decision_id, safe='')}")


def process_call(process_instance: str, limit: int, after: int | None) -> Call:
    params: dict[str, Any] = {"process_instance": process_instance, "limit": limit}
    if after is not None:
        params["after"] = after
    return Call("GET", "/v1/decisions", params=params)


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def api_error(response: httpx.Response) -> KeelAPIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": f"HTTP{response.status_code}", "message": response.text[:500]}
    return KeelAPIError(response.status_code, body, retry_after(response))


def after_response(response: httpx.Response, tries: Tries) -> float | None:
    """None when the answer is the call's result; else the wait before the next try. Raises the
    answer's error when it is not retried, or when no try is left."""
    if response.status_code < 400:
        return None
    if response.status_code not in tries.policy.statuses:
        raise api_error(response)
    wait = tries.wait(retry_after(response))
    if wait is None:
        raise api_error(response)
    return wait


def after_transport_error(exc: httpx.TransportError, call: Call, tries: Tries) -> float:
    """The wait before the next try after no answer; raises KeelConnectionError when none is left."""
    wait = tries.wait(None)
    if wait is None:
        raise KeelConnectionError(
            f"{call.method} {call.path}: no answer after {tries.count} tries "
            f"({type(exc).__name__}: {exc}); the same Idempotency-Key may be retried safely",
            call.idempotency_key,
        ) from exc
    return wait


def decisions_from(response: httpx.Response) -> list[Decision]:
    return [Decision.model_validate(d) for d in response.json()["decisions"]]


def feedback_from(response: httpx.Response) -> Feedback:
    return Feedback.model_validate({**response.json(), "created": response.status_code == 201})


def logged_from(response: httpx.Response) -> LoggedDecision:
    return LoggedDecision.model_validate(response.json())


def page_from(response: httpx.Response) -> DecisionPage:
    return DecisionPage.model_validate(response.json())
