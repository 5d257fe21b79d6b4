"""Correlation on the decide path: each case's context (the call's, overridden field by field by
the case's own) checked against keel.client.context.Context, taken out of the case before the
contract sees it, and attached with the request's `traceparent` to the decision records.

A request without any context costs one scan for a `context` key and changes nothing: its
records, responses and idempotency digests are what they were before contexts existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from keel.client.context import MAX_CONTEXT_BYTES, Context, context_size
from keel.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

__all__ = [
    "CONTEXT",
    "attach",
    "case_contexts",
    "checked_context",
    "inherit",
    "merged_context",
    "row_contexts",
]

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
            fields = merged_context(base, case.pop(CONTEXT), row, errors)
        clean.append(case)
        contexts.append(fields)
    if errors:
        raise InvalidInput(
            f"{len(errors)} problem(s) with the correlation context", errors[:100], len(errors)
        )
    return clean, contexts


def merged_context(base: dict[str, Any], own: Any, row: int, errors: list[FieldError]) -> dict[str, Any]:
    """`base` (checked fields) overridden field by field by `own` (a row's or case's context, to
    check); its problems, the 2 KiB bound on the merged context among them, go to `errors`."""
    fields = {**base, **checked_context(own, row, errors)}
    size = context_size(fields)
    if size > MAX_CONTEXT_BYTES:
        errors.append(FieldError(row, CONTEXT, f"{size} bytes as JSON, merged; at most {MAX_CONTEXT_BYTES}"))
    return fields


def row_contexts(
    base: dict[str, Any] | None, own: list[dict[str, Any]] | None, rows: int
) -> tuple[list[dict[str, Any]] | None, list[FieldError]]:
    """Each batch row's context (`keel score`): the run's (`base`, checked) overridden by the
    row's own context columns (`own`, unchecked; None without such columns), as a decide
    request's call and case contexts merge; and the rows' problems (row: index in `own`).
    None when the run has no context at all, so its records stay as they were before contexts."""
    if own is None:
        return ([dict(base) for _ in range(rows)] if base else None), []
    errors: list[FieldError] = []
    contexts = [merged_context(base or {}, fields, row, errors) for row, fields in enumerate(own)]
    return contexts, errors


def attach(
    records: list[DecisionRecord], contexts: list[dict[str, Any]] | None, traceparent: str | None
) -> None:
    """Give each record its case's context and the request's trace context, where there are any."""
    for i, record in enumerate(records):
        if contexts is not None and contexts[i]:
            record["context"] = contexts[i]
        if traceparent is not None:
            record["traceparent"] = traceparent


def inherit(records: list[DecisionRecord], live: Sequence[DecisionRecord]) -> None:
    """Give each shadow record the context and trace context of the live record it shadows, so
    a challenger's decision is found, and traced, with the champion's it sits beside."""
    for record, champion in zip(records, live, strict=True):
        if "context" in champion:
            record["context"] = champion["context"]
        if "traceparent" in champion:
            record["traceparent"] = champion["traceparent"]
