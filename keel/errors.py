"""One error hierarchy; each error carries the HTTP status, headers and description a caller
sees (serving/error_response.py turns any of them into the response; the OpenAPI document
describes each status from the classes) and the exit code the `keel` command line ends with."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "ExitCode",
    "FieldError",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "KeelError",
    "ModelLoadError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RegistryError",
    "StateMissing",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "UnsupportedMediaType",
    "UnsupportedTrees",
    "first_problem",
]


class ExitCode(IntEnum):
    """Exit status of every `keel` command (`keel monitor` follows the monitoring-plugin
    convention instead: 0 ok, 1 warning, 2 critical, 3 could not run)."""

    OK = 0
    FAILED = 1
    """The command ran and found a problem: a broken log chain, a failed gate, errors while simulating."""
    USAGE = 2
    """Wrong arguments or input: unknown model, missing file, bad data, no API key (argparse uses 2 too)."""
    NO_STATE = 3
    """The state it needs is not there or cannot be reached: no KEEL_HOME, store, decision log or service."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of one case (row is the 0-based case index)."""

    row: int
    field: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class KeelError(Exception):
    """Base of every error Keel raises on purpose."""

    status_code: ClassVar[int] = 500
    exit_code: ClassVar[int] = ExitCode.FAILED
    description: ClassVar[str] = "Internal error"
    """What the status means to an API caller (the OpenAPI document's response description);
    a subclass without one of its own takes its docstring's first line."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "description" not in cls.__dict__ and cls.__doc__:
            cls.description = cls.__doc__.strip().splitlines()[0].rstrip(".")

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error carries besides its JSON body."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message}


class InvalidInput(KeelError):
    """Input broke the contract; lists every field-level problem found."""

    status_code = 422
    exit_code = ExitCode.USAGE
    description = (
        "Field-level validation errors (the first 100; error_count has them all), among them more "
        "cases than one request may hold (the schema's maxItems), reported on `cases`"
    )

    def __init__(self, message: str, errors: list[FieldError] | None = None, error_count: int = 0) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.error_count = max(error_count, len(self.errors))
        """All problems found; `errors` may list only the first of them."""

    def to_dict(self) -> dict[str, Any]:
        errors = [e.to_dict() for e in self.errors]
        return {**super().to_dict(), "error_count": self.error_count, "errors": errors}


class PayloadTooLarge(KeelError):
    """The request body is over the size limit (KEEL_SERVE_MAX_BODY_BYTES)."""

    status_code = 413


class UnsupportedMediaType(KeelError):
    """The body is not application/json."""

    status_code = 415


class Unauthorized(KeelError):
    """Missing or unknown API key."""

    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(KeelError):
    """The key lacks the route's role."""

    status_code = 403


class NotFound(KeelError):
    """Unknown route, model or decision."""

    status_code = 404


class Conflict(KeelError):
    """Idempotency-Key reused with a different body."""

    status_code = 409


class RateLimited(KeelError):
    """The key is over its requests per second; wait Retry-After seconds."""

    status_code = 429

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"key {name!r} is over its request rate; retry after {retry_after:.2f}s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class Unavailable(KeelError):
    """A resource the service needs is away for now; retry after Retry-After seconds."""

    status_code = 503

    def __init__(self, message: str, retry_after: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class ModelLoadError(KeelError):
    """A model version could not be loaded; the service keeps what it had."""

    status_code = 503
    description = "Models not loaded yet"


class IntegrityError(ModelLoadError):
    """An artefact's sha256 differs from the one recorded at registration."""


class UnsupportedTrees(ModelLoadError):
    """A booster holds trees the compiled explainer does not read (linear trees, say); the model
    keeps LightGBM's own TreeSHAP for it instead of failing to load."""


class RegistryError(KeelError):
    """The MLflow registry does not hold what was asked for."""

    status_code = 404


class StateMissing(KeelError):
    """The state a command reads (state directory, MLflow store, decision log) is not there."""

    status_code = 503
    exit_code = ExitCode.NO_STATE


class Unreachable(KeelError):
    """A service the command talks to did not answer."""

    status_code = 503
    exit_code = ExitCode.NO_STATE


def first_problem(exc: InvalidInput, header_lines: int = 0) -> str:
    """One line for a terminal: the first field-level problem and how many more there are.

    Rows are counted from 1 as a person reads them; with `header_lines` (a CSV file) the file's
    line number is given too.
    """
    if not exc.errors:
        return exc.message
    whole = [e for e in exc.errors if e.row < 0]
    if len(whole) == len(exc.errors) <= 5:
        # Problems with the file's columns (or the request as a whole) are few: name them all.
        return f"{exc.message}: " + "; ".join(f"{e.field or 'case'}: {e.problem}" for e in whole)
    first = exc.errors[0]
    place = ""
    if first.row >= 0:
        line = f" (line {first.row + 1 + header_lines})" if header_lines else ""
        place = f"row {first.row + 1}{line}, "
    more = len(exc.errors) - 1
    tail = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
    return f"{exc.message}: {place}{first.field or 'case'}: {first.problem}{tail}"
