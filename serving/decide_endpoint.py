"""POST /v1/{model}/decide: Keel's own ASGI handler, mounted by the gate inside the BentoML service.

Why not a `@bentoml.api` method: BentoML's route path (Starlette routing, its request context,
pydantic parsing of `{"cases": [...]}` into a model, its response rendering) cost more server
CPU per request than deciding one case, and it answers a malformed body with an ERROR traceback
that quotes the body. This handler parses the already size-checked body once with orjson,
hands the cases to the Decider and sends the pre-rendered JSON. Bodies above
INLINE_BODY_BYTES are parsed, validated and decided in a worker thread, so a large or
pathological request never holds the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson

from keel.client.context import parse_traceparent
from keel.errors import InvalidInput, KeelError, ModelLoadError, NotFound
from keel.serving import body_check
from keel.serving.body_check import parse_request
from keel.serving.decider import Decider
from keel.serving.error_response import send_error, send_json

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = ["INLINE_BODY_BYTES", "answer"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

INLINE_BODY_BYTES = 16 * 1024
"""Bodies up to this size (a few cases) are parsed on the event loop: orjson takes
microseconds for them. Bigger bodies are parsed, validated and decided in a worker thread."""
CHECK_IN_PROCESS_BYTES = 256 * 1024
"""Bodies over this size are first checked in a helper process (serving/body_check.py), so a
pathological one never holds this process's GIL; a valid one costs one extra parse there."""


Render = Callable[[list["DecisionRecord"]], bytes]


def render(decisions: list[DecisionRecord]) -> bytes:
    return orjson.dumps({"decisions": decisions}, option=orjson.OPT_SERIALIZE_NUMPY)


def _observed(on_decided: Callable[[list[DecisionRecord]], None]) -> Render:
    """`render`, first handing the decisions to `on_decided` (the request's trace span)."""

    def rendered(decisions: list[DecisionRecord]) -> bytes:
        on_decided(decisions)
        return render(decisions)

    return rendered


def _decide_body(
    decider: Decider,
    model: str,
    body: bytes,
    caller: str,
    idempotency_key: str | None,
    traceparent: str | None,
    rendering: Render,
) -> bytes | KeelError:
    """Parse, validate and decide a large body in a worker thread; an error is returned, not raised.

    Everything built from the body is created and freed in this thread: a raised error's
    traceback would keep the parsed cases alive until the event loop dropped it, and freeing
    150,000 keys there holds the loop for tens of milliseconds.
    """
    try:
        cases, context = parse_request(body)
        return rendering(decider.decide(model, cases, caller, idempotency_key, context, traceparent))
    except KeelError as exc:
        return exc.with_traceback(None)


async def answer(
    decider: Decider,
    model: str,
    served: frozenset[str] | set[str],
    body: bytes,
    caller: str,
    idempotency_key: str | None,
    send: Send,
    traceparent: str | None = None,
    on_decided: Callable[[list[DecisionRecord]], None] | None = None,
) -> None:
    """Decide the body's cases for `model` and send the response (errors as Keel's JSON); a
    malformed `traceparent` is ignored (W3C Trace Context: a receiver starts a new trace).
    `on_decided` is shown the decisions answered, before they are rendered."""
    traceparent = parse_traceparent(traceparent)
    rendering = render if on_decided is None else _observed(on_decided)
    try:
        if not served:
            raise ModelLoadError("no model is loaded yet; retry shortly")
        if model not in served:
            raise NotFound(f"no served model {model[:100]!r}; served models: {sorted(served)}")
        if len(body) > CHECK_IN_PROCESS_BYTES:
            contract = decider.models.get(model).loaded.model.contract
            found = await body_check.check_in_process(body, contract, decider.settings.max_cases)
            if found is not None:
                message, errors, count = found
                raise InvalidInput(message, errors, count)
        if len(body) > INLINE_BODY_BYTES:
            # One large body at a time: parsing holds the GIL in C for its whole length, and
            # several such parses in a row would keep the event loop from running between them.
            out = await anyio.to_thread.run_sync(
                _decide_body,
                decider,
                model,
                body,
                caller,
                idempotency_key,
                traceparent,
                rendering,
                limiter=_large_bodies(),
            )
            if isinstance(out, KeelError):
                raise out
        else:
            cases, context = parse_request(body)
            out = await decider.decide_async(
                model,
                cases,
                caller,
                idempotency_key,
                render=rendering,
                context=context,
                traceparent=traceparent,
            )
    except KeelError as exc:
        await send_error(send, exc)
        return
    await send_json(send, 200, out)


_limiters: dict[int, anyio.CapacityLimiter] = {}


def _large_bodies() -> anyio.CapacityLimiter:
    """The one worker slot for large bodies, created in the running event loop on first use."""
    import asyncio

    loop = id(asyncio.get_running_loop())
    if loop not in _limiters:
        _limiters[loop] = anyio.CapacityLimiter(1)
    return _limiters[loop]
