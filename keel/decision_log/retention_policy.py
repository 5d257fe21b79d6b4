"""Retention per model: keep N months live, then archived; delete archives after M years unless held.

Months are cut across models (one chain, one archive per month), so a month follows the longest
periods among the models that logged in it: it leaves the live log once every model in it has
had its `live_months`, and its archive is deleted once every model has had its `archive_years`.
`plan` says what is due; `apply` does it through keel.decision_log.retention (archived and
verified first, holds respected, each step a chained event carrying the policy it applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import fsspec
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.decision_log.archive_format import month_folders
from keel.decision_log.database import Database
from keel.decision_log.log_key import ChainKeys
from keel.decision_log.months import month_after, month_of
from keel.decision_log.retention import delete_archived, remove_months

__all__ = ["Due", "ModelRetention", "RetentionSettings", "apply", "plan"]


class ModelRetention(BaseModel):
    live_months: int | None = None
    """Months a decision stays in the live log after its month ends (None: the default)."""
    archive_years: int | None = None
    """Years its archive is kept after its month ends (None: the default)."""


class RetentionSettings(BaseSettings):
    """How long the decision log keeps records (KEEL_RETENTION_*)."""

    model_config = SettingsConfigDict(env_prefix="KEEL_RETENTION_")

    live_months: int = 6
    """Months a closed month stays live (EU AI Act Art. 19/26(6): logs kept at least six months)."""
    archive_years: int = 10
    """Years an archived month is kept before its deletion."""
    models: dict[str, ModelRetention] = {}
    """Per model overrides, as JSON: {"invoice_approval": {"live_months": 12, "archive_years": 7}}."""

    def of(self, model: str) -> tuple[int, int]:
        own = self.models.get(model, ModelRetention())
        return (
            own.live_months if own.live_months is not None else self.live_months,
            own.archive_years if own.archive_years is not None else self.archive_years,
        )


@dataclass
class Due:
    remove_through: str | None = None
    delete_through: str | None = None
    months: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per archived month: its models and the periods that govern it."""


def _add_months(month: str, n: int) -> str:
    for _ in range(n):
        month = month_after(month)
    return month


def plan(url: str, settings: RetentionSettings, today: date) -> Due:
    """The archived months due to leave the live log, and those whose archive is due for deletion
    (each a prefix: the oldest months first, the archive kept without gaps)."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    due, now = Due(), month_of(today)
    removing = deleting = True
    for month in month_folders(fs, root):
        with fs.open(f"{root}/{month}/decisions.parquet", "rb") as handle:
            models = sorted(
                str(m) for m in pc.unique(pq.read_table(handle, columns=["model"])["model"]).to_pylist()
            )
        periods = [settings.of(m) for m in models] or [(settings.live_months, settings.archive_years)]
        live, years = max(p[0] for p in periods), max(p[1] for p in periods)
        due.months[month] = {"models": models, "live_months": live, "archive_years": years}
        end = month_after(month)
        removing = removing and _add_months(end, live) <= now
        deleting = deleting and _add_months(end, 12 * years) <= now
        if removing:
            due.remove_through = month
        if deleting:
            due.delete_through = month
    return due


def apply(
    db: Database, keys: ChainKeys, url: str, settings: RetentionSettings, today: date, actor: str
) -> tuple[list[str], list[str]]:
    """Remove and delete what `plan` says is due; returns (months removed, archives deleted)."""
    due = plan(url, settings, today)
    policy = settings.model_dump(mode="json")
    removed = (
        remove_months(db, keys, url, due.remove_through, actor, "retention policy", policy, stop_at_hold=True)
        if due.remove_through
        else []
    )
    deleted = delete_archived(db, keys, url, due.delete_through, actor, policy) if due.delete_through else []
    return removed, deleted
