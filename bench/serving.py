"""Benchmark: Keel's decide route against a bare BentoML predict endpoint, side by side. Prints JSON.

Both servers run in the same run, each in its own subprocess on 127.0.0.1, started the same
way (`keel serve` and `python -m bench.bare_service`: one process, uvicorn over the service's
ASGI app, KEEL_SERVE_THREADS threads) and loaded from the same registered model version, so
both call the same booster on the same row: the contract's example invoice case, sent as
`{"cases": [case]}` to both. The bare endpoint parses the body, encodes the case with the
contract and calls `booster.predict`; Keel's decide route also authenticates, explains the
decided class (exact TreeSHAP), applies the policy and commits the decision to its SQLite log
(WAL, synchronous=FULL) before answering. Explanation and durable logging cannot be turned
off in Keel, so they are on in every measurement; the benchmark checks both.

Measured per endpoint and round: latency at concurrency 1 (`--requests` sequential requests on
one keep-alive connection after `--warmup`), then throughput at `--concurrency` (one thread and
one keep-alive connection each, for `--duration` seconds). Rounds alternate which endpoint goes
first; reported numbers are medians over `--repeats` rounds. Non-200 answers and failed
requests are counted as errors and excluded from latencies and throughput. Each phase also
records the server process's CPU time per answered request (from /proc): both servers are one
Python process, so at concurrency 16 each keeps about one CPU busy and throughput is close to
1 / (CPU time per request).

The load generator runs in this process on the same machine. The default raw-socket client
costs little CPU per request; `--client httpx` costs much more and can cap the bare endpoint's
throughput below what the server can do, which flatters the ratio.

Targets (from the issue): Keel's p50 <= 1.5x the bare endpoint's, throughput >= 0.6x.

    python -m bench.serving [--requests 1000] [--duration 5] [--concurrency 16] [--repeats 3]
                            [--keep-state DIR] [--threads 8] [--client raw|httpx]

Without --keep-state the state (models trained with `keel train`, the decision log) lives in a
temporary folder removed afterwards; with it, DIR is reused (models already registered there
are not retrained) and kept.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from keel.feature_defs.contract import MODEL_NAMES, load_contract

MODEL = "invoice_classification"
TARGET_P50_RATIO = 1.5
"""Keel's decide p50 at concurrency 1 may be at most this multiple of the bare endpoint's."""
TARGET_THROUGHPUT_RATIO = 0.6
"""Keel's throughput at concurrency 16 must be at least this fraction of the bare endpoint's."""
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0


def note(msg: str) -> None:
    print(f"[bench.serving] {msg}", file=sys.stderr, flush=True)


# -- HTTP clients ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]


class Client(Protocol):
    def post(self) -> tuple[int, bytes]: ...
    def close(self) -> None: ...


class RawClient:
    """One keep-alive HTTP/1.1 connection over a plain socket; the request bytes are prebuilt.

    Much cheaper per request than a full client library, so on a small machine the load
    generator takes less CPU away from the server it measures.
    """

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        head = [f"POST {ep.path} HTTP/1.1", f"Host: 127.0.0.1:{ep.port}", f"Content-Length: {len(ep.body)}"]
        head += [f"{k}: {v}" for k, v in ep.headers.items()]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + ep.body
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.ep.port), timeout=REQUEST_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return sock

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def post(self) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        try:
            sock.sendall(self.request)
            while b"\r\n\r\n" not in self.buf:
                self._fill(sock)
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip().lower()
            if "content-length" in headers:
                n = int(headers["content-length"])
                while len(self.buf) < n:
                    self._fill(sock)
                body, self.buf = self.buf[:n], self.buf[n:]
            elif headers.get("transfer-encoding") == "chunked":
                body = self._read_chunked(sock)
            else:
                raise ValueError("response without a length: not supported by the raw client")
            if headers.get("connection") == "close":
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill(sock)
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                self._fill(sock)
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2 :]
            if size == 0:
                while not (self.buf.startswith(b"\r\n") or b"\r\n\r\n" in self.buf):
                    self._fill(sock)  # trailers, rarely sent
                self.buf = (
                    self.buf.split(b"\r\n\r\n", 1)[1] if not self.buf.startswith(b"\r\n") else self.buf[2:]
                )
                return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
            self.buf = b""


class HttpxClient:
    def __init__(self, ep: Endpoint) -> None:
        import httpx

        self.ep = ep
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{ep.port}", timeout=REQUEST_TIMEOUT_S)

    def post(self) -> tuple[int, bytes]:
        r = self.client.post(self.ep.path, content=self.ep.body, headers=self.ep.headers)
        return r.status_code, r.content

    def close(self) -> None:
        self.client.close()


# -- measurements ------------------------------------------------------------------------------
@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def call(self, client: Client, keep: bool = True) -> None:
        t0 = time.perf_counter()
        try:
            status, body = client.post()
        except Exception as exc:  # a failed request is an error, never a crash of the benchmark
            self._error(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)
            return
        dt = time.perf_counter() - t0
        if status != 200:
            self._error(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
            return
        self.ok += 1
        if keep:
            self.latencies.append(dt)

    def _error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(what)


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 3) if values else None


def latency_c1(ep: Endpoint, make: Callable[[Endpoint], Client], n: int, warmup: int) -> dict[str, Any]:
    client = make(ep)
    warm, tally = Tally(), Tally()
    try:
        for _ in range(warmup):
            warm.call(client, keep=False)
        for _ in range(n):
            tally.call(client)
    finally:
        client.close()
    return {
        "p50_ms": _ms(tally.latencies, 50),
        "p90_ms": _ms(tally.latencies, 90),
        "p99_ms": _ms(tally.latencies, 99),
        "mean_ms": round(float(np.mean(tally.latencies)) * 1000, 3) if tally.latencies else None,
        "requests": n,
        "errors": tally.errors + warm.errors,
        "error_samples": tally.error_samples + warm.error_samples,
        "ok_total": tally.ok + warm.ok,
    }


def throughput(
    ep: Endpoint, make: Callable[[Endpoint], Client], concurrency: int, duration: float, cap: int
) -> dict[str, Any]:
    """`concurrency` threads, each with its own keep-alive connection, for `duration` seconds."""
    tallies = [Tally() for _ in range(concurrency)]
    warm = [Tally() for _ in range(concurrency)]
    clients = [make(ep) for _ in range(concurrency)]
    per_thread_cap = max(1, cap // concurrency)
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()
    clock: dict[str, float] = {}

    def worker(i: int) -> None:
        c, t = clients[i], tallies[i]
        for _ in range(3):  # open the connection and warm the path before the clock starts
            warm[i].call(c, keep=False)
        ready.wait()
        go.wait()
        deadline = clock["deadline"]
        while time.perf_counter() < deadline and t.ok + t.errors < per_thread_cap:
            t.call(c)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for th in threads:
        th.start()
    try:
        ready.wait(timeout=120)  # every thread warmed up and connected
        start = time.perf_counter()
        clock["deadline"] = start + duration
        go.set()
        for th in threads:
            th.join(timeout=duration + REQUEST_TIMEOUT_S + 5)
        elapsed = time.perf_counter() - start
    finally:
        go.set()
        for c in clients:
            c.close()
    ok = sum(t.ok for t in tallies)
    lat = [x for t in tallies for x in t.latencies]
    samples = [s for t in tallies + warm for s in t.error_samples][:3]
    return {
        "throughput_rps": round(ok / elapsed, 1) if elapsed > 0 else None,
        "completed": ok,
        "elapsed_s": round(elapsed, 3),
        "errors": sum(t.errors for t in tallies + warm),
        "error_samples": samples,
        "p50_ms": _ms(lat, 50),
        "p99_ms": _ms(lat, 99),
        "ok_total": ok + sum(t.ok for t in warm),
    }


# -- servers -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess on 127.0.0.1; always stopped with terminate, then kill after a timeout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.name, self.argv, self.env, self.log_path, self.port = name, argv, env, log_path, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Server:
        self.started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def is_ready(self) -> bool:
        """True once /readyz answers 200; raises if the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        return False

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=STOP_TIMEOUT_S)
        return p.returncode


