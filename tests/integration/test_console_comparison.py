"""The Changes page's champion vs shadow and canary table from `keel compare` over a real log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel.console.comparison import SEGMENT_ROWS, comparisons
from keel.decision_log import Database
from keel.decision_log.bulk import BulkLoader
from keel.monitoring import challenger_compare
from tests.integration.test_bulk_load import decision


def _row(i: int, origin: str, record: dict[str, Any], outcome: str | None, region: str) -> dict[str, Any]:
    base = decision(i)
    record = {**base["record"], **record}
    return {
        **base,
        "decision_id": record["decision_id"],
        "origin": origin,
        "caller": "svc",
        "idempotency_key": None,
        "request_hash": None,
        "outcome": outcome,
        "abstained": outcome is None,
        "segments": f'{{"region":"{region}"}}',
        "record": record,
    }


def test_shadow_and_canary_tables_by_segment(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'decisions.db'}")
    rows = []
    for i in range(60):
        region = ("NA", "EMEA", "<b>APAC</b>")[i % 3]
        live_id = str(uuid.uuid4())
        alias = "canary" if i % 4 == 0 else "champion"
        version = "4" if alias == "canary" else "3"
        rows.append(
            {
                **_row(
                    i, "live", {"decision_id": live_id, "versions": {"alias": alias}}, "finance_ap", region
                ),
                "model_version": version,
            }
        )
        shadow = {"decision_id": str(uuid.uuid4()), "shadow_of": live_id, "versions": {"alias": "shadow"}}
        rows.append(
            {**_row(i, "shadow", shadow, None if i % 6 == 0 else "finance_ap", region), "model_version": "5"}
        )
    BulkLoader(db).load("decisions", rows)
    result = challenger_compare.compare(
        db, "routing", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    )
    view = comparisons(result)
    assert view["live_decisions"] == 60
    shadow, canary = view["sections"]
    assert shadow["title"] == "Shadow v5 vs champion" and shadow["paired"]
    assert [r["segment"] for r in shadow["rows"]] == [
        "all cases",
        "region = <b>APAC</b>",
        "region = EMEA",
        "region = NA",
    ]
    overall = shadow["rows"][0]
    assert overall["cases"] == "60" and overall["agreement"].startswith("83.3% [")  # 10 of 60 abstain
    assert overall["coverage_difference"].startswith("-16.7 pts [")
    assert overall["override_champion"] == "n/a"  # no feedback: no override rate
    assert canary["title"] == "Canary v4 vs champion v3" and not canary["paired"]
    assert canary["rows"][0]["cases"] == "15" and canary["rows"][0]["agreement"] == ""
    assert "25.0% [" in canary["lead"] and canary["left_out"] == 0
    assert SEGMENT_ROWS >= 3
    db.dispose()
