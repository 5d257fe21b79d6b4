"""Simulated workflow traffic and reviewer feedback against a running Keel service (`keel simulate`).

Cases come from `training.generators`, so the true label of every case is known; a simulated
reviewer turns it into feedback. The reviewer logic is the pure function `reviewer_verdicts`,
the HTTP side is a thin loop around it that never raises for a failed request (it counts it),
except when the very first request shows that nothing can work.

Reviewers honour each decision's `audit`: a case Keel selected for audit is always reviewed, by
the pool it names (`local`: a reviewer of the case's region; `cross`: one of another region),
and the feedback says which (`reviewer_pool`, `reviewer_segment`); other decided cases are
reviewed at the feedback share, by local reviewers, as before. Two scenarios exist only here,
on unshifted data: `review_practice` (one region's local reviewers override far more; cross
reviewers judge by the true rule) and `rule_change` (the true outcome changes for 30% of one
region's cases; every reviewer sees the new truth, the model does not). A third,
`reviewer_disagreement`, makes one region's reviewers erratic (on `override_rate` of the decided
cases they review they pick another class at random, each reviewer on their own) and submits a
share of reviewed cases again under the same case_id (`duplicate_share`, 0.5 by default there),
each resubmission reviewed by another reviewer: `keel consistency` then sees that region's
reviewers agree less with each other than elsewhere.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import pandas as pd

from keel.errors import FieldError, InvalidInput, KeelError
from keel.feature_defs.contract import MODEL_NAMES, Contract, load_contract
from keel.serving.batch_io import json_value
from keel.training.generators import SCENARIOS, generate

REVIEWER_ACCURACY = 0.98
REVIEWERS_PER_REGION = 4
ORDERED_MODELS = frozenset({"discount_band"})  # classes are steps on one scale
MAX_RETRIES = 3
BACKOFF_SECONDS = 0.25  # doubled per retry: 0.25 + 0.5 + 1 s at most per request
REVIEW_PRACTICE = "review_practice"
RULE_CHANGE = "rule_change"
REVIEWER_DISAGREEMENT = "reviewer_disagreement"
SIMULATOR_SCENARIOS: tuple[str, ...] = (*SCENARIOS, REVIEW_PRACTICE, RULE_CHANGE, REVIEWER_DISAGREEMENT)
"""The generators' scenarios and three that only reviewers (practice, disagreement) or the truth
(rule) change."""
PRACTICE_SCENARIOS = frozenset({"segment_overrides", REVIEW_PRACTICE, REVIEWER_DISAGREEMENT})
DISAGREEMENT_DUPLICATES = 0.5
"""Share of reviewed cases submitted again under `reviewer_disagreement` unless set."""
DUPLICATE_STREAM = 0x64757065  # "dupe": resubmissions draw apart, so other runs' draws stay as they were
RULE_CHANGE_SHARE = 0.3
RULE_CHANGE_STREAM = 0x72756C65  # "rule": its own random stream, so other draws stay as they were


class SimulationError(KeelError):
    """The service cannot be used at all (unreachable, or the key is refused)."""

    status_code = 400


@dataclass(frozen=True)
class SimulationConfig:
    url: str = "http://127.0.0.1:3000"
    key: str = ""
    models: tuple[str, ...] = MODEL_NAMES
    cases: int = 500  # cases per model
    scenario: str = "none"  # one of SIMULATOR_SCENARIOS
    batch_size: int = 20
    rate: float = 0.0  # max requests/s over decide and feedback calls; 0 = as fast as possible
    duration: float = 0.0  # stop after this many seconds if > 0
    feedback_share: float = 0.3  # share of decided cases a reviewer looks at (abstentions: all)
    override_region: str = "EMEA"  # segment_overrides, review_practice, rule_change: which region
    override_rate: float = 0.35  # practice: on which share of their reviewed decided cases
    duplicate_share: float | None = None  # reviewed cases submitted again (same case_id); None: scenario's
    seed: int = 0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        unknown = set(self.models) - set(MODEL_NAMES)
        checks = {
            "scenario": (self.scenario in SIMULATOR_SCENARIOS, f"must be one of {list(SIMULATOR_SCENARIOS)}"),
            "models": (bool(self.models) and not unknown, f"must be some of {list(MODEL_NAMES)}"),
            "cases": (self.cases >= 0, "must be >= 0"),
            "batch_size": (1 <= self.batch_size <= 1000, "must be 1 to 1000"),
            "rate": (self.rate >= 0, "must be >= 0"),
            "duration": (self.duration >= 0, "must be >= 0"),
            "feedback_share": (0 <= self.feedback_share <= 1, "must be in [0, 1]"),
            "override_rate": (0 <= self.override_rate <= 1, "must be in [0, 1]"),
            "duplicate_share": (0 <= self.duplicates <= 1, "must be in [0, 1]"),
            "timeout": (self.timeout > 0, "must be > 0"),
        }
        errors = [FieldError(-1, name, problem) for name, (ok, problem) in checks.items() if not ok]
        if errors:
            raise InvalidInput("invalid simulation settings", errors)

    @property
    def duplicates(self) -> float:
        """Share of reviewed cases submitted again, each resubmission reviewed by another reviewer."""
        if self.duplicate_share is not None:
            return self.duplicate_share
        return DISAGREEMENT_DUPLICATES if self.scenario == REVIEWER_DISAGREEMENT else 0.0


@dataclass
class SimulationReport:
    sent: int = 0  # cases posted to decide (answered or not)
    decided: int = 0
    abstained: int = 0
    feedback: int = 0  # feedback rows the service accepted (201 new or 200 repeat)
    overrides: int = 0  # accepted feedback disagreeing with a decided outcome
    labels: int = 0  # accepted feedback on abstentions
    audits: int = 0  # accepted feedback on decided cases Keel selected for audit
    cross_audits: int = 0  # ... of them by a reviewer of another region
    resubmitted: int = 0  # reviewed cases decided again under the same case_id (and reviewed again)
    errors: dict[str, int] = field(default_factory=dict)  # HTTP status or "transport" -> failed requests
    seconds: float = 0.0
    retries: int = 0  # attempts repeated after a transport error, 429 or 5xx

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    final_outcome: str
    actor: str
    reason: str
    reviewer_pool: str | None = None
    """Set for an audit: `local` or `cross` (None: a discretionary review or an abstention)."""
    reviewer_segment: str | None = None

    def body(self, decision_id: Any) -> dict[str, Any]:
        """The feedback request; the pool fields only when set, as a client without them sends."""
        extra = {
            k: v
            for k, v in (("reviewer_pool", self.reviewer_pool), ("reviewer_segment", self.reviewer_segment))
            if v
        }
        return {"decision_id": decision_id, "final_outcome": self.final_outcome, "actor": self.actor,
                "reason": self.reason, **extra}  # fmt: skip


def case_payloads(frame: pd.DataFrame, contract: Contract) -> list[dict[str, Any]]:
    """JSON-ready request cases: case_id and the contract fields only (no event_time, no label)."""
    columns = ["case_id", *contract.field_names]
    rows = frame[columns].itertuples(index=False, name=None)
    return [{c: json_value(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def reviewer_verdicts(
    truth: Sequence[str],
    model_outcomes: Sequence[str | None],
    regions: Sequence[str],
    classes: Sequence[str],
    rng: np.random.Generator,
    *,
    feedback_share: float = 0.3,
    accuracy: float = REVIEWER_ACCURACY,
    override_region: str | None = None,
    override_rate: float = 0.0,
    ordered: bool = False,
    audits: Sequence[Any] | None = None,
    all_regions: Sequence[str] = (),
    erratic: bool = False,
) -> list[Verdict | None]:
    """The reviewer's answer per case (None: nobody looked); a model outcome of None is an abstention.

    `override_region` set means that region's reviewers override `override_rate` of the decided
    cases they review whatever the truth ("regional practice"); with `ordered` classes they move
    one step up the scale, as a local habit would, rather than to an arbitrary class. A practice
    is local: a cross reviewer (from another region) of that region's case judges by the truth.

    `audits` (the decisions' `audit` objects) makes every selected decided case reviewed by the
    pool it names; a cross reviewer comes from another of `all_regions`. Without `audits` the
    random draws are exactly those of earlier releases.

    `erratic`: the region's practice is no shared habit but each reviewer's own whim, a class
    drawn at random, so two of its reviewers of one case often disagree.
    """
    n = len(truth)
    # Same number of draws per case on every branch, so one case's fate never moves the
    # random stream of the next and a seed reproduces the whole run.
    look, slip, regional = rng.random(n), rng.random(n), rng.random(n)
    other = rng.integers(0, max(len(classes) - 1, 1), n)
    who = rng.integers(1, REVIEWERS_PER_REGION + 1, n)
    verdicts: list[Verdict | None] = []
    for i in range(n):
        model, region = model_outcomes[i], str(regions[i])
        audit = audits[i] if audits is not None else None
        pool = audit.get("pool") if isinstance(audit, dict) and audit.get("selected") else None
        if model is not None and pool is None and look[i] >= feedback_share:
            verdicts.append(None)
            continue
        judged = truth[i] if slip[i] < accuracy else _another(classes, truth[i], int(other[i]))
        segment = region if pool != "cross" else _another(all_regions, region, int(other[i]))
        actor = f"reviewer-{segment.lower()}-{who[i]}"
        tags = (pool, segment) if pool is not None and model is not None else (None, None)
        if model is None:
            verdicts.append(Verdict(judged, actor, "reviewed abstention"))
        elif segment == override_region and region == override_region and regional[i] < override_rate:
            moved = (
                _next_step(classes, model)
                if ordered and not erratic
                else _another(classes, model, int(other[i]))
            )
            verdicts.append(Verdict(moved, actor, "regional practice", *tags))
        elif judged != model:
            reason = f"override: reviewer found {judged}, model said {model}"
            verdicts.append(Verdict(judged, actor, reason, *tags))
        else:
            verdicts.append(Verdict(judged, actor, "confirmed", *tags))
    return verdicts


def apply_rule_change(
    truth: Sequence[str],
    regions: Sequence[str],
    classes: Sequence[str],
    rng: np.random.Generator,
    *,
    region: str,
    share: float = RULE_CHANGE_SHARE,
    ordered: bool = False,
) -> list[str]:
    """The truth after the outcome rule changed for `share` of `region`'s cases (each such case's
    true outcome moves one step on an ordered scale, else to another class)."""
    hit = rng.random(len(truth)) < share
    step = rng.integers(0, max(len(classes) - 1, 1), len(truth))
    out = list(truth)
    for i, (t, r) in enumerate(zip(truth, regions, strict=True)):
        if str(r) == region and hit[i]:
            out[i] = _next_step(classes, t) if ordered else _another(classes, t, int(step[i]))
    return out


def _another(classes: Sequence[str], avoid: str, k: int) -> str:
    """The k-th (cyclically) of `classes` other than `avoid` (`avoid` itself if there is none)."""
    rest = [c for c in classes if c != avoid]
    return rest[k % len(rest)] if rest else avoid


def _next_step(classes: Sequence[str], current: str) -> str:
    i = list(classes).index(current)
    return classes[i + 1] if i + 1 < len(classes) else classes[max(i - 1, 0)]


class _Session:
    """Pacing, deadline, retries and error counting shared by every request of a run."""

    def __init__(self, cfg: SimulationConfig, client: httpx.Client, report: SimulationReport) -> None:
        self.cfg, self.client, self.report = cfg, client, report
        self.deadline = time.monotonic() + cfg.duration if cfg.duration > 0 else math.inf
        self.next_at = 0.0
        self.first = True
        self.reached = False  # whether the last post got as far as sending anything

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def post(self, path: str, body: dict[str, Any], idempotency_key: str | None = None) -> Any:
        """The JSON answer of a 2xx, else None (the failure is counted, or the deadline came)."""
        headers = {"Authorization": f"Bearer {self.cfg.key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        failure, self.reached = "", False
        for attempt in range(MAX_RETRIES + 1):
            pause = max(self.next_at - time.monotonic(), 0.0)
            if attempt:
                self.report.retries += 1
                pause = max(pause, BACKOFF_SECONDS * 2 ** (attempt - 1))
            if time.monotonic() + pause >= self.deadline:
                break
            time.sleep(pause)
            if self.cfg.rate > 0:
                self.next_at = time.monotonic() + 1.0 / self.cfg.rate
            self.reached = True
            try:
                response = self.client.post(
                    self.cfg.url.rstrip("/") + path, json=body, headers=headers, timeout=self.cfg.timeout
                )
            except httpx.TransportError as exc:
                if self.first and isinstance(exc, httpx.ConnectError):
                    raise SimulationError(f"cannot reach the service at {self.cfg.url}: {exc}") from exc
                self.first, failure = False, "transport"
                continue
            if self.first and response.status_code in (401, 403):
                raise SimulationError(f"the service refused the key ({response.status_code})")
            self.first = False
            failure = str(response.status_code)
            if response.status_code == 429 or response.status_code >= 500:
                continue  # the Idempotency-Key makes a repeated decide safe; feedback is idempotent
            if response.status_code >= 400:
                break
            try:
                return response.json()
            except ValueError:
                failure = "invalid_response"
                break
        if failure:
            self.report.errors[failure] = self.report.errors.get(failure, 0) + 1
        return None


@dataclass
class _Stream:
    model: str
    classes: tuple[str, ...]
    payloads: list[dict[str, Any]]
    truth: list[str]
    regions: list[str]
    rng: np.random.Generator
    all_regions: tuple[str, ...] = ()
    resubmit: np.random.Generator | None = None
    """Draws of resubmissions and their reviews (only when cfg.duplicates > 0)."""


def _stream(cfg: SimulationConfig, model: str, rng: np.random.Generator) -> _Stream:
    contract = load_contract(model)
    generated = cfg.scenario if cfg.scenario in SCENARIOS else "none"  # the simulator's own: unshifted data
    frame = generate(model, cfg.cases, cfg.seed, generated)
    truth, regions = frame[contract.target].astype(str).tolist(), frame["region"].astype(str).tolist()
    if cfg.scenario == RULE_CHANGE:
        truth = apply_rule_change(
            truth,
            regions,
            contract.classes,
            np.random.default_rng([cfg.seed, RULE_CHANGE_STREAM]),
            region=cfg.override_region,
            ordered=model in ORDERED_MODELS,
        )
    spec = contract.spec("region")
    all_regions = tuple(str(c) for c in (spec.categories or ())) or tuple(sorted(set(regions)))
    resubmit = (
        np.random.default_rng([cfg.seed, DUPLICATE_STREAM, MODEL_NAMES.index(model)])
        if cfg.duplicates
        else None
    )
    return _Stream(
        model, contract.classes, case_payloads(frame, contract), truth, regions, rng, all_regions, resubmit
    )


def _run_batch(session: _Session, cfg: SimulationConfig, s: _Stream, lo: int, hi: int) -> None:
    report = session.report
    # A fresh uuid, not one from the seeded rng: a rerun with the same seed must create new
    # decisions, and the service would replay the first run's answers for a reused key.
    answer = session.post(f"/v1/{s.model}/decide", {"cases": s.payloads[lo:hi]}, str(uuid.uuid4()))
    report.sent += (hi - lo) * session.reached
    if answer is None:
        return
    decisions = answer.get("decisions") if isinstance(answer, dict) else None
    if not isinstance(decisions, list) or len(decisions) != hi - lo:
        report.errors["invalid_response"] = report.errors.get("invalid_response", 0) + 1
        return
    outcomes = [None if d.get("abstained") else d.get("outcome") for d in decisions]
    report.abstained += sum(o is None for o in outcomes)
    report.decided += sum(o is not None for o in outcomes)
    verdicts = _verdicts(cfg, s, s.rng, range(lo, hi), decisions, cfg.feedback_share)
    if not _post_verdicts(session, decisions, verdicts) or s.resubmit is None:
        return
    # Reviewed cases submitted again under the same case_id, each reviewed by another person.
    again = [lo + i for i, v in enumerate(verdicts) if v is not None and s.resubmit.random() < cfg.duplicates]
    if not again:
        return
    answer = session.post(
        f"/v1/{s.model}/decide", {"cases": [s.payloads[i] for i in again]}, str(uuid.uuid4())
    )
    decisions = answer.get("decisions") if isinstance(answer, dict) else None
    if not isinstance(decisions, list) or len(decisions) != len(again):
        return
    report.resubmitted += len(again)
    first = {i: v for i, v in zip(range(lo, hi), verdicts, strict=True) if v is not None}
    second = _verdicts(cfg, s, s.resubmit, again, decisions, 1.0)
    others = [
        v if v is None or v.actor != first[i].actor else replace(v, actor=_colleague(v.actor))
        for i, v in zip(again, second, strict=True)
    ]
    _post_verdicts(session, decisions, others)


def _colleague(actor: str) -> str:
    """Another reviewer of the same segment: `reviewer-emea-2` -> `reviewer-emea-3`."""
    head, _, number = actor.rpartition("-")
    return f"{head}-{int(number) % REVIEWERS_PER_REGION + 1}"


def _verdicts(
    cfg: SimulationConfig,
    s: _Stream,
    rng: np.random.Generator,
    rows: Sequence[int],
    decisions: list[Any],
    share: float,
) -> list[Verdict | None]:
    return reviewer_verdicts(
        [s.truth[i] for i in rows],
        [None if d.get("abstained") else d.get("outcome") for d in decisions],
        [s.regions[i] for i in rows],
        s.classes,
        rng,
        feedback_share=share,
        override_region=cfg.override_region if cfg.scenario in PRACTICE_SCENARIOS else None,
        override_rate=cfg.override_rate,
        ordered=s.model in ORDERED_MODELS,
        audits=[d.get("audit") for d in decisions],
        all_regions=s.all_regions,
        erratic=cfg.scenario == REVIEWER_DISAGREEMENT,
    )


def _post_verdicts(session: _Session, decisions: list[Any], verdicts: list[Verdict | None]) -> bool:
    """Post each verdict as feedback; False when the deadline came first."""
    report = session.report
    for decision, verdict in zip(decisions, verdicts, strict=True):
        if verdict is None:
            continue
        if session.expired():
            return False
        outcome = None if decision.get("abstained") else decision.get("outcome")
        if session.post("/v1/feedback", verdict.body(decision.get("decision_id"))) is not None:
            report.feedback += 1
            report.audits += verdict.reviewer_pool is not None
            report.cross_audits += verdict.reviewer_pool == "cross"
            report.labels += outcome is None
            report.overrides += outcome is not None and outcome != verdict.final_outcome
    return True


def run_simulation(
    cfg: SimulationConfig,
    client: httpx.Client | None = None,
    progress: Callable[[SimulationReport], None] | None = None,
) -> SimulationReport:
    """Post every model's cases in batches, interleaving models, and the reviewers' feedback;
    `progress` sees the running report after every batch."""
    report = SimulationReport()
    started = time.monotonic()
    http = client or httpx.Client()
    try:
        session = _Session(cfg, http, report)
        # One child stream per model, so one model's failed batches never change another's reviews.
        rngs = np.random.default_rng(cfg.seed).spawn(len(cfg.models))
        streams = [_stream(cfg, model, rng) for model, rng in zip(cfg.models, rngs, strict=True)]
        for lo in range(0, cfg.cases, cfg.batch_size):
            for s in streams:
                if session.expired():
                    return report
                _run_batch(session, cfg, s, lo, min(lo + cfg.batch_size, cfg.cases))
                if progress is not None:
                    report.seconds = round(time.monotonic() - started, 3)
                    progress(report)
        return report
    finally:
        report.seconds = round(time.monotonic() - started, 3)
        if client is None:
            http.close()
