"""The decision search's form: query parameters in, a bounded DecisionQuery out, and links back.

Unknown or malformed values never reach SQL: dates are parsed, flags are yes/no, segment
fields come from the log's fixed list, and every text value is bound as a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from keel.decision_log.search import SEGMENT_FIELDS, DecisionQuery

__all__ = ["FLAGS", "TEXT_FIELDS", "decision_query", "link", "window"]

TEXT_FIELDS = (
    "model",
    "model_version",
    "outcome",
    "route",
    "case_id",
    "decision_id",
    "caller",
    "origin",
    "final_outcome",
)
FLAGS = ("abstained", "overridden", "answered", "to_review", "queued")
DEFAULT_DAYS = 7


def window(params: Mapping[str, str], days: int = DEFAULT_DAYS) -> tuple[str, str, dict[str, str], list[str]]:
    """(since, until) as ISO timestamps for the form's dates (inclusive days, UTC), the dates as
    shown, and any problems (a bad date falls back to the default window). A bound given as a
    moment (a monitor run's window, `2026-12-01T10:00:00+00:00`) is used as it is, the end
    exclusive: the console's links from a run's numbers find exactly that run's window."""
    today = datetime.now(UTC).date()
    problems: list[str] = []
    since, until = _bound(params.get("since"), problems), _bound(params.get("until"), problems)
    end = until if isinstance(until, datetime) else _start(until or today) + timedelta(days=1)
    if isinstance(since, datetime):
        start = since
    else:
        last_day = until.date() if isinstance(until, datetime) else until or today
        start = _start(since or last_day - timedelta(days=days - 1))
    if start >= end:
        problems.append("the window's start is after its end; showing the end day only")
        start = _start((end - timedelta(microseconds=1)).date())
    shown = {
        "since": params["since"] if isinstance(since, datetime) else start.date().isoformat(),
        "until": params["until"]
        if isinstance(until, datetime)
        else (end - timedelta(days=1)).date().isoformat(),
    }
    return start.isoformat(), end.isoformat(), shown, problems


def _bound(text: str | None, problems: list[str]) -> date | datetime | None:
    """A form's day (YYYY-MM-DD) or a moment (ISO 8601 with a time; UTC if it names no zone)."""
    if not text:
        return None
    try:
        if "T" in text:
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"{text[:40]!r} is not a date (YYYY-MM-DD)")
        return None


def _start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _flag(text: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(text or "")


def decision_query(params: Mapping[str, str]) -> tuple[DecisionQuery, dict[str, str], list[str]]:
    """The search the parameters ask for, the form's values to show again, and any problems."""
    since, until, form, problems = window(params)
    text = {f: params[f].strip()[:200] for f in TEXT_FIELDS if params.get(f, "").strip()}
    segments = {f: params[f].strip()[:100] for f in SEGMENT_FIELDS if params.get(f, "").strip()}
    flags = {f: params.get(f, "") for f in FLAGS if params.get(f) in ("yes", "no")}
    before = params.get("before", "")
    form.update(text)
    form.update(segments)
    form.update(flags)
    query = DecisionQuery(
        since=since,
        until=until,
        abstained=_flag(flags.get("abstained")),
        overridden=_flag(flags.get("overridden")),
        answered=_flag(flags.get("answered")),
        to_review=_flag(flags.get("to_review")),
        queued=_flag(flags.get("queued")),
        segments=segments,
        before_seq=int(before) if before.isdigit() else None,
        **text,
    )
    return query, form, problems


def link(path: str, values: Mapping[str, Any]) -> str:
    """A URL with the non-empty values as its query string."""
    kept = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path
