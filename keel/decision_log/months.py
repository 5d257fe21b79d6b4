"""Calendar months of the log (YYYY-MM) and their bounds as `created_at` text.

One definition for the archive's cut, the partitions' bounds and retention's ages: a month holds
the rows whose `created_at` text is at least its first instant and below the next month's, both
written as `datetime.isoformat()` in UTC, compared as text (byte order: PostgreSQL's "C"
collation of the partitioned column).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

__all__ = ["month_after", "month_bounds", "month_of", "month_start", "months_between"]


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


def month_after(month: str) -> str:
    year, mon = map(int, month.split("-"))
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def month_start(month: str) -> str:
    """The month's first instant as `created_at` text."""
    year, mon = map(int, month.split("-"))
    return datetime(year, mon, 1, tzinfo=UTC).isoformat()


def month_bounds(month: str) -> tuple[str, str]:
    """[start, end) of the month as `created_at` text."""
    return month_start(month), month_start(month_after(month))


def months_between(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included."""
    out = [first]
    while out[-1] < last:
        out.append(month_after(out[-1]))
    return out
