"""Promotion gates, two-person approval and rollback of a model's champion.

`keel promote` evaluates the candidate against the current champion and moves nothing unless
every criterion passes (or `--force --reason` says why anyway). Criteria, with their numbers:

- the candidate's bundle downloads and verifies against its recorded hashes;
- it certifies some coverage, with certified selective-error upper bound <= alpha overall and,
  with segment-conditional control, for every certified segment value;
- no segment value with enough decided test cases shows selective error significantly above
  alpha (one-sided Clopper-Pearson lower bound at 1-delta above alpha);
- its contract is the one the service validates against, and its explanations are exact
  (SHAP contributions plus base value equal the raw score on the contract's example case);
- test coverage and accuracy at registration not worse than the champion's beyond a tolerance;
- on reviewed cases from the decision log that neither version trained on (when there are
  enough): would-be override rate and coverage not worse than the champion's beyond a tolerance;
- every segment field its contract declares invariant leaves decisions alone: re-deciding its
  held-out test cases with every other value of the field (keel.models.counterfactual), the
  one-sided 1-delta lower confidence bound of the share of cases decided differently is within
  the declared tolerance (a field nothing in the decision reads passes by construction).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from keel.errors import InvalidInput, KeelError, ModelLoadError
from keel.feature_defs.contract import Contract
from keel.models import aliases
from keel.models.bundle import EVALUATION
from keel.models.consistency_report import DECISION, held_out_audit
from keel.models.history import HistoryEntry, history_for
from keel.models.registry import LoadedModel, client, download, get_version, load
from keel.models.thresholds import NEVER_DECIDE
from keel.settings import StateSettings
from keel.training.settings import PromotionSettings

__all__ = ["Criterion", "Outcome", "approve", "evaluate", "promote", "rollback"]

TWO_PERSON_TAG = "keel.two_person"


@dataclass(frozen=True)
class Criterion:
    criterion: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"  {'PASS' if self.passed else 'FAIL'}  {self.criterion:<24} {self.detail}"


@dataclass
class Outcome:
    model: str
    version: str
    criteria: list[Criterion]
    moved: bool
    pending: bool = False
    entry: HistoryEntry | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)


@dataclass(frozen=True)
class Facts:
    """What a registered version recorded at training, read from its verified bundle."""

    loaded: LoadedModel
    evaluation: dict[str, Any]

    @property
    def version(self) -> str:
        return self.loaded.ref.version

    @property
    def abstention(self) -> dict[str, Any]:
        return dict(self.loaded.model.bundle.abstention)

    @property
    def test(self) -> dict[str, float]:
        return dict(self.evaluation["test"])


def facts(name: str, version: str, cache: Path) -> Facts:
    loaded = load(get_version(name, version), cache)
    evaluation = json.loads((Path(loaded.model.bundle.path) / EVALUATION).read_text())
    return Facts(loaded, evaluation)


def _verified(name: str, version: str, cache: Path) -> Facts:
    """The version's facts from its verified bundle; a bundle that does not load or verify stops
    any alias move to it, forced or approved: --force skips gates, never the bundle's integrity
    (a replica would refuse to load it and the move would promise what nothing serves).

    A copy already in this machine's cache was verified when it got there; the artefact store's
    copy, which every other replica downloads, is verified again as well."""
    try:
        cached = (cache / name / str(version)).is_dir()
        out = facts(name, version, cache)
        if cached:
            with tempfile.TemporaryDirectory(prefix="keel-verify-") as tmp:
                download(out.loaded.ref, Path(tmp), out.loaded.ref.artefact_hashes)
        return out
    except ModelLoadError as exc:  # IntegrityError is one
        raise type(exc)(
            f"{name}: version {version}'s bundle does not verify ({exc.message}); champion not moved "
            "(--force skips gates, never the bundle's integrity)"
        ) from exc


def _certification(c: Facts, s: PromotionSettings) -> list[Criterion]:
    ab = c.abstention
    alpha, delta = float(ab["alpha"]), float(ab["delta"])
    out = [
        Criterion(
            "certifies coverage",
            float(ab["threshold"]) < NEVER_DECIDE,
            f"threshold {float(ab['threshold']):.4f}, "
            f"coverage {float(ab['coverage']):.3f} of risk-control cases",
        ),
        Criterion(
            "certified bound overall",
            float(ab["upper_bound"]) <= alpha,
            f"upper bound {float(ab['upper_bound']):.4f} vs alpha {alpha} (delta {delta})",
        ),
    ]
    seg = ab.get("segment_control")
    if seg:
        bounds = {v: float(rc["upper_bound"]) for v, rc in seg["segments"].items()}
        worst = max(bounds.items(), key=lambda kv: kv[1]) if bounds else ("-", 0.0)
        out.append(
            Criterion(
                "certified bound by segment",
                all(b <= alpha for b in bounds.values()),
                f"{seg['field']}: {len(bounds)} values certified, worst {worst[0]} {worst[1]:.4f} vs alpha "
                f"{alpha}; {len(seg['fallback_values'])} fall back to {seg['fallback']}",
            )
        )
    out.append(_segment_evidence(c, alpha, delta, s.min_segment_decided))
    return out


def _segment_evidence(c: Facts, alpha: float, delta: float, need: int) -> Criterion:
    """Fails when a segment's test selective error is significantly above alpha (segment values
    with fewer than `need` decided test cases are not judged)."""
    worst: tuple[float, str, int, int] | None = None
    checked = 0
    for fname, values in c.evaluation.get("test_by_segment", {}).items():
        for value, m in values.items():
            decided = round(m["n"] * m["coverage"])
            if decided < need:
                continue
            checked += 1
            errors = round(m["selective_error"] * decided)
            lower = float(proportion_confint(errors, decided, alpha=2 * delta, method="beta")[0])
            if worst is None or lower > worst[0]:
                worst = (lower, f"{fname}={value}", errors, decided)
    if worst is None:
        return Criterion("test error by segment", True, f"no segment value has {need} decided test cases")
    lower, where, errors, decided = worst
    return Criterion(
        "test error by segment",
        lower <= alpha,
        f"{checked} segment values checked; highest {where}: {errors}/{decided} wrong, "
        f"lower bound {lower:.4f} vs alpha {alpha}",
    )


def _contract_and_explanation(c: Facts, h: Facts | None) -> list[Criterion]:
    """The candidate takes the requests the champion takes (same sealed contract), and its
    explanation of the contract's example case is exact."""
    model = c.loaded.model
    served = h.loaded.model.contract if h is not None else model.contract
    same = model.contract.version == served.version
    example = {k: v for k, v in model.contract.example_case.items() if k != "case_id"}
    try:
        batch = model.predict_records([example], explain=True)
        assert batch.contributions is not None
        gap = abs(float(batch.contributions[0].sum()) - float(batch.raw[0, int(batch.predicted[0])]))
        exact, detail = gap < 1e-6, f"SHAP sum vs raw score on the example case: gap {gap:.2e}"
    except KeelError as exc:
        exact, detail = False, f"example case not decidable: {exc.message}"
    return [
        Criterion(
            "contract",
            same,
            f"candidate contract {model.contract.version[:12]} vs champion's {served.version[:12]}"
            if h is not None
            else "no champion: the candidate's own contract",
        ),
        Criterion("explanation exact", exact, detail),
    ]


