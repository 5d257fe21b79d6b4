"""HTTP load for the benchmarks: keep-alive clients, latency at concurrency 1, throughput at N.

The default raw-socket client costs little CPU per request, so on a small machine the load
generator takes less CPU away from the server it measures than a client library would.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["Client", "Endpoint", "HttpxClient", "RawClient", "Tally", "latency_c1", "throughput"]

REQUEST_TIMEOUT_S = 30.0


# -- HTTP clients ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]
    ids: list[bytes] | None = field(default=None, compare=False, hash=False)
    """If set, the decision_id of every 200 answer is appended here (to look up in the log)."""


class Client(Protocol):
    ep: Endpoint

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
        if client.ep.ids is not None:  # a byte search: no JSON parsing in the load loop
            at = body.find(b'"decision_id":"')
            client.ep.ids.append(body[at + 15 : at + 51] if at >= 0 else b"missing")
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
