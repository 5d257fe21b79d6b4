"""Small wording helpers the check calculations share for their detail sentences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from keel.monitoring.detection import DetectionLimit
from keel.monitoring.segments import SegmentParents

__all__ = ["nest", "pct", "stated_limits"]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


class _SegmentFinding(Protocol):
    @property
    def field(self) -> str: ...
    @property
    def value(self) -> str: ...


F = TypeVar("F", bound=_SegmentFinding)


def nest(
    findings: Sequence[F],
    parents: SegmentParents,
    full: Callable[[F], str],
    short: Callable[[F], str],
    top: int = 3,
) -> str:
    """The first `top` findings as sentences, each followed by the findings on values inside it
    ("within EMEA: entity DE01 3.3×"), so an entity flagged because its region is does not read as
    a second, separate finding."""
    keys = {(f.field, f.value) for f in findings}
    out = []
    for f in findings:
        if parents.get((f.field, f.value)) in keys:
            continue  # shown under its parent
        inside = [c for c in findings if parents.get((c.field, c.value)) == (f.field, f.value)]
        text = full(f)
        if inside:
            text += f" — within {f.value}: " + ", ".join(f"{c.field} {c.value} {short(c)}" for c in inside)
        out.append(text)
    return "; ".join(out[:top])


def stated_limits(found: Sequence[DetectionLimit], check: str, primary: str) -> str:
    """ "; with 90% power this window would catch a 2.4x override increase in region EMEA, ...":
    the check's stated limits on the primary segment field (or its first field), to append."""
    mine = [d for d in found if d.check == check and d.field != "overall"]
    fields = [d.field for d in mine]
    field = primary if primary in fields else (fields[0] if fields else None)
    chosen = [d.sentence for d in mine if d.field == field]
    if not chosen:
        return ""
    return (
        "; with 90% power this window would catch "
        + ", ".join(chosen)
        + " (smaller ones cannot be ruled out)"
    )
