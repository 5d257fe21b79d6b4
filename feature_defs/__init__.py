"""Declarative feature contracts for Keel's decision models."""

from keel.feature_defs.contract import (
    MODEL_NAMES,
    Contract,
    FieldSpec,
    Invariance,
    ValidationResult,
    load_contract,
    load_contract_file,
    load_contract_text,
)

__all__ = [
    "MODEL_NAMES",
    "Contract",
    "FieldSpec",
    "Invariance",
    "ValidationResult",
    "load_contract",
    "load_contract_file",
    "load_contract_text",
]
