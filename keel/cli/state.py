"""Which state a command uses, whether it is there, and what it holds (for `keel status`).

Commands that only read state must not create it: opening a SQLite file that is not there makes
an empty one, so existence is checked on the paths before anything connects.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from keel.errors import StateMissing
from keel.settings import StateSettings, prepare_state

__all__ = ["Locations", "announce", "locations", "log_counts", "log_file_size", "require"]


@dataclass(frozen=True)
class Locations:
    """Where the state of one settings object lives, as a person would read it."""

    home: Path
    tracking_uri: str
    log_url: str

    def line(self) -> str:
        from keel.decision_log.database import redact

        return (
            f"KEEL_HOME {self.home} · MLflow store {redact(self.tracking_uri)} · "
            f"decision log {redact(self.log_url)}"
        )


def locations(settings: StateSettings) -> Locations:
    return Locations(settings.home_dir, settings.tracking_uri, settings.log_url)


def _sqlite_file(url: str) -> Path | None:
    """The file behind a sqlite:/// URL, None for any other kind of store."""
    if not url.startswith("sqlite:///"):
        return None
    # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy and MLflow read them.
    return Path(url[len("sqlite:///") :].split("?", 1)[0])


def _local_store_missing(uri: str) -> str | None:
    """Why a local MLflow store is not there, or None (remote stores are asked by MLflow itself)."""
    path = _sqlite_file(uri)
    if path is not None:
        return None if path.is_file() else f"no MLflow store at {path}"
    if uri.startswith("file:") or "://" not in uri:
        local = Path(urlparse(uri).path if uri.startswith("file:") else uri)
        return None if local.is_dir() else f"no MLflow store at {local}"
    return None


def require(settings: StateSettings, registry: bool = False, log: bool = False) -> StateSettings:
    """Point MLflow at the store and return the settings, or raise StateMissing in one line.

    Nothing is created: a read-only command run outside a checkout says what is missing instead
    of starting an empty store.
    """
    where = locations(settings)
    missing = []
    if registry and (problem := _local_store_missing(where.tracking_uri)):
        missing.append(f"{problem}; run `keel train all` first or set MLFLOW_TRACKING_URI")
    log_file = _sqlite_file(where.log_url)
    if log and log_file is not None and not log_file.is_file():
        missing.append(
            f"no decision log at {log_file}; `keel serve` creates it, or set KEEL_DECISION_LOG_URL"
        )
    if missing and not where.home.is_dir():
        raise StateMissing(
            f"no Keel state directory at {where.home}; run keel where you ran `keel train`, or set KEEL_HOME"
        )
    if missing:
        raise StateMissing(missing[0])
    # Only commands that read the registry point MLflow at it (keys and the log do not need it).
    return prepare_state(settings) if registry else settings


def announce(settings: StateSettings) -> None:
    """Say on stderr which state this command reads, so stdout stays machine-readable."""
    print(f"keel: using {locations(settings).line()}", file=sys.stderr)


def log_counts(settings: StateSettings) -> dict[str, int] | None:
    """Decisions per model in the decision log, or None where there is no log yet."""
    from keel.decision_log.database import Database
    from keel.decision_log.reads import decisions_per_model

    log_file = _sqlite_file(settings.log_url)
    if log_file is not None and not log_file.is_file():
        return None
    return decisions_per_model(Database(settings.log_url))


def log_file_size(settings: StateSettings) -> int | None:
    """Bytes of a SQLite decision log (with its write-ahead log), None for a database server."""
    log_file = _sqlite_file(settings.log_url)
    if log_file is None or not log_file.is_file():
        return None
    wal = log_file.with_name(log_file.name + "-wal")
    return log_file.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
