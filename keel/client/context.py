"""The correlation context a workflow engine sends with a decision or feedback, and W3C trace context.

Shared by the service (which validates, stores and returns them) and the client (which sends
them), so both speak one schema. The context identifies who asked: it is logged in the
hash-chained record, returned with the decision and searchable by process instance; it is never
a model input. A `traceparent` header is checked against the W3C Trace Context format; a
malformed one is ignored, as the W3C recommendation asks of a receiver, and nothing of it is
stored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["MAX_CONTEXT_BYTES", "Context", "context_size", "parse_traceparent"]

MAX_CONTEXT_BYTES = 2048
"""A case's context, serialized as compact JSON, may be at most this many bytes (else 422)."""

Id = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""One identifier; the context as a whole is bounded by MAX_CONTEXT_BYTES."""


class Context(BaseModel):
    """Which process asked: sent per call (the body's `context`) or per case (a case's `context`,
    whose fields win over the call's). Every field is optional; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process_definition_id: Id | None = Field(
        default=None, description="the process definition (e.g. BPMN process id or key)"
    )
    process_definition_version: int | Id | None = Field(
        default=None, description="the deployed version of that definition"
    )
    process_instance_id: Id | None = Field(
        default=None,
        description="the process instance that asked (GET /v1/decisions?process_instance= finds them)",
    )
    element_id: Id | None = Field(
        default=None, description="the BPMN element, activity or user task that asked"
    )
    business_key: Id | None = Field(
        default=None, description="the business key of the instance (e.g. the invoice number)"
    )
    tenant_id: Id | None = Field(default=None, description="the engine's tenant, if it has several")

    @model_validator(mode="after")
    def _small(self) -> Context:
        size = context_size(self.fields())
        if size > MAX_CONTEXT_BYTES:
            raise ValueError(f"the context is {size} bytes as JSON; at most {MAX_CONTEXT_BYTES}")
        return self

    def fields(self) -> dict[str, Any]:
        """The fields set, as stored and returned (unset ones are left out)."""
        return self.model_dump(exclude_none=True)


def context_size(fields: dict[str, Any]) -> int:
    """Bytes of a context as compact JSON (the 2 KiB bound is on this)."""
    return len(json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode())


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?$")


def parse_traceparent(value: str | None) -> str | None:
    """The header's value if it is a valid W3C `traceparent`, else None (ignored, not an error).

    Version 00 has exactly four fields; a later version may add fields after them (W3C Trace
    Context, "versioning of traceparent"); version ff and all-zero trace or parent ids are invalid.
    """
    if value is None:
        return None
    value = value.strip()
    found = _TRACEPARENT.match(value) if len(value) <= 512 else None
    if found is None:
        return None
    version, trace_id, parent_id, _flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return value