def wait_ready(servers: list[Server], timeout: float = READY_TIMEOUT_S) -> dict[str, float]:
    """Poll every server until all are ready; seconds from each one's start to its first 200."""
    ready: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(ready) < len(servers):
        for s in servers:
            if s.name not in ready and s.is_ready():
                ready[s.name] = round(time.perf_counter() - s.started, 2)
        if time.perf_counter() > deadline:
            late = [s for s in servers if s.name not in ready]
            raise RuntimeError(f"{late[0].name} not ready after {timeout:.0f} s:\n{late[0].log_tail()}")
        time.sleep(0.1)
    return ready


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Self-contained state: MLflow store and decision log inside KEEL_HOME (SQLite).
    for var in ("MLFLOW_TRACKING_URI", "KEEL_DECISION_LOG_URL"):
        env.pop(var, None)
    env["KEEL_HOME"] = str(home)
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def keel_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "keel.cli", *args]


def prepare_state(home: Path, invoice_rows: int, other_rows: int, work: Path) -> str:
    """Train (unless registered already) and return a fresh decide key."""
    env = base_env(home)
    log = work / "prepare.log"
    for name in MODEL_NAMES:
        rows = invoice_rows if name == MODEL else other_rows
        note(f"keel train {name} --rows {rows} --if-missing")
        with open(log, "ab") as out:
            subprocess.run(
                keel_cli("train", name, "--rows", str(rows), "--if-missing"),
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=True,
                timeout=1800,
            )  # fmt: skip
    key_name = f"bench-{os.getpid()}-{int(time.time() * 1000)}"
    done = subprocess.run(
        keel_cli("keys", "add", key_name, "--role", "decide"),
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("export KEEL_KEY="):
            return line.split("=", 1)[1].strip()
    raise RuntimeError(f"no key in `keel keys add` output: {done.stdout!r}")


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, all threads (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure_cpu(pid: int, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a phase and add the server's CPU time per answered request (and CPUs kept busy)."""
    c0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    res = phase()
    c1, wall = proc_cpu_seconds(pid), time.perf_counter() - t0
    if c0 is not None and c1 is not None and res["ok_total"]:
        res["server_cpu_ms_per_request"] = round((c1 - c0) / res["ok_total"] * 1000, 3)
        res["server_cpus_busy"] = round((c1 - c0) / wall, 2)
    return res


def filesystem_of(path: Path) -> str:
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def decision_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])
    finally:
        conn.close()


def log_pragmas(db: Path) -> dict[str, Any]:
    """What Keel's own connection code sets (serving.database.Database.connect)."""
    from keel.serving.database import Database

    conn = Database(f"sqlite:///{db}").connect()
    try:
        sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()
    return {
        "journal_mode": mode,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, sync),
    }


