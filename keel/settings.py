"""Where Keel keeps its state. Reading settings has no side effects; `prepare_state` does."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StateSettings(BaseSettings):
    """State directory, decision log and MLflow locations."""

    model_config = SettingsConfigDict(env_prefix="KEEL_", extra="ignore")

    home: Path = Field(default=Path(".keel"))
    """State directory: MLflow store, decision log, reports and keys live here by default."""

    decision_log_url: str | None = None
    """Decision log database URL; SQLite inside `home` when unset, `postgresql://...` for PostgreSQL."""

    experiment: str = "keel"
    """MLflow experiment that training runs are logged to."""

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow's own MLFLOW_TRACKING_URI wins; otherwise a SQLite store inside the state directory."""
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Local artefact folder for a database-backed store; a tracking server decides its own."""
        if self.tracking_uri.startswith(("http://", "https://", "databricks")):
            return None
        return (self.home_dir / "mlartifacts").as_uri()

    @property
    def log_url(self) -> str:
        return self.decision_log_url or f"sqlite:///{self.home_dir / 'decisions.db'}"


def prepare_state(settings: StateSettings) -> StateSettings:
    """Create the state directory and point MLflow at the configured store (entry points only)."""
    import mlflow

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Against a tracking server MLflow writes "View run ... at: URL" to stdout when a run ends;
    # stdout is the command's own output (`keel monitor --json` prints one JSON line per model).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return settings


def local_secret(path: Path) -> str:
    """A random secret kept in `path` (mode 600), made by the first process that asks: for a
    machine of its own when no shared secret is configured (console sessions, event signing)."""
    try:
        # O_EXCL: two processes starting at once agree on the first one's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the maker may not have written it yet (bounded: 5 s)
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.1)
        raise RuntimeError(f"{path} stays empty: remove it and start again") from None
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
