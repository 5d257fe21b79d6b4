"""`keel monitor`'s challenger section answers a window with nothing to compare from the index,
exactly as the full comparison over every row would."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from keel.decision_log import Database
from keel.decision_log.bulk import BulkLoader
from keel.monitoring import challenger_compare
from tests.integration.test_bulk_load import decision


def test_only_champion_traffic_is_answered_from_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
    rows = [{**decision(i), "model_version": "3", "caller": "svc", "origin": None} for i in range(40)]
    BulkLoader(db).load("decisions", rows)
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    quick = challenger_compare.compare(db, "routing", start, end)
    assert quick["live_decisions"] == 40
    # The same window through the full path (as if a second version had served).
    monkeypatch.setattr(challenger_compare, "window_mix", lambda *_: (40, 0, 2))
    assert challenger_compare.compare(db, "routing", start, end) == quick
    db.dispose()