def check_answers(keel: Endpoint, bare: Endpoint, make: Callable[[Endpoint], Client]) -> dict[str, Any]:
    """One request each: both 200, same model version, same decided class, explanation present."""
    out: dict[str, Any] = {}
    for ep in (keel, bare):
        c = make(ep)
        try:
            status, body = c.post()
        finally:
            c.close()
        if status != 200:
            raise RuntimeError(f"{ep.name}: HTTP {status}: {body[:500]!r}")
        out[ep.name] = json.loads(body)
    d = out["keel"]["decisions"][0]
    probs = out["bare"]["probabilities"][0]
    bare_class = max(probs, key=probs.get)
    keel_class = (d.get("explanation") or {}).get("class")
    if d.get("explanation_status") != "exact" or not d.get("explanation"):
        raise RuntimeError(f"keel answered without an exact explanation: {d.get('explanation_status')}")
    if str(d["versions"]["model_version"]) != str(out["bare"]["model_version"]):
        raise RuntimeError("keel and the bare endpoint serve different model versions")
    return {
        "model_version": out["bare"]["model_version"],
        "same_model_version": True,
        "same_decided_class": keel_class == bare_class,
        "decided_class": bare_class,
        "keel_explanation_status": d["explanation_status"],
        "keel_outcome": d.get("outcome"),
        "keel_abstained": d.get("abstained"),
        "keel_route": d.get("route"),
        "keel_response_bytes": len(json.dumps(out["keel"])),
        "bare_response_bytes": len(json.dumps(out["bare"])),
    }


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 3) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# -- the run -----------------------------------------------------------------------------------
@contextlib.contextmanager
def state_dir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="keel-bench-state-") as tmp:
        yield Path(tmp)


