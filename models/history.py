"""The alias history: every move of a model's aliases, who made it, why, and the gate results.

The rows are one hash chain of the decision log (keel.decision_log.alias_history owns the table
and its SQL): keyed with the log's chain key, covered by `keel verify-log` and its signed
checkpoints. Each row is mirrored as a tag on the MLflow registered model, so the registry alone
also tells the story.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.decision_log import alias_history, audit_plans
from keel.decision_log.database import Database
from keel.decision_log.errors import DATABASE_ERRORS
from keel.decision_log.log_key import load_keys
from keel.decision_log.outbox import OutboxEvent
from keel.decision_log.settings import LogSettings
from keel.decision_log.verify import verify
from keel.errors import KeelError
from keel.events.catalog import alias_moved
from keel.settings import StateSettings

__all__ = ["History", "HistoryCheck", "HistoryEntry", "history_for", "history_json", "shared_history"]

TAG_PREFIX = "keel.history."
MAX_TAG_CHARS = 4000  # MLflow's tag values are capped (5,000 characters on SQL stores)


@dataclass(frozen=True)
class HistoryEntry:
    model: str
    alias: str
    action: str
    """register, promote, request, approve, rollback."""
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str = ""
    forced: bool = False
    gates: tuple[dict[str, Any], ...] = ()
    created_at: str = ""
    seq: int | None = None
    row_hash: str = ""

    def content(self) -> dict[str, Any]:
        """What the hash covers: everything but the sequence number and the hash itself."""
        out = asdict(self)
        out.pop("seq")
        out.pop("row_hash")
        out["gates"] = list(self.gates)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.content(), "seq": self.seq, "hash": self.row_hash}


@dataclass(frozen=True)
class HistoryCheck:
    ok: bool
    rows_checked: int
    bad_seq: int | None = None
    problem: str = ""


class History:
    def __init__(self, url: str, registry: MlflowClient | None = None) -> None:
        self.db = Database(url)
        self.keys = load_keys(LogSettings().key_file)
        self.registry = registry
        self._created = False
        self._lock = threading.Lock()

    @property
    def engine(self) -> Any:
        return self.db.engine

    def _ready(self) -> Database:
        with self._lock:  # once per process: the log's migrations (alias_history among them)
            if not self._created:
                self.db.create_schema()
                self._created = True
        return self.db

    def append(
        self, entry: HistoryEntry, attempts: int = 5, also: Sequence[OutboxEvent] = ()
    ) -> HistoryEntry:
        """Append at the chain's head (appends take turns on the head; bounded retries), with its
        event (keel.events.catalog.alias_moved) and those `also` given in the event outbox, in the
        same transaction."""
        entry = HistoryEntry(**{**asdict(entry), "created_at": entry.created_at or _now()})
        content = entry.content()

        def events(seq: int, row_hash: str) -> list[OutboxEvent]:
            return [alias_moved(content, seq, row_hash), *also]

        for attempt in range(attempts):
            try:
                seq, row_hash = alias_history.append_move(self._ready(), self.keys, content, events)
                break
            except DATABASE_ERRORS:
                if attempt == attempts - 1:
                    raise KeelError(
                        f"{entry.model}: could not append to the alias history after {attempts} attempts"
                    ) from None
                time.sleep(0.05 * (attempt + 1))
        saved = HistoryEntry(**{**asdict(entry), "seq": seq, "row_hash": row_hash})
        self._mirror(saved)
        return saved

    def _mirror(self, entry: HistoryEntry) -> None:
        """Copy the row to a registered-model tag; the table stays the record if this fails."""
        if self.registry is None:
            return
        summary = {**entry.to_dict(), "gates": [(g["criterion"], g["passed"]) for g in entry.gates]}
        value = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)[:MAX_TAG_CHARS]
        try:
            self.registry.set_registered_model_tag(entry.model, f"{TAG_PREFIX}{entry.seq:08d}", value)
            self.registry.set_registered_model_tag(entry.model, f"{TAG_PREFIX}head", entry.row_hash)
        except MlflowException as exc:
            raise KeelError(
                f"{entry.model}: alias history row {entry.seq} not mirrored to MLflow: {exc}"
            ) from exc

    def entries(self, model: str | None = None) -> list[HistoryEntry]:
        return [_entry(r) for r in alias_history.moves(self._ready(), model)]

    def audit_plans(self, model: str) -> list[dict[str, Any]]:
        """Every audit plan recorded for the model, oldest first (without seeds)."""
        out = []
        for r in audit_plans.plan_rows(self._ready(), model):
            row = {k: v for k, v in r.items() if k not in ("seed", "row_hash")}
            row["probabilities"] = json.loads(row["probabilities"])
            out.append({**row, "hash": r["row_hash"]})
        return out

    def verify(self) -> HistoryCheck:
        """Recompute the alias chain; the first row whose link or content hash is wrong is named."""
        result = verify(self._ready(), self.keys, tables=(alias_history.TABLE,))
        return HistoryCheck(result.ok, result.rows_checked, result.bad_seq, result.problem or "")


def _entry(r: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        **{k: r[k] for k in alias_history.ALIAS_COLUMNS if k != "gates"},
        gates=tuple(r["gates"]),
        seq=int(r["seq"]),
        row_hash=str(r["row_hash"]),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


@functools.cache
def shared_history(url: str) -> History:
    """One History (one connection pool) per database URL for a long-running process."""
    return History(url, MlflowClient())


def history_json(history: History, model: str) -> dict[str, Any]:
    """The body of GET /v1/models/{model}/history: every alias move of the model, oldest first,
    and every audit plan recorded for it (`audit_plans`, oldest first)."""
    check = history.verify()
    return {
        "model": model,
        "chain_intact": check.ok,
        "moves": [e.to_dict() for e in history.entries(model)],
        # Beside the moves, in their own list: alias moves keep their shape.
        "audit_plans": history.audit_plans(model),
    }


def history_for(state: StateSettings) -> History:
    """The alias history in the state's decision log, mirrored to the registry's tags."""
    from keel.models.registry import client

    return History(state.log_url, client())
