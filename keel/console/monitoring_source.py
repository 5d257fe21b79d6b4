"""Where the Overview reads check verdicts, trends and the recommended action from.

The monitoring runs move into the decision log's database (issue 24, item 1); until that read
API exists no source is given and the Overview says that no monitoring runs are recorded yet.
A real source implements this protocol over the shared run store; nothing invents verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["CheckVerdict", "ModelMonitoring", "MonitoringSource"]


@dataclass(frozen=True)
class CheckVerdict:
    check: str
    verdict: str
    """ok, warning or critical (the monitoring-plugin convention)."""
    value: str
    trend: tuple[str, ...] = ()
    """The verdicts of the last runs, oldest first."""


@dataclass(frozen=True)
class ModelMonitoring:
    run_at: str
    recommended_action: str
    checks: tuple[CheckVerdict, ...] = ()
    open_alerts: tuple[str, ...] = field(default_factory=tuple)


class MonitoringSource(Protocol):
    def latest(self, model: str) -> ModelMonitoring | None:
        """The model's latest monitoring run with its checks' recent trend, or None if it has none."""
        ...
