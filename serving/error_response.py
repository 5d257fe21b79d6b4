"""The one way an error leaves the service: a KeelError becomes its status, JSON body and headers.

The gate and the decide handler send it over ASGI (`send_error`); the FastAPI app answers its
routes' errors with it (`fastapi_handler`, registered for KeelError); the OpenAPI document
describes each error status from the classes in `ANSWERED` (`described_statuses`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

import orjson
from starlette.requests import Request
from starlette.responses import Response

from keel.decision_log.errors import LogUnavailable
from keel.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    KeelError,
    ModelLoadError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = [
    "ANSWERED",
    "JSON",
    "ErrorResponse",
    "described_statuses",
    "error_response",
    "fastapi_handler",
    "send_error",
    "send_json",
]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = "application/json"
_CONTENT_TYPE = (b"content-type", JSON.encode())
ANSWERED: tuple[type[KeelError], ...] = (
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidInput,
    RateLimited,
    ModelLoadError,
    LogUnavailable,
)
"""The errors an authenticated route may answer with (documented on every such route)."""


class ErrorResponse(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]


def error_response(exc: KeelError) -> ErrorResponse:
    """Status, Keel's JSON error body and the error's headers (WWW-Authenticate, Retry-After)."""
    return ErrorResponse(exc.status_code, orjson.dumps(exc.to_dict()), exc.headers)


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """One complete JSON response over ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                _CONTENT_TYPE,
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: KeelError) -> None:
    """Answer a request handled by Keel's own ASGI code (the gate, the decide handler) with `exc`."""
    status, body, headers = error_response(exc)
    await send_json(send, status, body, [(k.lower().encode(), v.encode()) for k, v in headers.items()])


async def fastapi_handler(request: Request, exc: Exception) -> Response:
    """The FastAPI app's handler for KeelError (registered with `add_exception_handler`)."""
    if not isinstance(exc, KeelError):  # registered for KeelError only; this keeps mypy honest
        raise exc
    status, body, headers = error_response(exc)
    return Response(body, status_code=status, headers=headers, media_type=JSON)


def described_statuses() -> dict[str, str]:
    """Each error status an authenticated route may answer, described by the classes that answer it."""
    described: dict[int, list[str]] = {}
    for cls in ANSWERED:
        texts = described.setdefault(cls.status_code, [])
        if cls.description not in texts:
            texts.append(cls.description)
    return {str(status): "; ".join(texts) for status, texts in sorted(described.items())}
