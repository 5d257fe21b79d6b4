"""keel.client: the Python client for workflow engines (sync and asyncio), with idempotent
retries and correlation context. It needs httpx and pydantic only, nothing of the service.

    from keel.client import Context, KeelClient

    with KeelClient("http://127.0.0.1:3000", key) as keel:
        d = keel.decide("routing", case, Context(process_instance_id="pi-42", element_id="route"))

See docs/client.md.
"""

from keel.client.aio import AsyncKeelClient
from keel.client.calls import RetryPolicy
from keel.client.context import MAX_CONTEXT_BYTES, Context, parse_traceparent
from keel.client.errors import KeelAPIError, KeelClientError, KeelConnectionError
from keel.client.results import Audit, Decision, DecisionPage, Feedback, LoggedDecision, Versions
from keel.client.sync import KeelClient

__all__ = [
    "MAX_CONTEXT_BYTES",
    "AsyncKeelClient",
    "Audit",
    "Context",
    "Decision",
    "DecisionPage",
    "Feedback",
    "KeelAPIError",
    "KeelClient",
    "KeelClientError",
    "KeelConnectionError",
    "LoggedDecision",
    "RetryPolicy",
    "Versions",
    "parse_traceparent",
]
