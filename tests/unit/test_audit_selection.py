"""Audit selection (keel.decision_log.audit_plans): keyed draws per decision_id, at the plan's rates."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from pathlib import Path

from scipy.stats import binom

from keel.decision_log.audit_plans import (
    AuditPlan,
    AuditSettings,
    PlanBook,
    append_plan,
    default_plan,
    draw,
    plan_rows,
)
from keel.decision_log.database import Database
from keel.decision_log.log_key import NO_KEYS
from keel.serving.decision_record import with_audit

SEED = "ab" * 32
_IDS = random.Random(23)


def _id() -> str:
    """A UUID4 like the server makes, from a fixed stream: the test's draws are the same every run."""
    return str(uuid.UUID(int=_IDS.getrandbits(128), version=4))


def _plan(probabilities: dict[str, float], cross: float, default: float = 0.05) -> AuditPlan:
    return AuditPlan("routing", 3, "region", probabilities, default, cross, SEED)


def _within(count: int, n: int, p: float) -> bool:
    """`count` of `n` Bernoulli(p) draws lies inside the central 99.8% binomial range."""
    return float(binom.ppf(0.001, n, p)) <= count <= float(binom.ppf(0.999, n, p))


def test_selection_is_reproducible_from_the_seed_and_the_decision_id() -> None:
    plan = _plan({"EMEA": 0.5}, 0.5)
    ids = [_id() for _ in range(200)]
    first = [plan.select(i, {"region": "EMEA"}) for i in ids]
    assert first == [plan.select(i, {"region": "EMEA"}) for i in ids]
    # Anyone holding the seed recomputes the draw from its definition.
    for i, audit in zip(ids, first, strict=True):
        mac = hmac.new(bytes.fromhex(SEED), f"select\n{i}".encode(), hashlib.sha256).digest()
        assert audit["selected"] == (int.from_bytes(mac[:8], "big") / 2.0**64 < 0.5)
        assert audit["plan"] == 3 and audit["probability"] == 0.5
        assert (audit["pool"] is None) == (not audit["selected"])
    other = AuditPlan("routing", 3, "region", {"EMEA": 0.5}, 0.05, 0.5, "cd" * 32)
    assert [other.select(i, {"region": "EMEA"}) for i in ids] != first  # another seed, other picks


def test_inclusion_rate_and_cross_share_match_the_plan() -> None:
    plan = _plan({"EMEA": 0.3, "APAC": 0.02}, 0.25, default=0.1)
    n = 20000
    for region, p in (("EMEA", 0.3), ("APAC", 0.02), ("LATAM", 0.1), (None, 0.1)):
        audits = [plan.select(_id(), {"region": region}) for _ in range(n)]
        selected = [a for a in audits if a["selected"]]
        assert all(a["probability"] == p for a in audits)
        assert _within(len(selected), n, p), (region, len(selected))
        cross = sum(a["pool"] == "cross" for a in selected)
        assert _within(cross, len(selected), 0.25), (region, cross, len(selected))
        assert {a["pool"] for a in selected} <= {"local", "cross"}


def test_draws_are_uniform_and_independent_of_each_other() -> None:
    ids = [_id() for _ in range(20000)]
    select = [draw(SEED, "select", i) < 0.5 for i in ids]
    pool = [draw(SEED, "pool", i) < 0.5 for i in ids]
    both = sum(s and p for s, p in zip(select, pool, strict=True))
    assert _within(sum(select), len(ids), 0.5)
    assert _within(both, sum(select), 0.5)  # the pool draw knows nothing of the selection draw


def test_abstentions_are_not_audited_and_records_carry_the_plan_version() -> None:
    plan = _plan({}, 0.5, default=1.0)
    records = [
        {"decision_id": _id(), "abstained": True, "inputs": {"region": "EMEA"}},
        {"decision_id": _id(), "abstained": False, "inputs": {"region": "EMEA"}},
    ]
    with_audit(records, plan)
    assert records[0]["audit"] == {"selected": False, "probability": 0.0, "pool": None, "plan": 3}
    assert records[1]["audit"]["selected"] is True and records[1]["audit"]["probability"] == 1.0


def test_plans_are_appended_and_the_latest_is_current(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    db.create_schema()
    book = PlanBook(AuditSettings(default_probability=0.07, cross_share=0.3))
    book.refresh(db)
    fallback = book.plan("routing")
    assert (fallback.version, fallback.default_probability, fallback.cross_share) == (0, 0.07, 0.3)
    # Replicas agree: the default seed comes from the log's secret, not from the process.
    again = PlanBook(AuditSettings(default_probability=0.07, cross_share=0.3))
    again.refresh(db)
    assert again.plan("routing").seed == fallback.seed != again.plan("invoice_classification").seed
    first = append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.2}, 0.05, 0.2, "ana", "first")
    second = append_plan(db, NO_KEYS, "routing", "region", {"EMEA": 0.4}, 0.05, 0.1, "ana", "more")
    assert (first.version, second.version) == (1, 2) and first.seed != second.seed
    book.refresh(db)
    assert book.plan("routing").probabilities == {"EMEA": 0.4} and book.plan("routing").version == 2
    rows = plan_rows(db, "routing")
    assert [r["version"] for r in rows] == [1, 2] and rows[1]["reason"] == "more"
    assert default_plan("routing", "00" * 32, AuditSettings()).version == 0
    db.dispose()
