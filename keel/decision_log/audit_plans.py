"""Audit plans: which decided cases Keel selects for audit, with what probability, by which pool.

A plan gives each cell of one segment field (e.g. `region`) an inclusion probability and the
share of selected cases sent to a reviewer pool outside the case's segment (`cross`). Plans are
appended to the `audit_plans` table and never changed: a model's current plan is its latest row
(its `version`), so the table is the plan's history. Each row is hash-linked like the alias
history (HMAC-SHA256 under the chain key of the previous hash and the row's content digest, its
head in `chain_heads` as `audit_plans`), so an edited or deleted plan shows.

Selection is a keyed draw: u = the first 64 bits of HMAC-SHA256(plan seed, "select\\n" +
decision_id) as a fraction of 2**64, selected when u < p; the pool is `cross` when a second draw
(tag "pool") falls below the plan's cross share. The decision_id is a server-made UUID4 and the
seed never leaves the log, so callers cannot predict or steer which of their cases are audited,
while anyone holding the log can recompute every selection.

A model without a plan gets a safe default (version 0): one small uniform probability and
cross share from AuditSettings, with a seed derived from the log's audit secret (one random
value the migration stores once in `audit_secret`), so every replica draws alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.decision_log.chain import AUDIT_PLAN_COLUMNS
from keel.decision_log.database import Database
from keel.decision_log.errors import DATABASE_ERRORS, LogUnavailable
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.rows import append_linked

__all__ = [
    "COLUMNS",
    "POOLS",
    "SECRET_TABLE",
    "TABLE",
    "AuditPlan",
    "AuditSettings",
    "PlanBook",
    "append_plan",
    "default_plan",
    "draw",
    "latest_plans",
    "log_secret",
    "plan_rows",
]

TABLE = "audit_plans"
SECRET_TABLE = "audit_secret"
POOLS = ("local", "cross")
ATTEMPTS = 5
COLUMNS = AUDIT_PLAN_COLUMNS
"""What a plan row's hash covers (`probabilities` as sorted JSON text; `detect_ratio` only when set,
so plans recorded before migration 0012 verify unchanged); `keel verify-log` walks it."""


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_AUDIT_", extra="ignore")

    default_probability: float = Field(default=0.05, ge=0.0, le=1.0)
    """Inclusion probability of every decided case of a model that has no audit plan yet."""
    cross_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of a default plan's audits sent to reviewers outside the case's segment."""
    refresh_seconds: float = Field(default=5.0, gt=0.0)
    """How often a running server reads the plans again (a new plan applies within this)."""


