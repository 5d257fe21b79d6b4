"""Benchmark: archiving a large decision log and verifying the archive offline, beside
`keel verify-log` on the same log in the same run.

The log (PostgreSQL by default, a fresh database dropped afterwards, with the temp folder of the
archive and chain key, unless --keep) is filled with N decisions spread over --months months
through the bulk loader (rows, hashes and heads exactly as the online writer's, signed with a
chain key), plus one feedback per 20 decisions. Then, each in its own child process so that peak
memory (VmHWM) is that phase's alone:

  verify-log       keel.decision_log.verify on the whole log (one snapshot, one core + read-ahead)
  archive          keel log archive of every month to a temp folder (written, then re-verified)
  verify-archive   keel verify-archive of that folder, no database, on every core
  remove           keel log remove of every month but the last (each removal verifies the whole
                   archive against the live log first, then drops partitions and the straddlers)
  restore          keel log restore of the first month (brings back every removed month; it too
                   verifies the archive first), then
  verify-log-after-restore   keel verify-log on the restored log

Before them, migrate-0011 times migration 0011 converting the filled log in place (it is first
taken back to 0009, one table, untimed): rows are decisions + feedback copied into partitions.

Targets (issue 27): archive >= 1.0x and verify-archive >= 2x verify-log's rows/s; memory flat.

    python -m bench.archive [--decisions 10000000] [--months 4] [--log postgresql://...] [--keep]
                            [--skip migrate-0011]

migrate-0011 needs the log's size free twice over (back to one table, then into partitions):
`--skip migrate-0011` leaves it out where the disk cannot hold that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

COUNT = "SELECT (SELECT count(*) FROM decisions) + (SELECT count(*) FROM feedback)"
PHASES = {
    "migrate-0011": """
from keel.decision_log.migrations import downgrade
downgrade(db.engine, db.is_postgres, "0009")  # back to one table, as a log made before 0011
t0 = time.perf_counter()  # the phase's time is the upgrade's alone
db.create_schema()
with db.reading() as r:
    rows = r.one(COUNT)[0]
""",
    "verify-log": """
from keel.decision_log.verify import verify
result = verify(db, keys)
assert result.ok, result.problem
rows = result.rows_checked
""",
    "archive": """
from datetime import date
from keel.decision_log.archive import archive_months
rows = sum(p.rows for m in archive_months(db, keys, date(2026, 12, 1), TARGET)
           for p in m.parts.values())
""",
    "verify-archive": """
from keel.decision_log.archive_verify import verify_archive
report = verify_archive(TARGET, keys)
assert report.ok, report.problem
rows = sum(report.rows[t] for t in ("decisions", "feedback")) + report.rows["alias_history"]
""",
    "remove": """
from keel.decision_log.retention import remove_months
with db.reading() as r:
    before = r.one(COUNT)[0]
months = sorted(p.name for p in Path(TARGET).iterdir() if (p / "manifest.json").exists())
remove_months(db, keys, TARGET, months[-2], actor="bench")  # all but the last month
with db.reading() as r:
    rows = before - r.one(COUNT)[0]
""",
    "restore": """
from keel.decision_log.retention import restore_months
with db.reading() as r:
    before = r.one(COUNT)[0]
months = sorted(p.name for p in Path(TARGET).iterdir() if (p / "manifest.json").exists())
restore_months(db, keys, TARGET, months[0], actor="bench")
with db.reading() as r:
    rows = r.one(COUNT)[0] - before
""",
    "verify-log-after-restore": """
