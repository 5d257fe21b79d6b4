"""DecisionSpec: everything a registered version decides with, read from its sealed bundle.

Validation, policy, segments, feedback classes, monitoring and retraining read a version's spec,
never the contract and policy files beside the code, so a decision always reports (and is
explained by) the versions that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInput, ModelLoadError
from keel.feature_defs.contract import Contract
from keel.feature_defs.policy import Policy, load_policy_text, packaged_policy_text
from keel.models.bundle import Bundle

__all__ = ["DecisionSpec", "decision_spec", "seal_policy"]


@dataclass(frozen=True)
class DecisionSpec:
    """One version's contract, policy, calibration, threshold, classes and segment fields."""

    model: str
    contract: Contract
    policy: Policy
    temperature: float
    threshold: float
    alpha: float
    delta: float
    sealed: bool
    """False for versions registered before the policy was sealed in the bundle (packaged policy)."""
    hashes: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.contract.classes

    @property
    def segment_fields(self) -> list[str]:
        return self.contract.segment_fields

    def public(self) -> dict[str, Any]:
        """The spec as sealed in spec.json (policy and contract by version; their files are sealed too)."""
        return {
            "model": self.model,
            "contract_version": self.contract.version,
            "policy_version": self.policy.version,
            "classes": list(self.classes),
            "segment_fields": list(self.segment_fields),
            "feature_names": list(self.contract.feature_names),
            "temperature": self.temperature,
            "threshold": self.threshold,
            "alpha": self.alpha,
            "delta": self.delta,
            "policy_sealed": self.sealed,
        }


def seal_policy(text: str, contract: Contract) -> Policy:
    """Compile a policy against the contract it will be sealed with; refuse it with a clear message."""
    try:
        policy = load_policy_text(text, contract)
    except ValueError as exc:
        raise InvalidInput(
            f"the policy does not fit the {contract.name} contract being registered: {exc}. "
            "Fix the policy (or pass --policy FILE) so that every rule names a field of this contract."
        ) from exc
    return policy


def decision_spec(bundle: Bundle) -> DecisionSpec:
    """The spec of a verified bundle; older bundles without a sealed policy get the packaged one."""
    contract = bundle.contract
    text, sealed = bundle.policy_text, bundle.policy_text is not None
    if text is None:
        text = packaged_policy_text(contract.name)
        if text is None:
            text = f"model: {contract.name}\nrules: []\n"
    try:
        policy = load_policy_text(text, contract)
    except ValueError as exc:
        where = "sealed" if sealed else "packaged"
        raise ModelLoadError(
            f"{contract.name}: the {where} policy does not fit the sealed contract: {exc}"
        ) from exc
    return DecisionSpec(
        model=contract.name,
        contract=contract,
        policy=policy,
        temperature=float(bundle.calibration["temperature"]),
        threshold=float(bundle.abstention["threshold"]),
        alpha=float(bundle.abstention["alpha"]),
        delta=float(bundle.abstention["delta"]),
        sealed=sealed,
        hashes=dict(bundle.manifest.get("files", {})),
    )