def _versus_champion(c: Facts, h: Facts | None, s: PromotionSettings) -> list[Criterion]:
    if h is None:
        return [Criterion("versus champion", True, "no current champion to compare with")]
    ct, ht = c.test, h.test
    return [
        Criterion(
            "test coverage",
            ct["coverage"] >= ht["coverage"] - s.coverage_tolerance,
            f"{ct['coverage']:.3f} vs champion v{h.version} {ht['coverage']:.3f} "
            f"(tolerance {s.coverage_tolerance})",
        ),
        Criterion(
            "test accuracy",
            ct["accuracy"] >= ht["accuracy"] - s.accuracy_tolerance,
            f"{ct['accuracy']:.3f} vs champion {ht['accuracy']:.3f} (tolerance {s.accuracy_tolerance})",
        ),
    ]


def _reviewed(c: Facts, h: Facts | None, reviewed: pd.DataFrame | None, s: PromotionSettings) -> Criterion:
    from keel.training.from_log import LOG_CUTOFF_TAG, score

    name = "reviewed cases"
    if h is None:
        return Criterion(name, True, "skipped: no champion")
    if reviewed is None:
        return Criterion(name, True, "skipped: decision log not readable")
    cutoffs = [t for t in (c.loaded.ref.tags.get(LOG_CUTOFF_TAG), h.loaded.ref.tags.get(LOG_CUTOFF_TAG)) if t]
    fresh = reviewed[reviewed["event_time"].astype(str) > max(cutoffs)] if cutoffs else reviewed
    if len(fresh) < s.min_reviewed_cases:
        return Criterion(
            name,
            True,
            f"skipped: {len(fresh)} reviewed cases neither trained on (need {s.min_reviewed_cases})",
        )
    a, b = score(h.loaded.model, fresh), score(c.loaded.model, fresh)
    ok = (
        b["selective_error"] <= a["selective_error"] + s.override_tolerance
        and b["coverage"] >= a["coverage"] - s.coverage_tolerance
    )
    return Criterion(
        name,
        ok,
        f"{len(fresh)} cases (not a random sample): would-be override rate {b['selective_error']:.3f} vs "
        f"{a['selective_error']:.3f}, coverage {b['coverage']:.3f} vs {a['coverage']:.3f}",
    )


