"""The registry of monitoring checks: each check is declared as data, apart from its calculation.

Like Evidently's metrics (a declarative config, and a calculation that turns data into a result),
a `Check` says what a person needs to read and configure it (name, title, direction,
thresholds or the settings fields they come from, the unit of its value, the remedy) and names
the function that measures its evidence. `evaluate` runs every registered check in order;
verdicts, the report, summary.json, the trend page and Prometheus all follow the registry, so a
new check is one module with its `Check` plus one `register` call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from keel.errors import Conflict, NotFound
from keel.monitoring.evidence import Evidence
from keel.monitoring.settings import MonitorSettings
from keel.monitoring.verdict import Direction, Verdict, judge

__all__ = [
    "Check",
    "Measure",
    "Measurement",
    "Unit",
    "evaluate",
    "get",
    "recommendation",
    "register",
    "registered",
    "title",
    "unregister",
]

Unit = Literal["share", "ratio", "alpha_multiple", "evidence", "count", "number"]
"""How a value reads: share 0.12 -> 12.0%; ratio 2.1 -> 2.10×; alpha_multiple -> 2.10× certified;
evidence -> 2.5× / 40% of the evidence needed; count -> 2 input(s); number -> 4 significant digits."""


@dataclass(frozen=True)
class Measurement:
    """What a check's calculation found: the value judged, and the sentence saying why."""

    value: float | None
    """None: not enough evidence for a verdict (no_data)."""
    detail: str
    thresholds: tuple[float, float] | None = None
    """(warn, alert) worked out from the evidence, for checks whose declaration has none."""
    alert_caveat: str | None = None
    """When set, an alert is reported as a warning with this sentence added: the evidence cannot
    tell a model problem from something that needs a person's reading first."""


Measure = Callable[[Evidence, MonitorSettings, tuple[float, float] | None], Measurement | None]
"""(evidence, settings, declared thresholds) -> a measurement, or None when the check does not
apply to this run (e.g. the Evidently parts were not run)."""


@dataclass(frozen=True)
class Check:
    name: str
    """Stable identifier: the key in summary.json, history and the Prometheus `check` label."""
    title: str
    """What the check is called where people read it (report, trend page)."""
    direction: Direction
    thresholds: str | tuple[float, float] | None
    """(warn, alert); a MonitorSettings field holding them (KEEL_MONITOR_<FIELD>); or None when the
    calculation derives them from the evidence (Measurement.thresholds)."""
    unit: Unit
    remedy: str
    """The first thing to do about a finding, in the words of the person who does it."""
    measure: Measure | None
    """None: judged by the monitor itself before any evidence exists (decisions in the window)."""
    retrain: bool = False
    """An alert means the model no longer fits its data: retraining is the remedy."""
    settings: tuple[str, ...] = ()
    """Other MonitorSettings fields the calculation reads (documentation, checked at registration)."""

    def limits(self, settings: MonitorSettings) -> tuple[float, float] | None:
        if isinstance(self.thresholds, str):
            warn, alert = getattr(settings, self.thresholds)
            return float(warn), float(alert)
        return self.thresholds

    def judge(self, measured: Measurement, settings: MonitorSettings) -> Verdict:
        limits = measured.thresholds or self.limits(settings)
        if limits is None:
            raise ValueError(f"check {self.name} declares no thresholds and its measurement gave none")
        verdict = judge(
            self.name, measured.value, limits, measured.detail, self.direction == "higher_is_worse"
        )
        if measured.alert_caveat and verdict.status == "alert":
            verdict = replace(verdict, status="warn", detail=f"{measured.detail}; {measured.alert_caveat}")
        return verdict


_REGISTRY: dict[str, Check] = {}


def register(check: Check) -> Check:
    """Add a check after those already registered; its verdict follows theirs everywhere."""
    if check.name in _REGISTRY:
        raise Conflict(f"a monitoring check named {check.name!r} is already registered")
    fields = MonitorSettings.model_fields
    named = ((check.thresholds,) if isinstance(check.thresholds, str) else ()) + check.settings
    unknown = [f for f in named if f not in fields]
    if unknown:
        raise NotFound(f"check {check.name!r} reads settings MonitorSettings does not have: {unknown}")
    _REGISTRY[check.name] = check
    return check


def unregister(name: str) -> Check:
    if name not in _REGISTRY:
        raise NotFound(f"no monitoring check named {name!r} is registered")
    return _REGISTRY.pop(name)


def registered() -> list[Check]:
    """Every check, in registration order (the order verdicts are listed in)."""
    return list(_REGISTRY.values())


def get(name: str) -> Check | None:
    return _REGISTRY.get(name)


def title(name: str) -> str:
    check = _REGISTRY.get(name)
    return check.title if check else name.replace("_", " ").capitalize()


def evaluate(evidence: Evidence, settings: MonitorSettings) -> list[Verdict]:
    """Every registered check that applies to this evidence, judged against its thresholds."""
    out = []
    for check in registered():
        measured = check.measure(evidence, settings, check.limits(settings)) if check.measure else None
        if measured is not None:
            out.append(check.judge(measured, settings))
    return out


def recommendation(verdicts: Iterable[Verdict]) -> str:
    """no action / investigate / retrain, with the reason in a few words."""
    verdicts = list(verdicts)
    alerts = [v.check for v in verdicts if v.status == "alert"]
    warns = [v.check for v in verdicts if v.status == "warn"]
    model = [a for a in alerts if (check := get(a)) is not None and check.retrain]
    if model:
        return "retrain: " + ", ".join(title(a).lower() for a in model)
    if alerts or warns:
        return "investigate: " + ", ".join(title(a).lower() for a in alerts + warns)
    return "no action"
