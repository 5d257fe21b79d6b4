"""Per-key request rate limits: a token bucket per key name, checked by the gate after auth.

The limit itself is the key's `rate_per_second` (stored with the key by the key-store owner);
a key without one, or with 0, is not limited. Buckets live in this process's memory: each
replica enforces the rate on the requests it receives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from keel.errors import KeelError

__all__ = ["RateLimited", "RateLimiter", "key_rate_per_second"]


class RateLimited(KeelError):
    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(max(1, math.ceil(self.retry_after))).encode())]


def key_rate_per_second(key: Any) -> float | None:
    """The one place the gate reads a key's limit: its `rate_per_second` attribute, if set and > 0."""
    rate = getattr(key, "rate_per_second", None)
    return float(rate) if rate else None


class RateLimiter:
    """Token buckets of `rate` tokens per second and a burst of one second's worth (at least 1)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, updated)

    def check(self, name: str, rate: float | None) -> None:
        """Take one token for `name`, or raise RateLimited with the seconds until one is back."""
        if rate is None:
            return
        now, burst = self.clock(), max(1.0, rate)
        tokens, updated = self._buckets.get(name, (burst, now))
        tokens = min(burst, tokens + (now - updated) * rate)
        if tokens < 1.0:
            self._buckets[name] = (tokens, now)
            raise RateLimited(f"key {name!r} is over its {rate:g} requests per second", (1.0 - tokens) / rate)
        if len(self._buckets) >= self.max_keys and name not in self._buckets:
            self._buckets.clear()  # bounded memory; forgetting buckets only grants a fresh burst
        self._buckets[name] = (tokens - 1.0, now)
