"""The alias history: every move of a model's aliases, who made it, why, and the gate results.

One append-only table, `alias_history`, in the decision-log database (KEEL_DECISION_LOG_URL),
written only here (SQLAlchemy Core, so SQLite and PostgreSQL alike). Rows form one hash chain:
each row's hash covers its content and the previous row's hash, and `prev_hash` is UNIQUE, so
two concurrent writers cannot fork the chain (the loser retries on the new head). Each row is
mirrored as a tag on the MLflow registered model, so the registry alone also tells the story.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from keel.errors import KeelError

__all__ = ["GENESIS", "History", "HistoryCheck", "HistoryEntry", "history_json", "shared_history"]

GENESIS = "0" * 64
TAG_PREFIX = "keel.history."
MAX_TAG_CHARS = 4000  # MLflow's tag values are capped (5,000 characters on SQL stores)

_metadata = sa.MetaData()
alias_history = sa.Table(
    "alias_history",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("from_version", sa.Text),
    sa.Column("to_version", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Column("gates", sa.Text, nullable=False, default="[]"),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False, unique=True),
    sa.Column("row_hash", sa.Text, nullable=False),
    sa.Index("alias_history_model", "model", "seq"),
)


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


def _digest(prev_hash: str, content: dict[str, Any]) -> str:
    body = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def engine_url(url: str) -> str:
    """The decision-log URL for SQLAlchemy: `postgresql://` means psycopg 3 here."""
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url


@dataclass(frozen=True)
class HistoryCheck:
    ok: bool
    rows_checked: int
    bad_seq: int | None = None
    problem: str = ""


class History:
    def __init__(self, url: str, registry: MlflowClient | None = None) -> None:
        self.engine = sa.create_engine(engine_url(url), future=True)
        self.registry = registry
        self._created = False

    def _create(self) -> None:
        # Once per process; concurrent CREATE TABLEs in other processes lose the race harmlessly.
        if self._created:
            return
        try:
            _metadata.create_all(self.engine, checkfirst=True)
        except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
            _metadata.create_all(self.engine, checkfirst=True)  # the other creator has finished
        self._created = True

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        self._create()
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Appends take turns (the lock ends with the transaction); the UNIQUE prev_hash
                # still refuses a fork if anything else writes the table.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('keel.alias_history'))"))
            yield conn

    def append(self, entry: HistoryEntry, attempts: int = 8) -> HistoryEntry:
        """Append at the chain's head (bounded retries if another writer got there first)."""
        entry = HistoryEntry(**{**asdict(entry), "created_at": entry.created_at or _now()})
        for attempt in range(attempts):
            try:
                with self._begin() as conn:
                    head = conn.execute(
                        sa.select(alias_history.c.row_hash).order_by(alias_history.c.seq.desc()).limit(1)
                    ).scalar()
                    prev = head or GENESIS
                    content = entry.content()
                    row_hash = _digest(prev, content)
                    inserted = conn.execute(
                        alias_history.insert().values(
                            **{**content, "gates": json.dumps(content["gates"], default=str)},
                            prev_hash=prev,
                            row_hash=row_hash,
                        )
                    ).inserted_primary_key
                    assert inserted is not None
                    seq = inserted[0]
                saved = HistoryEntry(**{**asdict(entry), "seq": int(seq), "row_hash": row_hash})
                self._mirror(saved)
                return saved
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                # Another writer took the head (unique prev_hash) or held SQLite's write lock.
                time.sleep(0.05 * (attempt + 1))
        raise KeelError(f"{entry.model}: could not append to the alias history after {attempts} attempts")

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
        query = sa.select(alias_history).order_by(alias_history.c.seq)
        if model is not None:
            query = query.where(alias_history.c.model == model)
        with self._begin() as conn:
            rows = conn.execute(query).mappings().all()
        return [_entry(r) for r in rows]

    def verify(self) -> HistoryCheck:
        """Recompute the chain; the first row whose link or content hash is wrong is named."""
        prev, n = GENESIS, 0
        for entry, stored_prev in self._chain():
            n += 1
            if stored_prev != prev:
                return HistoryCheck(False, n, entry.seq, "prev_hash does not match the previous row")
            if _digest(prev, entry.content()) != entry.row_hash:
                return HistoryCheck(False, n, entry.seq, "row content does not match its hash")
            prev = entry.row_hash
        return HistoryCheck(True, n)

    def _chain(self) -> Iterator[tuple[HistoryEntry, str]]:
        with self._begin() as conn:
            rows = conn.execute(sa.select(alias_history).order_by(alias_history.c.seq)).mappings().all()
        for r in rows:
            yield _entry(r), str(r["prev_hash"])


def _entry(r: Any) -> HistoryEntry:
    return HistoryEntry(
        model=r["model"],
        alias=r["alias"],
        action=r["action"],
        from_version=r["from_version"],
        to_version=r["to_version"],
        actor=r["actor"],
        reason=r["reason"],
        forced=bool(r["forced"]),
        gates=tuple(json.loads(r["gates"])),
        created_at=r["created_at"],
        seq=int(r["seq"]),
        row_hash=r["row_hash"],
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


@functools.cache
def shared_history(url: str) -> History:
    """One History (one connection pool) per database URL for a long-running process."""
    return History(url, MlflowClient())


def history_json(history: History, model: str) -> dict[str, Any]:
    """The body of GET /v1/models/{model}/history: every alias move of the model, oldest first."""
    check = history.verify()
    return {
        "model": model,
        "chain_intact": check.ok,
        "moves": [e.to_dict() for e in history.entries(model)],
    }
