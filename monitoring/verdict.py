"""A verdict: one check's measured value against its (warn, alert) thresholds, and what runs read off it.

`Verdict` is the record that leaves the checks for the report, summary.json, the trend page,
Prometheus and the verdict events; its `to_dict()` is the summary.json shape readers depend on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal, TypedDict, cast

__all__ = [
    "COULD_NOT_RUN",
    "EXIT_CODES",
    "STATUSES",
    "STATUS_RANK",
    "Direction",
    "Status",
    "Verdict",
    "VerdictDict",
    "exit_code",
    "judge",
    "worst_status",
]

Status = Literal["ok", "warn", "alert", "no_data"]
Direction = Literal["higher_is_worse", "lower_is_worse"]
STATUSES: tuple[Status, ...] = ("no_data", "ok", "warn", "alert")
"""Least to most severe; a run's overall status is its worst verdict's."""
STATUS_RANK: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
EXIT_CODES = {"ok": 0, "no_data": 0, "warn": 1, "alert": 2}
COULD_NOT_RUN = 3
"""Monitoring-plugin convention: 0 ok, 1 warning, 2 critical, 3 unknown."""


class VerdictDict(TypedDict):
    """A verdict as summary.json, `keel monitor --json` and the report carry it."""

    check: str
    status: Status
    value: float | None
    warn: float | None
    alert: float | None
    detail: str


@dataclass(frozen=True)
class Verdict:
    check: str
    status: Status
    value: float | None
    warn: float | None
    alert: float | None
    detail: str

    def to_dict(self) -> VerdictDict:
        return cast(VerdictDict, asdict(self))


def judge(
    check: str,
    value: float | None,
    thresholds: tuple[float, float],
    detail: str,
    higher_is_worse: bool = True,
) -> Verdict:
    warn, alert = thresholds
    if value is None:
        return Verdict(check, "no_data", None, warn, alert, detail)
    if higher_is_worse:
        status: Status = "alert" if value >= alert else "warn" if value >= warn else "ok"
    else:
        status = "alert" if value <= alert else "warn" if value <= warn else "ok"
    return Verdict(check, status, round(float(value), 6), warn, alert, detail)


def worst_status(verdicts: Iterable[Verdict]) -> Status:
    """The worst verdict's status; "no_data" only when no check had data."""
    return STATUSES[max((STATUS_RANK[v.status] for v in verdicts), default=0)]


def exit_code(verdicts: Iterable[Verdict]) -> int:
    return max((EXIT_CODES[v.status] for v in verdicts), default=0)
