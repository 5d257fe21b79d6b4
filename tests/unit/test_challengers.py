"""The canary split: deterministic per case, by case_id or content, and close to its share."""

from __future__ import annotations

from scipy.stats import binom

from keel.serving.challengers import canary_mask, in_canary


def test_the_canary_share_is_deterministic_and_near_its_setting() -> None:
    cases = [{"case_id": f"c-{i}", "amount": i} for i in range(20_000)]
    mask = canary_mask("routing", cases, 0.1)
    # A fixed hash of fixed ids: the count is a property of the hash, not chance, but it must
    # look like Binomial(n, 0.1) (99.9% band) for the split to be unbiased.
    lo, hi = binom.ppf([0.0005, 0.9995], len(cases), 0.1)
    assert lo <= mask.sum() <= hi, mask.sum()
    assert (canary_mask("routing", cases, 0.1) == mask).all()
    # Only the case_id decides: the same id with other fields meets the same version.
    assert in_canary("routing", {"case_id": "c-7", "amount": -1}, 0.1) == bool(mask[7])
    # A larger share keeps every case the smaller one had (moving the dial only adds cases).
    assert (canary_mask("routing", cases, 0.2) | ~mask).all()
    # Another model splits independently.
    assert (canary_mask("discount_band", cases, 0.1) != mask).any()


def test_cases_without_a_case_id_are_split_by_their_content() -> None:
    a, b = {"amount": 10.5, "channel": "edi"}, {"channel": "edi", "amount": 10.5}
    assert in_canary("routing", a, 0.5) == in_canary("routing", b, 0.5)  # key order does not matter
    others = [{"amount": float(i)} for i in range(2000)]
    share = canary_mask("routing", others, 0.3).mean()
    assert abs(share - 0.3) < 0.05
