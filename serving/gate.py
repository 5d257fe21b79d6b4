"""ASGI middleware in front of every route: size limit, content type, API keys, request logs.

BentoML has no auth, body limit or content-type check of its own, and answers pydantic
validation errors with a bare 400; this gate supplies the first three and turns the 400
into Keel's 422 with field-level errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from keel.serving.keys import KeyStore
from keel.serving.metrics import Metrics

from keel.errors import FieldError, InvalidInput, KeelError, PayloadTooLarge, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/openapi.json", "/"})
ROUTES: list[tuple[str, re.Pattern[str], str | None]] = [
    ("POST", re.compile(r"^/v1/(invoice_classification|discount_band|routing)/decide$"), "decide"),
    ("POST", re.compile(r"^/v1/feedback$"), "feedback"),
    ("GET", re.compile(r"^/v1/decisions/[^/]+$"), "read"),
    ("GET", re.compile(r"^/v1/models$"), None),
    ("GET", re.compile(r"^/v1/models/(invoice_classification|discount_band|routing)/history$"), "read"),
    ("POST", re.compile(r"^/v1/admin/reload$"), "admin"),
]
log = logging.getLogger("keel.http")


def route_template(path: str) -> str:
    """Bounded label for metrics and logs: never the raw path (it may carry ids)."""
    if path in OPEN_PATHS:
        return path
    if path.startswith("/v1/decisions/"):
        return "/v1/decisions/{decision_id}"
    if any(p.match(path) for _, p, _ in ROUTES):
        return path
    return "other"


def required_role(method: str, path: str) -> str | None:
    for m, pattern, role in ROUTES:
        if m == method and pattern.match(path):
            return role
    return None


async def send_json(send: Send, status: int, payload: dict[str, Any], headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_payload(exc: KeelError) -> dict[str, Any]:
    return exc.to_dict()


class Gate:
    def __init__(
        self,
        app: App,
        keys: Callable[[], KeyStore | None],
        metrics: Callable[[], Metrics | None],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, tracked)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope["path"])
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(scope["method"], route, str(status["code"])).observe(elapsed)
            caller = scope.get("state", {}).get("caller", "-")
            log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "route": route,
                        "status": status["code"],
                        "ms": round(elapsed * 1000, 2),
                        "caller": caller,
                    }
                )
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in OPEN_PATHS or path.startswith("/static_content"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            keys = self.keys()
            if keys is None:
                raise KeelError("service is starting")
            key = keys.authenticate(headers.get("authorization"))
            role = required_role(method, path)
            if role is not None:
                keys.authorize(key, role)
            scope.setdefault("state", {})["caller"] = key.name
            if method == "POST" and role in ("decide", "feedback"):
                ctype = headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    raise UnsupportedMediaType("send the request body as application/json")
                receive = await self._bounded(headers, receive)
        except KeelError as exc:
            extra = [(b"www-authenticate", b"Bearer")] if exc.status_code == 401 else []
            await send_json(send, exc.status_code, error_payload(exc), extra)
            return
        await self.app(scope, receive, _rewrite_validation_errors(send))

    async def _bounded(self, headers: dict[str, str], receive: Receive) -> Receive:
        """Read the body up to the limit (413 past it) and replay it to the app."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def _rewrite_validation_errors(send: Send) -> Send:
    """BentoML answers pydantic errors with 400 {"error", "detail": [...]}: make them Keel 422s."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 400:
            held["start"] = message
            return
        if "start" not in held:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, list):
            await send(held["start"])
            await send({"type": "http.response.body", "body": body})
            return
        errors = [_field_error(d) for d in detail if isinstance(d, dict)]
        await send_json(
            send, 422, InvalidInput("the request body does not match the schema", errors).to_dict()
        )

    return wrapped


def _field_error(detail: dict[str, Any]) -> FieldError:
    loc = [str(x) for x in detail.get("loc", [])]
    if len(loc) >= 2 and loc[0] == "cases" and loc[1].isdigit():
        return FieldError(int(loc[1]), ".".join(loc[2:]) or "", str(detail.get("msg", "invalid")))
    return FieldError(-1, ".".join(loc) or "body", str(detail.get("msg", "invalid")))
