"""A large decide body is first parsed and checked in a separate process.

Why a process: parsing JSON (orjson) and freeing what it built run in C while holding the
GIL. A 2 MB body of 150,000 keys holds it for tens to hundreds of milliseconds, and a worker
thread doing that stalls the event loop, and so every other request, however the work is
scheduled. In a spawned process the parse has its own GIL. Only bodies that pass (known fields,
1 to max_cases cases, so at most a few thousand keys each) are parsed again in the service.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

from keel.errors import FieldError, InvalidInput, KeelError
from keel.serving.correlation import case_contexts

__all__ = ["check_in_process", "close", "parse_request", "start"]

_pool: ProcessPoolExecutor | None = None


def _invalid(problem: str, field: str = "body") -> InvalidInput:
    return InvalidInput("the request body does not match the schema", [FieldError(-1, field, problem)])


def parse_request(body: bytes) -> tuple[list[Any], Any]:
    """The `cases` of a decide body and its call-level `context` (None: not sent), or a 422
    saying what is wrong with its shape (a context's own fields are checked later)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity and integers beyond 64 bits here; its message names the
        # position only, never the input.
        raise _invalid(f"not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _invalid('expected a JSON object {"cases": [...]}')
    extra = sorted(k for k in payload if k not in ("cases", "context"))[:10]
    if extra:
        raise _invalid(
            "unknown top-level field(s); only 'cases' and 'context' are allowed", field=",".join(extra)[:200]
        )
    cases = payload.get("cases")
    if not isinstance(cases, list):
        raise _invalid("required: a list of 1 to 1000 case objects", field="cases")
    return cases, payload.get("context")


def _check(body: bytes, contract: Any, max_cases: int) -> tuple[str, list[Any], int] | None:
    """In the child: None if the body may be parsed in the service, else (message, errors, count)."""
    try:
        cases, context = parse_request(body)
        if not cases or len(cases) > max_cases:
            return None  # the service answers these (422) without parsing much
        cases, _ = case_contexts(context, cases)
    except InvalidInput as exc:
        return exc.message, exc.errors, exc.error_count
    except KeelError as exc:
        return exc.message, list(getattr(exc, "errors", [])), 1
    checked = contract.validate_records(cases)
    if checked.matrix is None:
        return f"{checked.error_count} field error(s) in the cases", checked.errors, checked.error_count
    return None


def start() -> ProcessPoolExecutor:
    """The helper process, spawned in the background now (its imports take a while)."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        _pool.submit(_warm)
    return _pool


def _warm() -> None:
    import keel.feature_defs.contract  # noqa: F401  (unpickling a contract needs it)


async def check_in_process(body: bytes, contract: Any, max_cases: int) -> tuple[str, list[Any], int] | None:
    """Run `_check` in the helper process."""
    return await asyncio.get_running_loop().run_in_executor(start(), _check, body, contract, max_cases)


def close() -> None:
    """Stop the helper process and wait for it to exit (at most one running check's time).

    Not waiting left it orphaned now and then: `keel serve` dies of SIGTERM right after
    shutting down, before the pool's thread has told the helper to stop, and a pool worker
    whose parent is gone waits on its queue for ever."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
