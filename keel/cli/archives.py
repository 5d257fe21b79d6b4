"""`keel log archive` and `keel verify-archive`: the log package writes and checks; this prints."""

from __future__ import annotations

import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from keel.decision_log.archive import ArchiveError, archive_months, closed_before
from keel.decision_log.archive_verify import ArchiveReport, verify_archive
from keel.decision_log.database import GENESIS, Database, redact
from keel.decision_log.log_key import load_keys
from keel.decision_log.settings import LogSettings

__all__ = ["archive_log", "check_archive"]


def archive_log(log_url: str, before: str, url: str) -> int:
    """Archive every closed month before `before` to `url`. Exit 0: written and verified;
    1: refused or broken (said on stderr); 2: bad arguments or no chain key."""
    try:
        cut = closed_before(date.fromisoformat(before), datetime.now(UTC).date())
        keys = load_keys(LogSettings().key_file)
    except (ValueError, ArchiveError) as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    db = Database(log_url)
    written = 0
    try:
        for month in archive_months(db, keys, cut, url):
            written += 1
            rows = ", ".join(f"{t} {p.rows:,} rows (to seq {p.last_seq})" for t, p in month.parts.items())
            print(f"{month.month}: {rows} -> {month.url} (verified)")
    except ArchiveError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2 if "KEEL_LOG_KEY_FILE" in str(exc) else 1
    finally:
        db.dispose()
    if not written:
        print(f"nothing to archive before {cut} in {redact(log_url)}: every month up to it is at {url}")
    else:
        print(f"{written} month(s) archived; the rows stay in {redact(log_url)} until keel log remove")
    return 0


def check_archive(url: str, key_file: Path | None, live_url: str | None, as_json: bool) -> int:
    """Verify an archive offline. Exit 0: intact; 1: broken (where and what on stderr); 2: no key."""
    try:
        keys = load_keys(key_file or LogSettings().key_file)
    except ValueError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    if keys.current is None:
        print(
            "keel: archives are signed with the chain key: give --key-file or set KEEL_LOG_KEY_FILE",
            file=sys.stderr,
        )
        return 2
    db = Database(live_url) if live_url else None
    try:
        report = verify_archive(url, keys, db)
    finally:
        if db is not None:
            db.dispose()
    if as_json:
        print(json.dumps(_as_dict(report), indent=2))
    elif report.ok:
        _print(url, report)
    if not report.ok:
        print(f"archive BROKEN at {report.where}: {report.problem}", file=sys.stderr)
        return 1
    return 0


def _print(url: str, report: ArchiveReport) -> None:
    span = f"{report.months[0]} to {report.months[-1]}" if len(report.months) > 1 else report.months[0]
    rows = ", ".join(f"{t} {n:,}" for t, n in report.rows.items())
    print(f"archive {url}: {len(report.months)} month(s), {span}; rows {rows}; hash chains intact")
    for table, start in report.starts.items():
        where = (
            "from the chain's start"
            if start == GENESIS
            else f"after an earlier archive (links to {start[:12]}...)"
        )
        print(f"  {table}: {where}, ends at seq {report.heads[table][0]}")
    print(f"  signed with {', '.join(report.key_ids) or 'no key'}")
    if report.live:
        print(f"  {report.live}")


def _as_dict(report: ArchiveReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "months": report.months,
        "rows": report.rows,
        "problem": report.problem,
        "where": report.where,
        "starts": report.starts,
        "heads": {t: {"seq": s, "hash": h} for t, (s, h) in report.heads.items()},
        "key_ids": report.key_ids,
        "live": report.live,
    }
