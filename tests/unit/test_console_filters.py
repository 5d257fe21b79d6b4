"""The console's search window: days from the form, exact moments from a monitor run's links."""

from __future__ import annotations

from keel.console.filters import decision_query, window


def test_days_are_whole_utc_days_with_an_inclusive_end() -> None:
    since, until, shown, problems = window({"since": "2026-11-01", "until": "2026-11-02"})
    assert (since, until) == ("2026-11-01T00:00:00+00:00", "2026-11-03T00:00:00+00:00")
    assert shown == {"since": "2026-11-01", "until": "2026-11-02"} and not problems


def test_moments_are_used_as_they_are_with_an_exclusive_end() -> None:
    start, end = "2026-11-02T07:31:00.123456+00:00", "2026-11-02T09:31:00.654321+00:00"
    since, until, shown, problems = window({"since": start, "until": end})
    assert (since, until) == (start, end) and shown == {"since": start, "until": end} and not problems
    # a moment without a zone is UTC
    since, _, _, _ = window({"since": "2026-11-02T07:31:00", "until": end})
    assert since == "2026-11-02T07:31:00+00:00"


def test_a_bad_bound_is_named_and_the_default_window_shown() -> None:
    since, until, shown, problems = window({"since": "yesterday", "until": "2026-11-10"}, days=7)
    assert problems == ["'yesterday' is not a date (YYYY-MM-DD)"] and shown["since"] == "2026-11-04"
    assert (since, until) == ("2026-11-04T00:00:00+00:00", "2026-11-11T00:00:00+00:00")
    _, _, _, backwards = window({"since": "2026-11-10T00:00:00+00:00", "until": "2026-11-09"})
    assert backwards == ["the window's start is after its end; showing the end day only"]


def test_the_queued_flag_reaches_the_search() -> None:
    query, form, _ = decision_query({"queued": "yes", "answered": "no", "region": "EMEA"})
    assert query.queued is True and query.answered is False and query.segments == {"region": "EMEA"}
    assert form["queued"] == "yes"
    where, params = query.where()
    assert "d.record LIKE ?" in where and '%"audit":{"selected":true%' in params
