"""The review workload of one monitor window, stored with the run for the console's aggregate pages.

The Review queue and Overrides pages show, per model, what its latest run found: the queue at
the window's end (cases routed to a person or selected for audit with no feedback logged
before then) by route and segment with its age; how long cases took from decision to their
first feedback (p50, p90) by route and segment; and override pairs with their reasons by
segment. Computed here, once per run, from the window the monitor reads anyway (the reviewed
frame, plus two streamed reads of a few columns), so the pages read one stored row instead of
the log. Quantiles are nearest-rank (numpy's "inverted_cdf"): every one is an observed value.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from keel.monitoring.log_reader import LogReader, iso

__all__ = [
    "AGE_BUCKETS",
    "AUDIT_ROUTE",
    "GROUP_ROWS",
    "OVER_LAST",
    "answer_times",
    "override_pairs",
    "queue",
    "workload",
]

AGE_BUCKETS = (("under 1 hour", 3600.0), ("1 to 24 hours", 86400.0), ("1 to 7 days", 604800.0))
"""(label, upper bound in seconds) of a waiting case's age; older cases fall in OVER_LAST."""
OVER_LAST = "over 7 days"
GROUP_ROWS = 200
"""Groups kept per segment field (the largest first); the summary counts the rest."""
AUDIT_ROUTE = "audit"
"""The queue's name for a case the model decided on route `auto` that was selected for audit."""
CHUNK = 50_000
REASON_CHARS = 120
TOP_REASONS = 3


def _frame(chunks: Iterator[list[Any]], columns: list[str]) -> pd.DataFrame:
    parts = [pd.DataFrame.from_records(rows, columns=columns) for rows in chunks]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.concat(parts, ignore_index=True)


def _moments(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, format="ISO8601", utc=True)


def _routes(frame: pd.DataFrame) -> pd.Series:
    """The route a case waits on: its own, or `audit` for an auto-routed case selected for audit."""
    audited = frame["audited"].astype(bool)
    return frame["route"].astype(str).where(~(audited & (frame["route"] == "auto")), AUDIT_ROUTE)


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    p50, p90 = np.quantile(values, [0.5, 0.9], method="inverted_cdf")
    return round(float(p50), 3), round(float(p90), 3)