def run(args: argparse.Namespace) -> dict[str, Any]:
    make: Callable[[Endpoint], Client] = RawClient if args.client == "raw" else HttpxClient
    case = load_contract(MODEL).example_case
    body = json.dumps({"cases": [case]}, separators=(",", ":")).encode()
    with state_dir(args.keep_state) as home, tempfile.TemporaryDirectory(prefix="keel-bench-run-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        key = prepare_state(home, args.invoice_rows, args.other_rows, work)
        prepare_s = time.perf_counter() - t0
        servers: list[Server] = []
        try:
            envs = {}
            for name in ("keel", "bare"):
                env = base_env(home)
                env["KEEL_SERVE_THREADS"] = str(args.threads)
                env["BENCH_BARE_ENCODE"] = args.bare_encode
                for var, sub in (("PROMETHEUS_MULTIPROC_DIR", "prom"), ("BENTOML_HOME", "bentoml")):
                    d = work / f"{name}-{sub}"
                    d.mkdir()
                    env[var] = str(d)
                envs[name] = env
            kport, bport = free_port(), free_port()
            servers.append(
                Server(
                    "keel",
                    keel_cli("serve", "--host", "127.0.0.1", "--port", str(kport)),
                    envs["keel"],
                    work / "keel.log",
                    kport,
                ).start()
            )
            servers.append(
                Server(
                    "bare",
                    [sys.executable, "-m", "bench.bare_service", "--host", "127.0.0.1", "--port", str(bport)],
                    envs["bare"],
                    work / "bare.log",
                    bport,
                ).start()
            )
            ready = wait_ready(servers)
            pids = {s.name: s.proc.pid for s in servers if s.proc is not None}
            load_before = os.getloadavg()
            note(f"servers ready: {ready}")
            json_ct = {"Content-Type": "application/json"}
            keel = Endpoint(
                "keel", kport, f"/v1/{MODEL}/decide", body, {**json_ct, "Authorization": f"Bearer {key}"}
            )
            bare = Endpoint("bare", bport, "/v1/predict", body, json_ct)
            check = check_answers(keel, bare, make)
            info_client = RawClient(Endpoint("bare-info", bport, "/v1/info", b"{}", json_ct))
            try:
                info = json.loads(info_client.post()[1])
            finally:
                info_client.close()
            db = home / "decisions.db"
            rows_before = decision_rows(db)
            keel_ok = 0
            rounds: list[dict[str, Any]] = []
            for r in range(args.repeats):
                order = (bare, keel) if r % 2 == 0 else (keel, bare)
                rnd: dict[str, Any] = {"round": r + 1, "order": [e.name for e in order]}
                for ep in order:
                    note(f"round {r + 1}: {ep.name} latency, {args.requests} requests at concurrency 1")
                    res = measure_cpu(
                        pids[ep.name], partial(latency_c1, ep, make, args.requests, args.warmup)
                    )
                    rnd.setdefault(ep.name, {})["latency_c1"] = res
                    ok = res.pop("ok_total")
                    keel_ok += ok if ep is keel else 0
                for ep in order:
                    note(f"round {r + 1}: {ep.name} throughput, {args.duration} s at c{args.concurrency}")
                    phase = partial(throughput, ep, make, args.concurrency, args.duration, args.max_requests)
                    res = measure_cpu(pids[ep.name], phase)
                    rnd[ep.name][f"throughput_c{args.concurrency}"] = res
                    ok = res.pop("ok_total")
                    keel_ok += ok if ep is keel else 0
                tk = f"throughput_c{args.concurrency}"
                rnd["p50_keel_over_bare"] = _ratio(
                    rnd["keel"]["latency_c1"]["p50_ms"], rnd["bare"]["latency_c1"]["p50_ms"]
                )
                rnd["throughput_keel_over_bare"] = _ratio(
                    rnd["keel"][tk]["throughput_rps"], rnd["bare"][tk]["throughput_rps"]
                )
                rounds.append(rnd)
            rows_logged = decision_rows(db) - rows_before
            load = {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            }
            pragmas = log_pragmas(db)
        finally:
            stopped = {s.name: s.stop() for s in servers}
            note(f"servers stopped: {stopped}")
    return report(args, rounds, check, info, ready, pragmas, rows_logged, keel_ok, prepare_s, home, load)


def report(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    check: dict[str, Any],
    info: dict[str, Any],
    ready: dict[str, float],
    pragmas: dict[str, Any],
    rows_logged: int,
    keel_ok: int,
    prepare_s: float,
    home: Path,
    load: dict[str, list[float]],
) -> dict[str, Any]:
    ck = f"c{args.concurrency}"
    endpoints: dict[str, Any] = {}
    for name in ("bare", "keel"):
        c1 = [r[name]["latency_c1"] for r in rounds]
        cn = [r[name][f"throughput_{ck}"] for r in rounds]
        endpoints[name] = {
            "p50_ms": _median([x["p50_ms"] for x in c1]),
            "p99_ms": _median([x["p99_ms"] for x in c1]),
            "throughput_rps": _median([x["throughput_rps"] for x in cn]),
            "errors": sum(x["errors"] for x in c1 + cn),
            "error_samples": [s for x in c1 + cn for s in x["error_samples"]][:3],
            "throughput_phase_p50_ms": _median([x["p50_ms"] for x in cn]),
            "throughput_phase_p99_ms": _median([x["p99_ms"] for x in cn]),
            "server_cpu_ms_per_request_latency_phase": _median(
                [x.get("server_cpu_ms_per_request") for x in c1]
            ),
            "server_cpu_ms_per_request_throughput_phase": _median(
                [x.get("server_cpu_ms_per_request") for x in cn]
            ),
            "server_cpus_busy_throughput_phase": _median([x.get("server_cpus_busy") for x in cn]),
        }
    p50_ratio = _ratio(endpoints["keel"]["p50_ms"], endpoints["bare"]["p50_ms"])
    thr_ratio = _ratio(endpoints["keel"]["throughput_rps"], endpoints["bare"]["throughput_rps"])
    return {
        "benchmark": "bench.serving: Keel decide route vs bare BentoML booster.predict endpoint",
        "endpoints": endpoints,
        "ratios": {
            "p50_keel_over_bare": p50_ratio,
            "p99_keel_over_bare": _ratio(endpoints["keel"]["p99_ms"], endpoints["bare"]["p99_ms"]),
            "throughput_keel_over_bare": thr_ratio,
            "per_round_p50_keel_over_bare": [r["p50_keel_over_bare"] for r in rounds],
            "per_round_throughput_keel_over_bare": [r["throughput_keel_over_bare"] for r in rounds],
        },
        "targets": {
            "p50_keel_over_bare_at_most": TARGET_P50_RATIO,
            "throughput_keel_over_bare_at_least": TARGET_THROUGHPUT_RATIO,
            "p50_met": p50_ratio is not None and p50_ratio <= TARGET_P50_RATIO,
            "throughput_met": thr_ratio is not None and thr_ratio >= TARGET_THROUGHPUT_RATIO,
        },
        "keel_features": {
            "explanation": "on: exact TreeSHAP of the decided class computed for every decision "
            f"(explanation_status={check['keel_explanation_status']!r} checked)",
            "durable_logging": "on: SQLite decision log "
            f"(journal_mode={pragmas['journal_mode']}, synchronous={pragmas['synchronous']}), each decision "
            "committed (group commit, hash chained) before its response",
            "decisions_logged_during_run": rows_logged,
            "keel_200s_during_run": keel_ok,
            "every_200_logged": rows_logged == keel_ok,
            "auth": "on (Bearer key, decide role)",
        },
        "settings": {
            "model": MODEL,
            "model_version": check["model_version"],
            "same_model_version": check["same_model_version"],
            "booster_sha256": info.get("booster_sha256"),
            "booster_trees": info.get("booster_trees"),
            "invoice_train_rows": info.get("train_rows"),
            "invoice_train_rows_requested": args.invoice_rows,
            "other_models_train_rows_requested": args.other_rows,
            "case": 'contract example_case of invoice_classification, body {"cases": [case]} to both',
            "same_decided_class": check["same_decided_class"],
            "keel_answer": {k: check[k] for k in ("keel_outcome", "keel_abstained", "keel_route")},
            "response_bytes": {"keel": check["keel_response_bytes"], "bare": check["bare_response_bytes"]},
            "bare_per_request": (
                "parse JSON body (pydantic) -> contract.validate_records([case]) -> "
                "booster.predict(row, num_threads=1) -> class probabilities"
                if args.bare_encode == "per_request"
                else "parse JSON body (pydantic) -> booster.predict(row encoded at startup, num_threads=1)"
            ),
            "keel_per_request": "auth -> body limit -> validate -> predict -> TreeSHAP of the decided class "
            "-> policy -> durable log commit -> response",
            "servers": "one process each: uvicorn over Service.to_asgi(is_main=True), workers=1, "
            "BentoML metrics middleware off in both",
            "threads": args.threads,
            "requests_at_c1": args.requests,
            "warmup_at_c1": args.warmup,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "max_requests_per_throughput_phase": args.max_requests,
            "repeats": args.repeats,
            "aggregation": "median over repeats; rounds alternate which endpoint goes first",
            "client": f"{args.client}: one keep-alive HTTP/1.1 connection per client thread "
            "(bench process, same machine)",
            "ready_seconds": ready,
            "prepare_seconds": round(prepare_s, 1),
            "state": {"kept": str(home) if args.keep_state else None, "filesystem": filesystem_of(home)},
            "machine": {
                "cpus": os.cpu_count(),
                "loadavg_1_5_15": load,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
        },
        "rounds": rounds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="requests at concurrency 1 per round")
    p.add_argument("--warmup", type=int, default=100, help="warm-up requests before each latency phase")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per throughput phase")
    p.add_argument("--concurrency", type=int, default=16, help="client threads in the throughput phase")
    p.add_argument("--repeats", type=int, default=3, help="rounds (each measures both endpoints)")
    p.add_argument("--max-requests", type=int, default=200_000, help="cap on requests per throughput phase")
    p.add_argument("--keep-state", metavar="DIR", help="state folder to reuse and keep (default: temp)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("KEEL_SERVE_THREADS", "8")))
    p.add_argument("--invoice-rows", type=int, default=40_000, help="training rows of the invoice model")
    p.add_argument("--other-rows", type=int, default=5_000, help="training rows of the two other models")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw")
    p.add_argument("--bare-encode", choices=("per_request", "startup"), default="per_request")
    args = p.parse_args(argv)
    for name in ("requests", "concurrency", "repeats", "max_requests", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.duration <= 600:
        p.error("--duration must be in (0, 600] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM to the benchmark still runs the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
