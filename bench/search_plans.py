"""Benchmark: the plan and server time of each console search, without and with the 0013 indexes.

On a PostgreSQL log filled as bench.console fills it (or an existing one, --url), brings the log
to head (timing the build of migration 0013's indexes if it lacks them), then for each search of
bench.console's query mix runs EXPLAIN (ANALYZE, BUFFERS) of the statement the console runs
(keel.decision_log.search.search_sql, page of 50 + 1) twice: once inside a transaction that
drops migration 0013's indexes and is rolled back (PostgreSQL DDL is transactional, so nothing
is rebuilt), once with them. Both use today's statements. Prints JSON: per search, the access
path on `decisions` and the execution time and shared buffers of each; and the load average (the
machine may be shared).

    python -m bench.search_plans [--decisions 1000000 | --url postgresql://...] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.console import (
    ADMIN_URL,
    DAYS,
    create_database,
    drop_database,
    fill_feedback,
    query_mix,
    sample_row,
)


def access_paths(plan: dict[str, Any]) -> list[str]:
    """The scans of `decisions` (alias d) in a JSON plan, e.g. 'Index Scan Backward decisions_pkey'."""
    found: list[str] = []
    bitmap_index = plan["Node Type"] == "Bitmap Index Scan" and plan["Index Name"].startswith("decisions_")
    if plan.get("Relation Name") == "decisions" or plan.get("Alias") == "d" or bitmap_index:
        direction = " Backward" if plan.get("Scan Direction") == "Backward" else ""
        found.append(f"{plan['Node Type']}{direction} {plan.get('Index Name', '')}".strip())
    for child in plan.get("Plans", []):
        found.extend(access_paths(child))
    return found


def explain(conn: Any, sql: str, params: list[Any]) -> dict[str, Any]:
    (doc,) = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql.replace("?", "%s"), params
    ).fetchone()
    top = doc[0]
    plan = top["Plan"]
    return {
        "decisions_scans": access_paths(plan),
        "execution_ms": round(top["Execution Time"], 1),
        "rows": plan.get("Actual Rows"),
        "shared_hit": plan.get("Shared Hit Blocks"),
        "shared_read": plan.get("Shared Read Blocks"),
    }


def plans(url: str) -> dict[str, Any]:
    """Each search of the mix, explained without and with the 0013 indexes."""
    import psycopg

    from keel.console.filters import decision_query
    from keel.decision_log import Database
    from keel.decision_log.schema import FILTER_INDEXES
    from keel.decision_log.search import search_sql

    db = Database(url)
    t0 = time.perf_counter()
    db.create_schema()
    migrate_s = time.perf_counter() - t0
    hit = sample_row(url)
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        conn.execute("ANALYZE decisions, feedback")
        conn.commit()
        for name, params in query_mix(hit).items():
            sql, args = search_sql(db, decision_query(params)[0], 51)
            for index in FILTER_INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {index.name}")
            without = explain(conn, sql, args)
            conn.rollback()
            out[name] = {"without_0013": without, "with_0013": explain(conn, sql, args)}
            conn.rollback()
    db.dispose()
    return {"upgrade_to_head_s": round(migrate_s, 1), "searches": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--url", help="an existing filled log (not dropped)")
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result: dict[str, Any] = {"benchmark": "search_plans"}
    url = args.url or create_database(ADMIN_URL)
    try:
        if not args.url:
            from bench.monitoring import build_log

            with tempfile.TemporaryDirectory(prefix="keel-bench-plans-") as tmp:
                os.environ.update({"KEEL_HOME": str(Path(tmp)), "KEEL_DECISION_LOG_URL": url})
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                start = datetime.now(UTC) - timedelta(days=DAYS)
                result["fill"] = {
                    **build_log(args.decisions, args.pool, "covariate_shift", args.seed, start,
                                timedelta(days=DAYS)),
                    "feedback": fill_feedback(url, 0.3, 100, args.seed),
                }  # fmt: skip
        result.update(plans(url))
    finally:
        if not args.url and not args.keep:
            drop_database(ADMIN_URL, url)
    result["load_average"] = {"before": [round(v, 2) for v in load_before],
                              "after": [round(v, 2) for v in os.getloadavg()]}  # fmt: skip
    result["cpus"] = os.cpu_count()
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
