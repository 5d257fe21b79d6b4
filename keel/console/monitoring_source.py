"""Where the console reads monitoring runs from: the Overview's verdicts, trends and recommended
action, the Monitoring page's run listings, one run's stored summary and the trend charts.

`keel monitor` records every run in the decision log's database (keel.monitoring.runs reads
them), so every replica shows the same runs. `StoredRuns` is the source over that store; the
protocol keeps the pages apart from where runs live, and nothing here invents a verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from keel.decision_log.database import Database
from keel.monitoring import checks, runs
from keel.monitoring.checks import Unit
from keel.monitoring.report import recommendation_words as report_recommendation_words
from keel.monitoring.runs import MonitorRun, TrendPoint

__all__ = [
    "CheckVerdict",
    "ModelMonitoring",
    "MonitoringSource",
    "StoredRuns",
    "limits_words",
    "recommendation_words",
    "value_words",
]

TREND_RUNS = 10
"""Runs each check's marks on the Overview show (the latest last)."""


@dataclass(frozen=True)
class CheckVerdict:
    check: str
    title: str
    verdict: str
    """ok, warn, alert or no_data (the monitor's statuses)."""
    value: str
    limits: str
    detail: str
    remedy: str
    trend: tuple[str, ...] = ()
    """The statuses of the model's last runs, oldest first, ending with this one."""


@dataclass(frozen=True)
class ModelMonitoring:
    run_id: str
    run_at: str
    status: str
    recommended_action: str
    window_start: str | None
    window_end: str | None
    decisions: int | None
    runs_shown: int
    checks: tuple[CheckVerdict, ...] = ()

    @property
    def open_alerts(self) -> tuple[CheckVerdict, ...]:
        """Checks at warn or alert in the latest run, the most severe first."""
        rank = {"alert": 0, "warn": 1}
        return tuple(sorted((c for c in self.checks if c.verdict in rank), key=lambda c: rank[c.verdict]))


class MonitoringSource(Protocol):
    def overview(self) -> Mapping[str, ModelMonitoring]:
        """Each monitored model's latest run with its checks' recent trend."""
        ...

    def models(self) -> list[str]:
        """Every model with at least one recorded run."""
        ...

    def runs(self, model: str, limit: int) -> list[MonitorRun]:
        """The model's runs, newest first, at most `limit`."""
        ...

    def run(self, run_id: str) -> MonitorRun | None:
        """One run with its stored summary; None when there is no such run."""
        ...

    def trend(self, model: str, limit: int) -> list[TrendPoint]:
        """The model's last `limit` runs as chart points, oldest first."""
        ...


class StoredRuns:
    """The runs `keel monitor` records in the decision log's database, shared by every replica.

    Every call reads the database: the console calls it from its pages, which Starlette runs in
    its thread pool, never on the event loop."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def overview(self) -> dict[str, ModelMonitoring]:
        out = {}
        for m in runs.latest_checks(self.db, last=TREND_RUNS):
            latest = m.latest
            out[m.model] = ModelMonitoring(
                run_id=latest.run_id,
                run_at=latest.generated_at,
                status=latest.status,
                recommended_action=recommendation_words(latest.recommendation),
                window_start=latest.window_start,
                window_end=latest.window_end,
                decisions=latest.decisions,
                runs_shown=max((len(c.recent) for c in m.checks), default=1),
                checks=tuple(
                    CheckVerdict(
                        check=c.check,
                        title=c.title,
                        verdict=c.status,
                        value=value_words(c.unit, c.value),
                        limits=limits_words(c.unit, c.warn, c.alert),
                        detail=c.detail,
                        remedy=_remedy(c.check),
                        trend=tuple(p.status for p in c.recent),
                    )
                    for c in m.checks
                ),
            )
        return out

    def models(self) -> list[str]:
        return runs.models(self.db)

    def runs(self, model: str, limit: int) -> list[MonitorRun]:
        return runs.runs(self.db, model, limit)

    def run(self, run_id: str) -> MonitorRun | None:
        return runs.run(self.db, run_id)

    def trend(self, model: str, limit: int) -> list[TrendPoint]:
        return runs.trend(self.db, model, limit)


def _remedy(check: str) -> str:
    found = checks.get(check)
    return found.remedy if found else ""


def value_words(unit: Unit, value: float | None) -> str:
    """A check's value as a reviewer reads it (a share as a percentage, evidence against the bar)."""
    if value is None:
        return "no data"
    v = float(value)
    if unit == "share":
        return f"{v * 100:.1f}%"
    if unit == "ratio":
        return f"{v:.2f}×" if v else "none"
    if unit == "alpha_multiple":
        return f"{v:.2f}× certified"
    if unit == "evidence":
        return f"{v:.3g}× the evidence needed" if v >= 1 else f"{v:.0%} of the evidence needed"
    if unit == "count":
        return f"{int(v)} input(s)"
    return f"{v:.4g}"


def limits_words(unit: Unit, warn: float | None, alert: float | None) -> str:
    """The thresholds: warn / alert, or the one level when both are the same."""
    if warn is None and alert is None:
        return "—"
    if warn == alert:
        return f"alerts at {value_words(unit, alert)}"
    return f"warn {value_words(unit, warn)}, alert {value_words(unit, alert)}"


def recommendation_words(text: str) -> str:
    """The run's recommendation as a sentence: the report's wording, capitalised to stand alone."""
    words = report_recommendation_words(text)
    return words[:1].upper() + words[1:]
