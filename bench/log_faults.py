"""Fault injection on the decision log: PostgreSQL cut off (through bench.tcp_proxy) for a few
seconds, several times, while writers append; reports how long the writer takes to commit again
after the database returns, and whether any acknowledged row was lost.

Run as `python -m bench.log_faults`; prints JSON. Target: recovery <= 5 s, 0 lost.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.tcp_proxy import TcpProxy
from keel.decision_log import Database, DecisionLog, LogSettings, LogUnavailable
from keel.decision_log.verify import verify

PG_ADMIN = os.environ.get("KEEL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CYCLES = 5
OUTAGE_SECONDS = 3.0
WRITERS = 4


def _row() -> dict[str, Any]:
    did = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    return {"decision_id": did, "model": "routing", "model_version": "1", "created_at": now,
            "caller": "bench",
            "request_index": 0, "outcome": "finance", "abstained": False, "route": "auto", "confidence": 0.9,
            "segments": "{}", "intervened": 0, "record": {"decision_id": did}}  # fmt: skip


def main() -> None:
    name = f"keel_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base = PG_ADMIN.rsplit("/", 1)[0]
    proxy = TcpProxy("127.0.0.1", int(base.rsplit(":", 1)[1])).start()
    log = DecisionLog(
        Database(f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"),
        settings=LogSettings(connect_timeout=1, commit_timeout=3),
    ).open()
    acked: list[str] = []
    refused = [0]
    slowest_refusal = [0.0]
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            rows = [_row()]
            started = time.monotonic()
            try:
                log.append("decisions", rows)
                acked.append(rows[0]["decision_id"])
            except LogUnavailable:
                refused[0] += 1
                slowest_refusal[0] = max(slowest_refusal[0], time.monotonic() - started)
                time.sleep(0.05)

    threads = [threading.Thread(target=write) for _ in range(WRITERS)]
    for t in threads:
        t.start()
    recoveries = []
    try:
        for _ in range(CYCLES):
            time.sleep(1.5)
            proxy.cut()
            time.sleep(OUTAGE_SECONDS)
            proxy.restore()
            back = time.monotonic()
            n = len(acked)
            while len(acked) == n and time.monotonic() - back < 60:
                time.sleep(0.01)
            recoveries.append(time.monotonic() - back)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        log.close()
        proxy.stop()
    try:
        direct = f"{base}/{name}"
        with psycopg.connect(direct) as conn:
            stored = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
        db = Database(direct)
        intact = verify(db).ok
        db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(json.dumps({
        "cycles": CYCLES, "outage_seconds": OUTAGE_SECONDS, "writers": WRITERS,
        "recovery_seconds_max": round(max(recoveries), 3),
        "recovery_seconds_median": round(statistics.median(recoveries), 3),
        "acknowledged": len(acked), "acknowledged_lost": len(set(acked) - stored), "refused_503": refused[0],
        "slowest_503_seconds": round(slowest_refusal[0], 3), "chain_intact": intact,
        "target_recovery_seconds": 5,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
