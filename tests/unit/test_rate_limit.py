"""Per-key token buckets: a burst of one second's worth, then `rate` per second, Retry-After."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from keel.serving.rate_limit import RateLimited, RateLimiter, key_rate_per_second


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_429_with_retry_after_then_tokens_come_back() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    for _ in range(5):
        limiter.check("k", 5.0)
    with pytest.raises(RateLimited) as caught:
        limiter.check("k", 5.0)
    assert caught.value.status_code == 429 and caught.value.headers == [(b"retry-after", b"1")]
    assert caught.value.retry_after == pytest.approx(0.2)
    limiter.check("other", 5.0)  # buckets are per key
    clock.now += 0.2
    limiter.check("k", 5.0)
    with pytest.raises(RateLimited):
        limiter.check("k", 5.0)


def test_slow_rates_say_how_long_to_wait_and_unlimited_keys_pass() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limiter.check("slow", 0.1)
    with pytest.raises(RateLimited) as caught:
        limiter.check("slow", 0.1)
    assert caught.value.headers == [(b"retry-after", b"10")]
    for _ in range(1000):
        limiter.check("free", None)


@dataclass(frozen=True)
class KeyWithRate:
    name: str
    rate_per_second: float | None


def test_the_rate_comes_from_the_keys_rate_per_second() -> None:
    assert key_rate_per_second(KeyWithRate("a", 2.5)) == 2.5
    assert key_rate_per_second(KeyWithRate("a", 0)) is None
    assert key_rate_per_second(KeyWithRate("a", None)) is None
    assert key_rate_per_second(object()) is None
