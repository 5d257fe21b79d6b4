"""Decision-service settings (KEEL_SERVE_*)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Limits, explanation depth, threads and reload behaviour of `keel serve`."""

    model_config = SettingsConfigDict(env_prefix="KEEL_SERVE_", extra="ignore")

    host: str = "127.0.0.1"
    """Interface to bind."""

    port: int = 3000
    """TCP port to listen on."""

    alias: str = "champion"
    """Registry alias each model is served under."""

    max_cases: int = 1000
    """Most cases in one decide request (the request schema's maxItems); more gets 422 with a
    field error on `cases`."""

    max_body_bytes: int = 2 * 1024 * 1024
    """Largest request body accepted; larger gets 413."""

    top_k: int = 5
    """SHAP contributions returned per decision (all are logged)."""

    threads: int = 8
    """Worker threads for request handling."""

    reload_poll_seconds: float = 10.0
    """Re-read registry aliases this often, so alias moves reach running replicas by themselves
    (one registry listing per cycle; unchanged versions are not reloaded). 0: only on
    POST /v1/admin/reload."""

    shadow_queue_cases: int = 10_000
    """Most live cases waiting for the shadow version; past it they are dropped (and counted in
    keel_shadow_dropped), never waited for."""

    key_cache_seconds: float = 2.0
    """How long the service trusts its in-memory copy of the API keys (revocation delay)."""

    log_requests: bool = False
    """Log one INFO line per request (method, route, status, ms, caller); off by default."""