def _groups(
    frame: pd.DataFrame, key: str, value: str, extra: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Per value of `key` (None left out): n, p50 and p90 of `value`, the largest groups first,
    at most GROUP_ROWS; and how many groups were left out."""
    rows: list[dict[str, Any]] = []
    known = frame[frame[key].notna()]
    for name, part in known.groupby(known[key].astype(str), sort=False):
        values = part[value].to_numpy(dtype="float64")
        p50, p90 = _quantiles(values)
        row: dict[str, Any] = {
            "value": str(name),
            "n": len(values),
            "p50": p50,
            "p90": p90,
            "max": round(float(values.max()), 3),
        }
        if extra:
            row.update({k: fn(part) for k, fn in extra.items()})
        rows.append(row)
    rows.sort(key=lambda r: (-r["n"], r["value"]))
    return rows[:GROUP_ROWS], max(0, len(rows) - GROUP_ROWS)


def _by_age(part: pd.DataFrame) -> dict[str, int]:
    edges = [0.0, *(b for _, b in AGE_BUCKETS), np.inf]
    labels = [label for label, _ in AGE_BUCKETS] + [OVER_LAST]
    counts = pd.cut(part["seconds"], edges, right=False, labels=labels).value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}


def _oldest(part: pd.DataFrame) -> str:
    return str(part["created_at"].min())


def _by_segment(
    frame: pd.DataFrame, segments: Sequence[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in segments:
        rows, left_out = _groups(frame, name, "seconds", extra)
        out[name] = {"groups": rows, "left_out": left_out}
    return out


def queue(
    reader: LogReader, model: str, start: datetime, end: datetime, segments: Sequence[str]
) -> dict[str, Any]:
    """The review queue at the window's end: open cases with their age in seconds."""
    window = (model, iso(start), iso(end))
    frame = _frame(
        reader.sql.open_cases(window, segments, CHUNK), ["route", "created_at", "audited", *segments]
    )
    frame["route"] = _routes(frame) if len(frame) else frame["route"]
    frame["seconds"] = (pd.Timestamp(end) - _moments(frame["created_at"])).dt.total_seconds()
    extra = {"by_age": _by_age, "oldest": _oldest}
    by_route, _ = _groups(frame, "route", "seconds", extra)
    total = _groups(frame.assign(all="all"), "all", "seconds", extra)[0]
    return {
        "open": len(frame),
        "age_seconds": {k: total[0][k] for k in ("p50", "p90", "max")} if total else None,
        "by_age": total[0]["by_age"] if total else _by_age(frame),
        "oldest": total[0]["oldest"] if total else None,
        "by_route": by_route,
        "by_segment": _by_segment(frame, segments, extra),
    }


def answer_times(
    reader: LogReader, model: str, start: datetime, end: datetime, segments: Sequence[str]
) -> dict[str, Any]:
    """Seconds from decision to first feedback of the window's answered decisions."""
    window = (model, iso(start), iso(end))
    columns = ["route", "created_at", "first_at", "audited", *segments]
    frame = _frame(reader.sql.answer_times(window, segments, CHUNK), columns)
    frame["route"] = _routes(frame) if len(frame) else frame["route"]
    frame["seconds"] = (_moments(frame["first_at"]) - _moments(frame["created_at"])).dt.total_seconds()
    by_route, _ = _groups(frame, "route", "seconds")
    return {"answered": len(frame), "by_route": by_route, "by_segment": _by_segment(frame, segments)}


def override_pairs(reviewed: pd.DataFrame, segments: Sequence[str]) -> dict[str, Any]:
    """Decided outcome -> final outcome of the window's overridden decisions (their latest feedback
    an override), counted per segment value, with each pair's most given reasons."""
    over = reviewed[reviewed["kind"] == "override"]
    out: dict[str, Any] = {"total": len(over), "by_segment": {}}
    decided = over["outcome"].astype(object).where(over["outcome"].notna(), "")
    final = over["final_outcome"].astype(object).where(over["final_outcome"].notna(), "")
    reason = over["reason"].astype(object).where(over["reason"].notna(), "").astype(str).str[:REASON_CHARS]
    for name in segments:
        keyed = pd.DataFrame(
            {"value": over[name].astype(object), "decided": decided.astype(str), "final": final.astype(str),
             "reason": reason}
        ).dropna(subset=["value"])  # fmt: skip
        keyed["value"] = keyed["value"].astype(str)
        pairs = []
        for (value, dec, fin), part in keyed.groupby(["value", "decided", "final"], sort=False):
            reasons = part.loc[part["reason"] != "", "reason"].value_counts().head(TOP_REASONS)
            pairs.append({
                "value": value, "decided": dec, "final": fin, "count": len(part),
                "reasons": [[str(r), int(n)] for r, n in reasons.items()],
            })  # fmt: skip
        pairs.sort(key=lambda p: (-p["count"], p["value"], p["decided"], p["final"]))
        out["by_segment"][name] = {"pairs": pairs[:GROUP_ROWS], "left_out": max(0, len(pairs) - GROUP_ROWS)}
    return out


def workload(
    reader: LogReader,
    model: str,
    start: datetime,
    end: datetime,
    segments: Sequence[str],
    reviewed: pd.DataFrame,
) -> dict[str, Any]:
    """What the console's Review queue and Overrides pages show for this run (summary.json's
    `workload`): `as_of` the window's end, the origins counted, the queue, answer times and
    override pairs. Durations are in seconds."""
    origins = ["live", "batch"] if reader.sql.include_batch else ["live"]
    return {
        "window": {"start": iso(start), "end": iso(end)},
        "origins": origins,
        "queue": queue(reader, model, start, end, segments),
        "answer_times": answer_times(reader, model, start, end, segments),
        "overrides": override_pairs(reviewed, segments),
    }
