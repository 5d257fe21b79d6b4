"""Event delivery settings (KEEL_EVENTS_*, and KEEL_MONITOR_WEBHOOK_URL): the webhook sinks, the
signing keys, the retry schedule, how long settled events are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel.errors import InvalidInput
from keel.events.sinks import Sink, configured_sinks
from keel.settings import local_secret

__all__ = ["EventSettings"]

MIN_KEY_CHARS = 32
LOCAL_KEY_FILE = "events-signing-key"
"""In KEEL_HOME: signs the monitor webhook's events when no KEEL_EVENTS_SIGNING_KEYS are set."""
LOCAL_KEY_ID = "local"


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"an event sink must be an http(s) URL, not {url!r}")
    return url


class EventSettings(BaseSettings):
    """Where the event outbox delivers, how it signs, and how it retries."""

    model_config = SettingsConfigDict(env_prefix="KEEL_EVENTS_", extra="ignore", populate_by_name=True)

    sinks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Webhook URLs every event is POSTed to (CloudEvents HTTP binary mode); JSON list or comma-separated."""

    monitor_webhook_url: str | None = Field(default=None, validation_alias="KEEL_MONITOR_WEBHOOK_URL")
    """One more sink, for monitor verdicts and canary rollbacks only (keel.events.sinks)."""

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

    keep_delivered_days: Annotated[float, Field(gt=0)] = 30.0
    """Days a delivered event stays in the outbox before the dispatcher or `keel events purge` deletes it."""

    keep_failed_days: Annotated[float, Field(gt=0)] = 90.0
    """Days an event given up on (failed) stays, for `keel events retry`, before it is purged."""

    purge_every_seconds: Annotated[float, Field(gt=0)] = 3600.0
    """How often the dispatcher in `keel serve` purges settled events past their keep."""

    purge_batch: Annotated[int, Field(ge=1)] = 1000
    """Rows deleted per purge transaction, so a large backlog never holds the log's lock for long."""

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
        return [_http_url(url) for url in value]

    @field_validator("monitor_webhook_url")
    @classmethod
    def _http_one(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        return _http_url(value) if value else None

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
        # KEEL_MONITOR_WEBHOOK_URL alone worked before signing existed: `load` gives it a key of
        # KEEL_HOME's own instead. Sinks configured for events must say how they are signed.
        if self.sinks and not self.signing_keys:
            raise ValueError(
                "KEEL_EVENTS_SINKS is set but KEEL_EVENTS_SIGNING_KEYS is not: events are always signed"
            )
        return self

    _own_key: bool = PrivateAttr(default=False)  # not a field: no KEEL_EVENTS_* variable may set it

    @property
    def own_key(self) -> bool:
        """Set by `load`: the signing key is KEEL_HOME's own (events-signing-key), not a shared one."""
        return self._own_key

    @property
    def targets(self) -> tuple[Sink, ...]:
        """Every sink, with the event types each receives."""
        return configured_sinks(self.sinks, self.monitor_webhook_url)

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    @classmethod
    def load(cls, home: Path | None = None) -> EventSettings:
        """The settings from the environment; a bad value is one InvalidInput line, not a traceback.

        With only KEEL_MONITOR_WEBHOOK_URL set and no signing keys, its events are signed with a
        key made once in `home` (KEEL_HOME/events-signing-key, id "local"), so the setting keeps
        working as it did; a receiver that wants to verify them reads that file or gets a shared
        KEEL_EVENTS_SIGNING_KEYS. Without `home` that case is refused like any unsigned sink."""
        try:
            settings = cls()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "KEEL_EVENTS_*"
            raise InvalidInput(f"event settings ({where}): {first['msg']}") from None
        if settings.targets and not settings.signing_keys:
            if home is None:
                why = "KEEL_MONITOR_WEBHOOK_URL is set but KEEL_EVENTS_SIGNING_KEYS is not"
                raise InvalidInput(f"{why}: events are always signed")
            secret = SecretStr(local_secret(home / LOCAL_KEY_FILE))
            settings = settings.model_copy(update={"signing_keys": {LOCAL_KEY_ID: secret}})
            settings._own_key = True
        return settings
