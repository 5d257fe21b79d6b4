"""Event delivery settings (KEEL_EVENTS_*): the webhook sinks, the signing keys, the retry schedule."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel.errors import InvalidInput

__all__ = ["EventSettings"]

MIN_KEY_CHARS = 32


class EventSettings(BaseSettings):
    """Where the event outbox delivers, how it signs, and how it retries."""

    model_config = SettingsConfigDict(env_prefix="KEEL_EVENTS_", extra="ignore")

    sinks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Webhook URLs every event is POSTed to (CloudEvents HTTP binary mode); JSON list or comma-separated."""

    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """JSON object {key id: secret}; the last one listed signs, receivers accept any they hold."""

    timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds one delivery attempt to one sink may take."""

    backoff_base: Annotated[float, Field(gt=0)] = 2.0
    """Seconds before the first retry; each further retry doubles it (with jitter)."""

    backoff_max: Annotated[float, Field(gt=0)] = 600.0
    """Longest wait between two attempts, in seconds."""

    max_attempts: Annotated[int, Field(ge=1)] = 40
    """Attempts before an event is marked failed (`keel events retry` makes it pending again)."""

    batch: Annotated[int, Field(ge=1)] = 50
    """Events claimed at once by one dispatcher."""

    lease_seconds: Annotated[float, Field(gt=0)] = 120.0
    """How long a claim holds its events; a dispatcher that died leaves them to others after it."""

    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    """How often the dispatcher in `keel serve` looks for due events."""

    dispatch_in_serve: bool = True
    """Whether `keel serve` runs a dispatcher thread (off: only `keel events deliver` delivers)."""

    @field_validator("sinks", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            import json

            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [u.strip() for u in text.split(",") if u.strip()]
            )
        return value

    @field_validator("sinks")
    @classmethod
    def _http(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"an event sink must be an http(s) URL, not {url!r}")
        return value

    @field_validator("signing_keys")
    @classmethod
    def _long_enough(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id, secret in value.items():
            if not key_id or any(c in key_id for c in ",= "):
                raise ValueError(f"a signing key id must be non-empty without ',', '=' or spaces: {key_id!r}")
            if len(secret.get_secret_value()) < MIN_KEY_CHARS:
                raise ValueError(f"signing key {key_id!r} is shorter than {MIN_KEY_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _signed(self) -> EventSettings:
        if self.sinks and not self.signing_keys:
            raise ValueError(
                "KEEL_EVENTS_SINKS is set but KEEL_EVENTS_SIGNING_KEYS is not: events are always signed"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    @classmethod
    def load(cls) -> EventSettings:
        """The settings from the environment; a bad value is one InvalidInput line, not a traceback."""
        try:
            return cls()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "KEEL_EVENTS_*"
            raise InvalidInput(f"event settings ({where}): {first['msg']}") from None
