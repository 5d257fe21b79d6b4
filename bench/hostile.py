"""Benchmark: does one kind of request stall the others? Prints JSON.

Starts `keel serve` on 127.0.0.1 (state as in bench.serving: trained unless already there),
then for `--duration` seconds keeps `--senders` connections each sending a decide request of
one case with 150,000 unknown fields (about 2 MB, under the body limit) back to back, while
one more connection polls /readyz. Reports /readyz latency (p50, p99, max; target: max under
100 ms) and what the flood got back (every answer a 422 listing 100 errors and counting all).
Also sends one case with a 5,000-digit integer (must be a 422). The target counts as met only
if the flood was answered with 422s throughout (a 404 from a model that is not served, say,
would measure nothing) and the long integer got its 422.

    python -m bench.hostile [--keep-state DIR] [--duration 10] [--senders 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.http_load import Endpoint, RawClient
from bench.servers import Server, base_env, free_port, keel_cli, measure_cpu, wait_ready
from bench.serving import MODEL, prepare_state, state_dir
from keel.feature_defs.contract import load_contract

FIELDS = 150_000
READYZ_TARGET_MS = 100.0


def flood_body() -> bytes:
    case = {f"x{i:06d}": 0 for i in range(FIELDS)}
    return json.dumps({"cases": [case]}, separators=(",", ":")).encode()


def long_integer_body() -> str:
    """The model's example case with its first integer field set to a 5,000-digit integer."""
    contract = load_contract(MODEL)
    field = next(f.name for f in contract.fields if f.type == "int")
    text = json.dumps({"cases": [{**contract.example_case, field: 0}]}, separators=(",", ":"))
    return text.replace(f'"{field}":0', f'"{field}":' + "9" * 5000, 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    body = flood_body()
    with state_dir(args.keep_state) as home, tempfile.TemporaryDirectory(prefix="keel-bench-hostile-") as tmp:
        work = Path(tmp)
        key = prepare_state(home, args.rows, args.rows, work)
        env = base_env(home)
        for var, sub in (("PROMETHEUS_MULTIPROC_DIR", "prom"), ("BENTOML_HOME", "bentoml")):
            (work / sub).mkdir()
            env[var] = str(work / sub)
        port = free_port()
        server = Server("keel", keel_cli("serve", "--port", str(port)), env, work / "keel.log", port).start()
        try:
            wait_ready([server])
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            flood = Endpoint("flood", port, f"/v1/{MODEL}/decide", body, headers)
            statuses: list[int] = []
            counts: list[tuple[int, int]] = []
            stop = threading.Event()

            def sender() -> None:
                client = RawClient(flood)
                try:
                    while not stop.is_set():
                        status, answer = client.post()
                        statuses.append(status)
                        if status == 422:
                            parsed = json.loads(answer)
                            counts.append((parsed["error_count"], len(parsed["errors"])))
                finally:
                    client.close()

            probe = RawClient(Endpoint("readyz", port, "/readyz", b"", {}))
            probe.request = f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            latencies: list[float] = []
            probe_errors = 0
            quiet: list[float] = []  # the same probe with no flood: the machine's own noise
            quiet_end = time.perf_counter() + min(3.0, args.duration)
            while time.perf_counter() < quiet_end:
                t0 = time.perf_counter()
                probe.post()
                quiet.append(time.perf_counter() - t0)
                time.sleep(0.005)

            def phase() -> dict[str, Any]:
                nonlocal probe_errors
                threads = [threading.Thread(target=sender, daemon=True) for _ in range(args.senders)]
                for t in threads:
                    t.start()
                deadline = time.perf_counter() + args.duration
                while time.perf_counter() < deadline and len(latencies) < 200_000:
                    t0 = time.perf_counter()
                    status, _ = probe.post()
                    latencies.append(time.perf_counter() - t0)
                    probe_errors += status != 200
                    time.sleep(0.005)
                stop.set()
                for t in threads:
                    t.join(timeout=60)
                return {"ok_total": len(statuses)}

            cpu = measure_cpu(server.proc.pid if server.proc else 0, phase)
            probe.close()
            digits = long_integer_body()
            big = RawClient(Endpoint("digits", port, f"/v1/{MODEL}/decide", digits.encode(), headers))
            big_status = big.post()[0]
            big.close()
        finally:
            server.stop()
    ms = np.asarray(latencies) * 1000
    quiet_ms = np.asarray(quiet) * 1000
    return {
        "benchmark": "bench.hostile: /readyz while 150,000-unknown-field cases flood the decide route",
        "model": MODEL,
        "readyz": {
            "probes": len(latencies),
            "errors": probe_errors,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3),
            "target_max_ms": READYZ_TARGET_MS,
            "target_met": bool(ms.max() < READYZ_TARGET_MS)
            and probe_errors == 0
            and bool(statuses)
            and set(statuses) == {422}
            and big_status == 422,
            "without_flood": {
                "probes": len(quiet),
                "p50_ms": round(float(np.percentile(quiet_ms, 50)), 3),
                "max_ms": round(float(quiet_ms.max()), 3),
            },
        },
        "flood": {
            "senders": args.senders,
            "duration_s": args.duration,
            "body_bytes": len(body),
            "requests": len(statuses),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "error_counts_reported": sorted({c for c, _ in counts}),
            "errors_listed": sorted({n for _, n in counts}),
            "server_cpu_ms_per_request": cpu.get("server_cpu_ms_per_request"),
        },
        "integer_of_5000_digits_status": big_status,
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n")[0])
    p.add_argument("--keep-state", metavar="DIR", help="state folder to reuse and keep (default: temp)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of flood")
    p.add_argument("--senders", type=int, default=4, help="connections sending the flood at once")
    p.add_argument("--rows", type=int, default=3000, help="training rows if models must be trained")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 300 or not 1 <= args.senders <= 64:
        p.error("--duration in (0, 300] and --senders in [1, 64]")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
