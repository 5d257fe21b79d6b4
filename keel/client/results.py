"""What the service answers, as typed models: decisions, feedback, pages of a process's decisions.

Unknown fields are kept (`extra="allow"`), so a newer service never breaks an older client; the
fields named here are the served contract (PRODUCT.md, "The decision").
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.client.context import Context

__all__ = ["Audit", "Decision", "DecisionPage", "Feedback", "LoggedDecision", "Versions"]

_OPEN = ConfigDict(extra="allow", frozen=True)


class Versions(BaseModel):
    """What produced a decision."""

    model_config = _OPEN
    model: str
    model_version: str
    alias: str | None = None
    contract_version: str | None = None
    policy_version: str | None = None


class Audit(BaseModel):
    """Whether Keel drew this decided case for a human audit, and for which reviewer pool."""

    model_config = _OPEN
    selected: bool
    probability: float
    pool: str | None = None
    plan: int | None = None


class Decision(BaseModel):
    """One decision as POST /v1/{model}/decide returns it."""

    model_config = _OPEN
    decision_id: str
    case_id: str | None = None
    model: str
    created_at: str
    outcome: str | None
    """The decided class; None when the model abstained."""
    abstained: bool
    route: str
    """Where the workflow sends the case: `auto`, `human_review`, `finance_approval`, ..."""
    reason_codes: list[str] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=list)
    rules_fired: list[str] = Field(default_factory=list)
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    explanation: dict[str, Any] | None = None
    explanation_status: str | None = None
    versions: Versions
    audit: Audit | None = None
    context: Context | None = None
    """The correlation context the decision was asked with (None: none was sent)."""
    traceparent: str | None = None


class Feedback(BaseModel):
    """A reviewer's final outcome on a decision, as logged (one revision)."""

    model_config = _OPEN
    feedback_id: str
    decision_id: str
    model: str
    model_version: str
    model_outcome: str | None = None
    abstained: bool
    final_outcome: str
    kind: str
    """`label` (on an abstention), `confirmation` or `override`."""
    actor: str
    reason: str | None = None
    reviewer_pool: str | None = None
    reviewer_segment: str | None = None
    caller: str
    created_at: str
    context: Context | None = None
    traceparent: str | None = None
    created: bool = True
    """False when the service returned an earlier identical revision (a retry, or a repeat)."""


class LoggedDecision(Decision):
    """A decision as the log holds it (GET /v1/decisions/...): with its caller and feedback."""

    caller: str | None = None
    origin: str | None = None
    feedback: list[Feedback] = Field(default_factory=list)


class DecisionPage(BaseModel):
    """One page of GET /v1/decisions?process_instance=...; `next_after` None on the last page."""

    model_config = _OPEN
    process_instance: str
    decisions: list[LoggedDecision]
    next_after: int | None = None
