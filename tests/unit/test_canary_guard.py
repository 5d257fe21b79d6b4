"""The canary rollback rule: enough reviews on both sides, worse beyond the tolerance, and sure of it."""

from __future__ import annotations

from typing import Any

from keel.cli.canary_guard import judge
from keel.monitoring.challenger_compare import _difference, _rate
from keel.training.settings import PromotionSettings


def _canary(champ: tuple[int, int], canary: tuple[int, int]) -> dict[str, Any]:
    a, b = _rate(*champ), _rate(*canary)
    return {"overall": {"champion": {"override_rate": a}, "challenger": {"override_rate": b},
                        "override_difference": _difference(a, b)}}  # fmt: skip


def test_a_clearly_worse_canary_is_rolled_back() -> None:
    j = judge(_canary((5, 200), (40, 200)), PromotionSettings())
    assert j.rollback and "exceeds" in j.reason and "20.0% of 200" in j.reason


def test_too_few_reviews_or_noise_keep_the_canary() -> None:
    s = PromotionSettings()
    assert not judge(_canary((0, 40), (30, 40)), s).rollback  # fewer than min_reviewed_cases
    assert not judge(_canary((10, 200), (11, 200)), s).rollback  # within the tolerance
    # Worse by more than the tolerance on paper, but the interval reaches below zero.
    noisy = judge(_canary((3, 50), (7, 50)), s)
    assert not noisy.rollback and "within" in noisy.reason