from keel.decision_log.verify import verify
result = verify(db, keys)
assert result.ok, result.problem
rows = result.rows_checked
""",
}

CHILD = """
import json, time
from pathlib import Path
from keel.decision_log import Database
from keel.decision_log.log_key import load_keys
keys = load_keys(Path({key!r}))
db = Database({url!r})
TARGET = {target!r}
COUNT = {count!r}
t0 = time.perf_counter()
{body}
seconds = time.perf_counter() - t0
db.dispose()
hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]
print(json.dumps({{"rows": rows, "seconds": seconds, "peak_mb": int(hwm.split()[1]) / 1024}}))
"""


def rows(n: int, months: int) -> Iterator[dict[str, Any]]:
    """Decisions shaped like routing's records (inputs, probabilities, explanation, versions)."""
    start = datetime(2026, 12 - months, 1, tzinfo=UTC)
    step = timedelta(days=30.4 * months) / n
    regions = ("NA", "EMEA", "APAC", "LATAM")
    for i in range(n):
        decision_id = str(uuid.uuid4())
        region = regions[i % 4]
        abstained = i % 9 == 0
        record = {
            "decision_id": decision_id,
            "model": "routing",
            "created_at": (start + step * i).isoformat(),
            "inputs": {f"f{j}": (i * 31 + j) % 997 / 7.0 for j in range(12)} | {"region": region},
            "probabilities": {"auto": 0.61, "review": 0.2, "finance": 0.12, "escalate": 0.07},
            "explanation": {"contributions": {f"f{j}": ((i + j) % 13 - 6) / 10 for j in range(12)}},
            "versions": {"model": "3", "contract": "2", "policy": "5", "calibration": "3"},
            "route": "review" if abstained else "auto",
        }
        yield {
            "decision_id": decision_id,
            "model": "routing",
            "model_version": "3",
            "created_at": record["created_at"],
            "caller": "bench",
            "case_id": f"case-{i}",
            "idempotency_key": None,
            "request_hash": None,
            "request_index": 0,
            "outcome": None if abstained else "auto",
            "abstained": abstained,
            "route": record["route"],
            "confidence": 0.5 + (i % 50) / 100,
            "segments": json.dumps({"region": region, "entity": f"{region}{i % 5:02d}"}),
            "intervened": 0,
            "record": record,
            "origin": None,
        }


def feedback(n: int, months: int) -> Iterator[dict[str, Any]]:
    start = datetime(2026, 12 - months, 1, tzinfo=UTC)
    step = timedelta(days=30.4 * months) / n
    for i in range(n):
        yield {
            "feedback_id": str(uuid.uuid4()),
            "decision_id": str(uuid.uuid4()),
            "model": "routing",
            "created_at": (start + step * i).isoformat(),
            "caller": "workflow",
            "actor": "reviewer",
            "final_outcome": "review",
            "kind": "override",
            "record": {"reason": "threshold", "reviewer_pool": "local"},
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=10_000_000)
    parser.add_argument("--months", type=int, default=4)
    parser.add_argument(
        "--log", help="an existing PostgreSQL (or SQLite) URL to fill; default a fresh database"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=sorted(PHASES),
        help="leave a phase out (repeatable); the others still run in order",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the fresh database, the chain key and the archive afterwards",
    )
    args = parser.parse_args()

    import psycopg

    from keel.decision_log import Database
    from keel.decision_log.bulk import BulkLoader
    from keel.decision_log.log_key import create_key_file, load_keys

    work = Path(tempfile.mkdtemp(prefix="keel-bench-archive-"))
    create_key_file(work / "chain.key")
    keys = load_keys(work / "chain.key")
    name = f"keel_bench_archive_{uuid.uuid4().hex[:8]}"
    url = args.log or f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    if not args.log:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    out: dict[str, Any] = {"decisions": args.decisions, "months": args.months, "log": url.split("@")[-1]}
    try:
        t0 = time.perf_counter()
        db = Database(url)
        loader = BulkLoader(db, keys)
        loader.load("decisions", rows(args.decisions, args.months))
        loader.load("feedback", feedback(args.decisions // 20, args.months))
        db.dispose()
        out["fill_seconds"] = round(time.perf_counter() - t0, 1)
        target = str(work / "archive")
        out["skipped"] = args.skip
        for phase, body in PHASES.items():
            if phase in args.skip:
                continue
            code = CHILD.format(key=str(work / "chain.key"), url=url, target=target, count=COUNT, body=body)
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            if done.returncode:
                out[phase] = {"error": done.stderr[-1500:]}
                continue
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["rows_per_second"] = round(figures["rows"] / figures["seconds"])
            figures["seconds"] = round(figures["seconds"], 2)
            out[phase] = figures
        base = out.get("verify-log", {}).get("rows_per_second")
        if base:
            for phase in ("archive", "verify-archive", "remove", "restore"):
                if "rows_per_second" in out.get(phase, {}):
                    out[phase]["ratio_to_verify_log"] = round(out[phase]["rows_per_second"] / base, 3)
        out["targets"] = {"archive_ratio": ">= 1.0", "verify_archive_ratio": ">= 2.0"}
        out["archive_mb"] = round(
            sum(f.stat().st_size for f in Path(target).rglob("*") if f.is_file()) / 2**20, 1
        )
        out["cores"] = os.cpu_count()
        out["load_average"] = os.getloadavg()
    finally:
        if not args.log and not args.keep:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if args.keep:
            out["work"] = str(work)  # the chain key and the archive, for the kept log
        else:
            shutil.rmtree(work, ignore_errors=True)  # the archive: about 0.4 GB per million decisions
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
