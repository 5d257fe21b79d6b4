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
FLAGS = ("abstained", "overridden", "answered", "to_review")
DEFAULT_DAYS = 7


def window(params: Mapping[str, str], days: int = DEFAULT_DAYS) -> tuple[str, str, dict[str, str], list[str]]:
    """(since, until) as ISO timestamps for the form's dates (inclusive days, UTC), the dates as
    shown, and any problems (a bad date falls back to the default window)."""
    today = datetime.now(UTC).date()
    problems: list[str] = []
    since, until = _date(params.get("since"), problems), _date(params.get("until"), problems)
    until = until or today
    since = since or until - timedelta(days=days - 1)
    if since > until:
        problems.append("the window's start is after its end; showing the end day only")
        since = until
    shown = {"since": since.isoformat(), "until": until.isoformat()}
    return _iso(since), _iso(until + timedelta(days=1)), shown, problems


def _date(text: str | None, problems: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"{text[:40]!r} is not a date (YYYY-MM-DD)")
        return None


def _iso(day: date) -> str:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat()


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
        segments=segments,
        before_seq=int(before) if before.isdigit() else None,
        **text,
    )
    return query, form, problems


def link(path: str, values: Mapping[str, Any]) -> str:
    """A URL with the non-empty values as its query string."""
    kept = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path