def _invariance(c: Facts, s: PromotionSettings) -> Criterion:
    """Fails when a field declared invariant changes more test decisions than its tolerance,
    beyond estimation noise (the lower confidence bound is what is compared)."""
    name = "invariant segment fields"
    model = c.loaded.model
    if not model.contract.invariant_fields:
        return Criterion(name, True, "the contract declares no segment field invariant")
    report = held_out_audit(model, c.version, s.consistency_sample, confidence=1.0 - model.delta)
    parts = []
    for f in report.fields:
        if f.gate is None:
            continue
        if f.status != "measured":
            parts.append(f"{f.field} invariant by construction")
            continue
        d = f.flips[DECISION]
        parts.append(
            f"{f.field}: {d.k}/{d.n} test cases decided differently with another value, lower bound "
            f"{f.gate['lower_bound']:.2%} ({f.gate['confidence']:.0%} one-sided) vs tolerance "
            f"{f.gate['tolerance']:.2%}"
        )
    return Criterion(name, not report.failed, "; ".join(parts))


def evaluate(
    c: Facts, h: Facts | None, reviewed: pd.DataFrame | None, s: PromotionSettings
) -> list[Criterion]:
    return [
        *_certification(c, s),
        *_contract_and_explanation(c, h),
        *_versus_champion(c, h, s),
        _reviewed(c, h, reviewed, s),
        _invariance(c, s),
    ]


def reviewed_cases(contract: Contract, state: StateSettings) -> pd.DataFrame | None:
    """Reviewed cases of the model from the decision log, read with the candidate's contract."""
    from keel.decision_log.database import Database
    from keel.training.from_log import labelled_from_log

    try:
        return labelled_from_log(Database(state.log_url), contract)
    except Exception:
        return None


def two_person_required(name: str, s: PromotionSettings) -> bool:
    if s.two_person:
        return True
    tags = client().get_registered_model(name).tags
    return str(tags.get(TWO_PERSON_TAG, "")).lower() == "true"


def promote(
    name: str,
    version: str,
    *,
    actor: str,
    force: bool,
    reason: str,
    state: StateSettings,
    settings: PromotionSettings,
) -> Outcome:
    if force and not reason.strip():
        raise InvalidInput("--force needs --reason TEXT: a forced promotion records why")
    cache = state.home_dir / "cache"
    current = aliases.current_version(name)
    if current == str(version):
        raise InvalidInput(f"{name}: version {version} is already champion")
    candidate = _verified(name, version, cache)
    champion = facts(name, current, cache) if current else None
    criteria = [
        Criterion("bundle verifies", True, f"v{version}: every artefact matches its recorded sha256"),
        *evaluate(candidate, champion, reviewed_cases(candidate.loaded.model.contract, state), settings),
    ]
    out = Outcome(name, str(version), criteria, moved=False)
    if not out.passed and not force:
        return out
    gates = [c.to_dict() for c in criteria]
    history = history_for(state)
    if two_person_required(name, settings):
        out.entry = aliases.record_request(history, name, str(version), actor, reason, gates, not out.passed)
        out.pending = True
        return out
    out.entry = aliases.move_champion(
        history,
        name,
        str(version),
        action=aliases.PROMOTE,
        actor=actor,
        reason=reason,
        forced=not out.passed,
        gates=gates,
    )
    out.moved = True
    return out


def approve(name: str, version: str, *, actor: str, state: StateSettings) -> HistoryEntry:
    history = history_for(state)
    request = aliases.pending_request(history.entries(name), str(version))
    if request is None:
        raise InvalidInput(f"{name}: no pending promotion request for version {version}")
    if request.actor == actor:
        raise InvalidInput(f"{name}: {actor} requested this promotion; a different person must approve it")
    _verified(name, str(version), state.home_dir / "cache")  # the bundle may have changed since the request
    return aliases.move_champion(
        history,
        name,
        str(version),
        action=aliases.APPROVE,
        actor=actor,
        reason=f"approves request #{request.seq} by {request.actor}: {request.reason}".rstrip(": "),
        forced=request.forced,
        gates=request.gates,
    )


def rollback(name: str, *, actor: str, reason: str, state: StateSettings) -> HistoryEntry:
    """Champion back to the previous champion (no gates: it was champion before)."""
    history = history_for(state)
    current = aliases.current_version(name)
    target = aliases.previous_champion(history.entries(name), current)
    return aliases.move_champion(history, name, target, action=aliases.ROLLBACK, actor=actor, reason=reason)
