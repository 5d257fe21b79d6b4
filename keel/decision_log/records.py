"""The records the log stores in its `record` column, as typed dicts (types only: nothing runs here).

A decision record is built by the serving layer (keel.serving.decision_record), a feedback record
by the decider's `feedback`; both cross module boundaries on their way into a row
(keel.decision_log.rows) and back out in responses. They are TypedDicts, not classes, because
they are the JSON the log hashes and the service returns: the same dicts, now with named keys.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["ArchivedFrom", "Audit", "BatchRef", "DecisionRecord", "FeedbackRecord", "LookedUpDecision"]


class Audit(TypedDict):
    """A decision's selection for human audit under the model's audit plan (keel.decision_log.audit_plans)."""

    selected: bool
    """Whether the case was drawn for audit (never for an abstention: it goes to review anyway)."""
    probability: float
    """The chance of selection the plan gave this case (0.0 for an abstention)."""
    pool: str | None
    """`local` (a reviewer of the case's own segment) or `cross`; None when not selected."""
    plan: int
    """The version of the audit plan that drew it."""


class BatchRef(TypedDict):
    """Where a decision logged by a batch run (`keel score --log`) came from."""

    run_id: str
    """The run's id (derived from the model version, the input file and the chunk size)."""
    row: int
    """The case's row number in the input file."""


class _DecisionCore(TypedDict):
    decision_id: str
    case_id: Any
    """The caller's own id of the case, as given (None when the case has none)."""
    model: str
    created_at: str
    """ISO 8601, UTC."""
    versions: dict[str, Any]
    """Model, model version, alias, contract version and policy version that decided it."""
    outcome: str | None
    """The decided class; None when the model abstained."""
    abstained: bool
    route: str
    """Where the policy sends the case (e.g. `auto`, `human_review`)."""
    reason_codes: list[str]
    notify: list[str]
    rules_fired: list[str]
    """Ids of the policy rules that changed the route or added parties to notify."""
    confidence: float | None
    probabilities: dict[str, float] | None
    explanation: dict[str, Any] | None
    """The top-k SHAP contributions returned to the caller; None when unavailable."""
    explanation_status: str
    """`exact` or `unavailable`."""


class DecisionRecord(_DecisionCore, total=False):
    """One decision as logged (and, without `inputs` and `explanation_full`, as answered)."""

    threshold: dict[str, Any]
    """The abstention threshold the case was held to and which one (absent when the model failed)."""
    inputs: dict[str, Any]
    """The case as given; logged, never echoed back (serving.decision_record.PRIVATE_FIELDS)."""
    explanation_full: dict[str, Any] | None
    """Every contribution, logged; never echoed back."""
    audit: Audit
    """Set before the row is built for served and batch decisions; never on shadow decisions."""
    shadow_of: str
    """On a shadow decision only: the live decision it shadows."""
    batch: BatchRef
    """On a decision logged by a batch run only."""
    context: dict[str, Any]
    """The caller's correlation context (keel.client.context.Context fields); absent when none was sent."""
    traceparent: str
    """The request's W3C `traceparent` header; absent when none (or a malformed one) was sent."""


class ArchivedFrom(TypedDict):
    """Where a decision whose month left the live log was read from."""

    url: str
    month: str


class LookedUpDecision(DecisionRecord, total=False):
    """A logged decision as GET /v1/decisions/{id} returns it: the record plus its row's context."""

    caller: str
    origin: str
    """`live`, `batch` or `shadow` (keel.decision_log.chain)."""
    feedback: list[FeedbackRecord]
    """Every feedback revision on it, oldest first."""
    archived: ArchivedFrom
    """Only for a decision whose month left the live log: the archive and month it was read from."""


class _FeedbackCore(TypedDict):
    feedback_id: str
    """Derived from the caller and Idempotency-Key when one is given, so a retry finds its revision."""
    decision_id: str
    model: str
    model_version: str
    model_outcome: str | None
    """The decision's outcome (None when the model abstained)."""
    abstained: bool
    final_outcome: str
    kind: str
    """`label` (on an abstention), `confirmation` or `override`."""
    actor: str
    reason: str | None
    caller: str
    created_at: str


class FeedbackRecord(_FeedbackCore, total=False):
    """A reviewer's final outcome on a decision, as logged and returned by POST /v1/feedback.

    Every record built today has all keys; those below are absent from records logged before
    they existed."""

    reviewer_pool: str | None
    """`local` or `cross`: whether the reviewer works in the case's own segment."""
    reviewer_segment: str | None
    request_hash: str
    """Digest of what was asked: a replay with other content is refused."""
    idempotency_key: str | None
    context: dict[str, Any]
    """The feedback's own correlation context (e.g. the review task); absent when none was sent."""
    traceparent: str
    """The request's W3C `traceparent` header; absent when none was sent."""
