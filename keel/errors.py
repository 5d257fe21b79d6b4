"""One error hierarchy; each error carries the HTTP status a caller should see."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message}


class InvalidInput(KeelError):
    """Input broke the contract; lists every field-level problem found."""

    status_code = 422

    def __init__(self, message: str, errors: list[FieldError] | None = None, error_count: int = 0) -> None:
        super().__init__(message)
        self.errors = errors or []
        self.error_count = max(error_count, len(self.errors))
        """All problems found; `errors` may list only the first of them."""

    def to_dict(self) -> dict[str, Any]:
        errors = [e.to_dict() for e in self.errors]
        return {**super().to_dict(), "error_count": self.error_count, "errors": errors}


class PayloadTooLarge(KeelError):
    status_code = 413


class UnsupportedMediaType(KeelError):
    status_code = 415


class Unauthorized(KeelError):
    status_code = 401


class Forbidden(KeelError):
    status_code = 403


class NotFound(KeelError):
    status_code = 404


class Conflict(KeelError):
    status_code = 409


class ModelLoadError(KeelError):
    """A model version could not be loaded; the service keeps what it had."""

    status_code = 503


class IntegrityError(ModelLoadError):
    """An artefact's sha256 differs from the one recorded at registration."""


class RegistryError(KeelError):
    """The MLflow registry does not hold what was asked for."""

    status_code = 404