def draw(seed: str, tag: str, decision_id: str) -> float:
    """A uniform number in [0, 1) from HMAC-SHA256(seed, tag + newline + decision_id)."""
    digest = hmac.new(bytes.fromhex(seed), f"{tag}\n{decision_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class AuditPlan:
    model: str
    version: int
    """0: the default plan of a model that has none recorded."""
    field: str | None
    """The segment field whose values are the cells (None: one probability for every case)."""
    probabilities: dict[str, float]
    default_probability: float
    """For a case whose cell has no probability of its own (a new or missing value)."""
    cross_share: float
    seed: str = dataclasses.field(repr=False)
    """Hex; never returned to callers."""
    created_at: str = ""
    actor: str = ""
    reason: str = ""
    detect_ratio: float | None = None
    """The override-rate ratio the plan was designed to catch in any one cell (`keel audit plan
    --detect`): the monitor's sequential test is tuned to it. None: not recorded (older plans, the
    default plan, a plan file without a target)."""

    def probability(self, case: dict[str, Any]) -> float:
        if self.field is None:
            return self.default_probability
        value = case.get(self.field)
        return self.probabilities.get(str(value), self.default_probability)

    def select(self, decision_id: str, case: dict[str, Any]) -> dict[str, Any]:
        """The `audit` object of a decided case."""
        p = self.probability(case)
        selected = draw(self.seed, "select", decision_id) < p
        pool = (
            ("cross" if draw(self.seed, "pool", decision_id) < self.cross_share else "local")
            if selected
            else None
        )
        return {"selected": selected, "probability": p, "pool": pool, "plan": self.version}

    def public(self) -> dict[str, Any]:
        """The plan without its seed (what commands print and history lists)."""
        return {
            "model": self.model,
            "version": self.version,
            "field": self.field,
            "probabilities": dict(self.probabilities),
            "default_probability": self.default_probability,
            "cross_share": self.cross_share,
            "created_at": self.created_at,
            "actor": self.actor,
            "reason": self.reason,
            "detect_ratio": self.detect_ratio,
        }


def default_plan(model: str, secret: str, settings: AuditSettings) -> AuditPlan:
    seed = hmac.new(bytes.fromhex(secret), f"audit-default\n{model}".encode(), hashlib.sha256).hexdigest()
    return AuditPlan(model, 0, None, {}, settings.default_probability, settings.cross_share, seed)


def log_secret(db: Database) -> str:
    """The log's audit secret (stored once; made here if an ad hoc log lacks it)."""
    with db.reading() as reader:
        row = reader.one(f"SELECT secret FROM {SECRET_TABLE} WHERE id = 1")
    if row is not None:
        return str(row[0])
    conn = db.connect()
    try:
        with db.transaction(conn):
            found = conn.execute(f"SELECT secret FROM {SECRET_TABLE} WHERE id = 1").fetchone()
            if found is not None:
                return str(found[0])
            made = secrets.token_hex(32)
            now = datetime.now(UTC).isoformat()
            conn.execute(f"INSERT INTO {SECRET_TABLE} (id, secret, created_at) VALUES (1, ?, ?)", (made, now))
            return made
    finally:
        conn.close()


def _plan(row: dict[str, Any]) -> AuditPlan:
    return AuditPlan(
        model=row["model"],
        version=int(row["version"]),
        field=row["field"],
        probabilities={str(k): float(v) for k, v in json.loads(row["probabilities"]).items()},
        default_probability=float(row["default_probability"]),
        cross_share=float(row["cross_share"]),
        seed=row["seed"],
        created_at=row["created_at"],
        actor=row["actor"],
        reason=row["reason"],
        detect_ratio=None if row["detect_ratio"] is None else float(row["detect_ratio"]),
    )


def plan_rows(db: Database, model: str | None = None) -> list[dict[str, Any]]:
    """Every recorded plan (of one model, or all), oldest first, with `seq` and `row_hash`."""
    where, params = ("WHERE model = ?", (model,)) if model is not None else ("", ())
    sql = f"SELECT seq, {', '.join(COLUMNS)}, row_hash FROM {TABLE} {where} ORDER BY seq"
    with db.reading() as reader:
        rows = reader.all(sql, params)
    return [dict(zip(("seq", *COLUMNS, "row_hash"), r, strict=True)) for r in rows]


def latest_plans(db: Database) -> dict[str, AuditPlan]:
    """Each model's current plan (its latest row)."""
    sql = (
        f"SELECT seq, {', '.join(COLUMNS)}, row_hash FROM {TABLE} p WHERE seq = "
        f"(SELECT MAX(seq) FROM {TABLE} q WHERE q.model = p.model)"
    )
    with db.reading() as reader:
        rows = reader.all(sql)
    out = [_plan(dict(zip(("seq", *COLUMNS, "row_hash"), r, strict=True))) for r in rows]
    return {p.model: p for p in out}


def append_plan(
    db: Database,
    keys: ChainKeys,
    model: str,
    field_name: str | None,
    probabilities: dict[str, float],
    default_probability: float,
    cross_share: float,
    actor: str,
    reason: str,
    detect_ratio: float | None = None,
) -> AuditPlan:
    """Record a new plan for `model` (version: its previous one + 1) with a fresh random seed, and
    the override-rate ratio it was planned to detect (`detect_ratio`, above 1) when there is one."""
    if detect_ratio is not None and not 1.0 < float(detect_ratio) < float("inf"):
        raise ValueError(f"detect_ratio: {detect_ratio} is not an override-rate ratio above 1")
    for name, p in {
        **probabilities,
        "default_probability": default_probability,
        "cross_share": cross_share,
    }.items():
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name}: {p} is not a probability in [0, 1]")
    for attempt in range(ATTEMPTS):
        try:
            return _append(
                db, keys, model, field_name, probabilities, default_probability, cross_share, actor, reason,
                detect_ratio,
            )  # fmt: skip
        except DATABASE_ERRORS:
            # Another writer took the version or made the chain head first: read again and retry.
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _append(
    db: Database,
    keys: ChainKeys,
    model: str,
    field_name: str | None,
    probabilities: dict[str, float],
    default_probability: float,
    cross_share: float,
    actor: str,
    reason: str,
    detect_ratio: float | None,
) -> AuditPlan:
    key_id, key = keys.current, keys.current_key
    conn = db.connect()
    try:
        with db.transaction(conn, lock_heads=[TABLE]):
            last = conn.execute(f"SELECT MAX(version) FROM {TABLE} WHERE model = ?", (model,)).fetchone()
            plan = AuditPlan(
                model=model,
                version=int(last[0] or 0) + 1,
                field=field_name,
                probabilities={str(k): float(v) for k, v in probabilities.items()},
                default_probability=float(default_probability),
                cross_share=float(cross_share),
                seed=secrets.token_hex(32),
                created_at=datetime.now(UTC).isoformat(),
                actor=actor,
                reason=reason,
                detect_ratio=None if detect_ratio is None else float(detect_ratio),
            )
            values = tuple(
                json.dumps(plan.probabilities, sort_keys=True) if c == "probabilities" else getattr(plan, c)
                for c in COLUMNS
            )
            append_linked(conn, TABLE, values, key_id, key)
    finally:
        conn.close()
    return plan


class PlanBook:
    """The current plan of every model, read from the log by `refresh` (never on a request)."""

    def __init__(self, settings: AuditSettings | None = None) -> None:
        self.settings = settings or AuditSettings()
        self._secret: str | None = None
        self._plans: dict[str, AuditPlan] = {}
        self._defaults: dict[str, AuditPlan] = {}

    @property
    def loaded(self) -> bool:
        return self._secret is not None

    def refresh(self, db: Database) -> None:
        secret = self._secret or log_secret(db)
        plans = latest_plans(db)
        self._plans = plans  # one reference swap: readers see the old or the new set, whole
        self._secret = secret

    def plan(self, model: str) -> AuditPlan:
        found = self._plans.get(model)
        if found is not None:
            return found
        if self._secret is None:  # the log was away since the server started: nothing to sample by
            raise LogUnavailable("the audit plans have not been read from the decision log yet")
        default = self._defaults.get(model)
        if default is None:
            default = self._defaults[model] = default_plan(model, self._secret, self.settings)
        return default
