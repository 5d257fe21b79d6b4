"""Correlation on the decide path: each case's context (the call's, overridden field by field by
the case's own) checked against keel.client.context.Context, taken out of the case before the
contract sees it, and attached with the request's `traceparent` to the decision records.

A request without any context costs one scan for a `context` key and changes nothing: its
records, responses and idempotency digests are what they were before contexts existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keel.client.context import MAX_CONTEXT_BYTES, Context, context_size
from keel.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = ["CONTEXT", "attach", "case_contexts", "checked_context"]

CONTEXT = "context"
"""The key of a context: top level of a decide or feedback body, or inside a case."""


def checked_context(value: Any, row: int, errors: list[FieldError]) -> dict[str, Any]:
    """A context's fields, or {} with its problems added to `errors` (row -1: the call's)."""
    try:
        return Context.model_validate(value).fields()
    except ValidationError as exc:
        for e in exc.errors(include_url=False, include_input=False)[:20]:
            where = ".".join(str(x) for x in e["loc"])
            errors.append(FieldError(row, f"{CONTEXT}.{where}" if where else CONTEXT, e["msg"]))
        return {}


def case_contexts(call: Any, cases: list[Any]) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """(the cases without their `context` keys, each case's context) or (cases, None) when no
    context was sent; a 422 naming every field of every context that is wrong."""
    own = [isinstance(c, dict) and CONTEXT in c for c in cases]
    if call is None and not any(own):
        return cases, None
    errors: list[FieldError] = []
    base = checked_context(call, -1, errors) if call is not None else {}
    clean: list[Any] = []
    contexts: list[dict[str, Any]] = []
    for row, (case, has_own) in enumerate(zip(cases, own, strict=True)):
        fields = base
        if has_own:
            case = dict(case)
            fields = {**base, **checked_context(case.pop(CONTEXT), row, errors)}
            size = context_size(fields)
            if size > MAX_CONTEXT_BYTES:
                errors.append(
                    FieldError(
                        row, CONTEXT, f"{size} bytes as JSON with the call's; at most {MAX_CONTEXT_BYTES}"
                    )
                )
        clean.append(case)
        contexts.append(fields)
    if errors:
        raise InvalidInput(
            f"{len(errors)} problem(s) with the correlation context", errors[:100], len(errors)
        )
    return clean, contexts


def attach(
    records: list[DecisionRecord], contexts: list[dict[str, Any]] | None, traceparent: str | None
) -> None:
    """Give each record its case's context and the request's trace context, where there are any."""
    for i, record in enumerate(records):
        if contexts is not None and contexts[i]:
            record["context"] = contexts[i]
        if traceparent is not None:
            record["traceparent"] = traceparent
