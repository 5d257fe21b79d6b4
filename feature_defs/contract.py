"""Feature contracts: declarative YAML per decision model, loaded into a validator and encoder.

The contract owns categorical encoding (a category's code is its index in the YAML list), so
training, serving and monitoring cannot disagree. Validation never raises on bad data: it
returns every field-level problem it finds, and a feature matrix only when there are none.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import FieldError

FieldType = Literal["float", "int", "bool", "category"]
RESERVED_KEYS = frozenset({"case_id"})
"""Keys a case may carry besides its contract fields."""
MODEL_NAMES = ("invoice_classification", "discount_band", "routing")
MAX_ERRORS = 100
"""Field errors collected per validation; past it only their number is kept (`error_count`),
so one pathological request costs bounded time and answer size."""


class Invariance(BaseModel):
    """A segment field's declared invariance: outcome, route and abstention must not depend on it.

    `tolerance` is the share of cases whose decision may still change with another value of the
    field (estimation noise aside); the promotion gate fails a version whose flip rate is
    significantly above it (keel.models.counterfactual)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(default=0.01, ge=0.0, lt=1.0)
    """Largest tolerated share of cases whose decision changes with the field's value."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: FieldType
    description: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    nullable: bool = False
    feature: bool = True
    segment: bool = False
    invariant: Invariance | None = None
    """Declared invariance (segment fields only): decisions must not depend on this field."""

    @cached_property
    def codes(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.categories)}

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "nullable": self.nullable,
            "feature": self.feature,
            "segment": self.segment,
        }
        if self.invariant is not None:
            out["invariant"] = self.invariant.model_dump()
        if self.unit:
            out["unit"] = self.unit
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.categories:
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class DerivedFeature:
    """A model feature computed from other fields; only `difference` exists so far."""

    name: str
    op: Literal["difference"]
    args: tuple[str, str]
    description: str
    unit: str | None = None


@dataclass
class ValidationResult:
    """Either a float64 feature matrix (one row per case, columns in `feature_names` order) or errors."""

    matrix: np.ndarray | None
    errors: list[FieldError]
    error_count: int = -1
    """All errors found, including those past MAX_ERRORS that `errors` leaves out."""

    def __post_init__(self) -> None:
        self.error_count = max(self.error_count, len(self.errors))

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Contract:
    name: str
    description: str
    target: str
    classes: tuple[str, ...]
    fields: tuple[FieldSpec, ...]
    derived: tuple[DerivedFeature, ...]
    example_case: dict[str, Any]
    version: str
    """sha256 of the canonical JSON of the contract's content: the contract version."""
    source: str = field(default="", repr=False, compare=False)
    """The YAML text the contract was read from (bundled with each model version)."""
    _index: dict[str, FieldSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: f for f in self.fields})

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def feature_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.feature]

    @property
    def feature_names(self) -> list[str]:
        """Model input order: feature fields in contract order, then derived features."""
        return [f.name for f in self.feature_fields] + [d.name for d in self.derived]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.feature_fields if f.type == "category"]

    @property
    def segment_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.segment]

    @property
    def invariant_fields(self) -> dict[str, float]:
        """Segment fields declared invariant, with their tolerance."""
        return {f.name: f.invariant.tolerance for f in self.fields if f.invariant is not None}

    def spec(self, name: str) -> FieldSpec:
        return self._index[name]

    def class_index(self, label: str) -> int:
        return self.classes.index(label)

    def encode_target(self, labels: Sequence[Any]) -> tuple[np.ndarray, list[FieldError]]:
        lookup = {c: i for i, c in enumerate(self.classes)}
        codes = np.full(len(labels), -1, dtype=np.int64)
        errors: list[FieldError] = []
        for row, label in enumerate(labels):
            code = lookup.get(label) if isinstance(label, str) else None
            if code is None:
                errors.append(FieldError(row, self.target, f"{label!r} is not one of {list(self.classes)}"))
            else:
                codes[row] = code
        return codes, errors

    def validate_records(self, records: Sequence[Mapping[str, Any]]) -> ValidationResult:
        """Validate JSON-like cases; unknown keys, missing fields and bad values are all reported."""
        errors: list[FieldError] = []
        if not records:
            return ValidationResult(None, [FieldError(-1, "cases", "no cases given")])
        known = self._known
        count = 0
        for row, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                count += 1
                errors.append(FieldError(row, "", "a case must be a JSON object"))
                continue
            # Counted by intersecting with the known names, which CPython does by walking the
            # smaller side: constant time however many keys were sent.
            unknown = len(rec) - len(rec.keys() & known)
            if unknown:
                count += unknown
                room = max(0, MAX_ERRORS - len(errors))
                listed = islice((k for k in rec if k not in known), room)  # in the order sent
                errors.extend(FieldError(row, k, "unknown field") for k in listed)
            if "case_id" in rec and not _valid_case_id(rec["case_id"]):
                count += 1
                errors.append(FieldError(row, "case_id", "must be a string of 1 to 200 characters"))
        if any(not isinstance(rec, Mapping) for rec in records):
            return ValidationResult(None, errors[:MAX_ERRORS], count)
        result = self._validate_rows(records)
        if errors:
            # An unknown key must not hide the same case's other problems: report them all at once.
            both = sorted([*errors, *result.errors], key=lambda e: (e.row, e.field))
            return ValidationResult(None, both[:MAX_ERRORS], count + result.error_count)
        return result

    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.field_names) | RESERVED_KEYS

    @cached_property
    def _layout(self) -> tuple[tuple[FieldSpec, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
        """Fields in contract order, the positions of the feature fields among them, and of each
        derived feature's two arguments: how one case's encoded values become a matrix row."""
        position = {f.name: i for i, f in enumerate(self.fields)}
        features = tuple(position[f.name] for f in self.feature_fields)
        derived = tuple((position[d.args[0]], position[d.args[1]]) for d in self.derived)
        return self.fields, features, derived

    def _validate_rows(self, records: Sequence[Mapping[str, Any]]) -> ValidationResult:
        """The value checks of `validate_records`, case by case: JSON cases arrive as rows, and a
        request usually holds one, for which building per-field columns costs more than checking.
        Same rules and errors as the column path of `validate_frame` (`_encode_one`)."""
        fields, features, derived = self._layout
        errors: list[FieldError] = []
        rows: list[list[float]] = []
        for row, rec in enumerate(records):
            codes: list[float] = []
            for spec in fields:
                problem, code = _encode_one(spec, rec.get(spec.name, _MISSING))
                if problem:
                    errors.append(FieldError(row, spec.name, problem))
                codes.append(code)
            rows.append([codes[i] for i in features] + [codes[a] - codes[b] for a, b in derived])
        if errors:
            errors.sort(key=lambda e: (e.row, e.field))
            return ValidationResult(None, errors[:MAX_ERRORS], len(errors))
        return ValidationResult(np.array(rows, dtype=np.float64), [])

    def validate_frame(self, frame: pd.DataFrame, extra_ok: Sequence[str] = ()) -> ValidationResult:
        """Validate a whole table (training data, a user's CSV/Parquet, monitoring windows)."""
        if len(frame) == 0:
            return ValidationResult(None, [FieldError(-1, "cases", "no rows given")])
        allowed = set(self.field_names) | RESERVED_KEYS | set(extra_ok)
        errors = [FieldError(-1, str(c), "unknown column") for c in frame.columns if c not in allowed]
        errors += [FieldError(-1, f.name, "missing column") for f in self.fields if f.name not in frame]
        if errors:
            return ValidationResult(None, errors)
        columns = {f.name: frame[f.name] for f in self.fields}
        return self._validate_columns(columns, len(frame))

    def _validate_columns(self, columns: Mapping[str, Any], n: int) -> ValidationResult:
        errors: list[FieldError] = []
        encoded: dict[str, np.ndarray] = {}
        for spec in self.fields:
            values, problems = _encode_column(spec, columns[spec.name], n)
            errors.extend(problems)
            encoded[spec.name] = values
        if errors:
            errors.sort(key=lambda e: (e.row, e.field))
            return ValidationResult(None, errors[:MAX_ERRORS], len(errors))
        matrix = np.empty((n, len(self.feature_names)), dtype=np.float64)
        for j, f in enumerate(self.feature_fields):
            matrix[:, j] = encoded[f.name]
        offset = len(self.feature_fields)
        for j, d in enumerate(self.derived):
            matrix[:, offset + j] = encoded[d.args[0]] - encoded[d.args[1]]
        return ValidationResult(matrix, [])

    def decode_value(self, name: str, code: float) -> Any:
        """Turn one encoded matrix value back into what a caller sent (for explanations)."""
        spec = self._index.get(name)
        if isinstance(code, float) and math.isnan(code):
            return None
        if spec is None or spec.type == "float":
            return float(code)
        if spec.type == "category":
            return spec.categories[int(code)]
        if spec.type == "bool":
            return bool(code)
        return int(code)

    def public(self) -> dict[str, Any]:
        """What /v1/models shows an integrator: fields with types, units, ranges and an example."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "target": {"name": self.target, "classes": list(self.classes)},
            "fields": [f.public() for f in self.fields],
            "derived_features": [
                {
                    "name": d.name,
                    "op": d.op,
                    "args": list(d.args),
                    "unit": d.unit,
                    "description": d.description,
                }
                for d in self.derived
            ],
            "reserved_fields": {"case_id": "optional caller reference, string of 1 to 200 characters"},
            "example_case": dict(self.example_case),
        }


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _valid_case_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _encode_column(spec: FieldSpec, column: Any, n: int) -> tuple[np.ndarray, list[FieldError]]:
    """Encode one column to float64, vectorised for numeric frame columns, per value otherwise."""
    if isinstance(column, pd.Series) and spec.type != "category" and _numeric_dtype(column):
        return _encode_numeric_array(spec, column.to_numpy(dtype=np.float64, na_value=np.nan))
    out = np.empty(n, dtype=np.float64)
    errors: list[FieldError] = []
    for row, value in enumerate(column):
        problem, code = _encode_one(spec, value)
        if problem:
            errors.append(FieldError(row, spec.name, problem))
        else:
            out[row] = code
    return out, errors


def _encode_one(spec: FieldSpec, value: Any) -> tuple[str | None, float]:
    """One value of a field: (problem, 0.0), or (None, its float64 code; NaN for an allowed null)."""
    if value is _MISSING:
        return "missing field", 0.0
    if _is_null(value) or value is _NA or value is _NAT:
        return (None, math.nan) if spec.nullable else ("must not be null", 0.0)
    return _encode_value(spec, value, spec.codes)


# As tuples, built once: `isinstance(v, bool | np.bool_)` builds the union on every call.
_BOOLS = (bool, np.bool_)
_NUMBERS = (int, float, np.integer, np.floating)
_NA, _NAT = pd.NA, pd.NaT


def _encode_value(spec: FieldSpec, value: Any, codes: dict[str, int]) -> tuple[str | None, float]:
    if spec.type == "category":
        if not isinstance(value, str):
            return f"expected one of {list(spec.categories)}, got {type(value).__name__}", 0.0
        code = codes.get(value)
        if code is None:
            return f"unknown category {value!r}; allowed: {list(spec.categories)}", 0.0
        return None, float(code)
    if spec.type == "bool":
        if isinstance(value, _BOOLS):
            return None, float(value)
        return f"expected a boolean, got {type(value).__name__}", 0.0
    if isinstance(value, _BOOLS) or not isinstance(value, _NUMBERS):
        return f"expected a number, got {type(value).__name__}", 0.0
    try:
        number = float(value)
    except OverflowError:  # an integer of 309+ digits
        return "outside the range of a 64-bit float", 0.0
    if math.isinf(number):
        return "must be finite", 0.0
    if spec.type == "int" and not number.is_integer():
        return f"expected an integer, got {value!r}", 0.0
    return _range_problem(spec, number), number


def _range_problem(spec: FieldSpec, number: float) -> str | None:
    if spec.minimum is not None and number < spec.minimum:
        return f"{number:g} is below the minimum {spec.minimum:g}"
    if spec.maximum is not None and number > spec.maximum:
        return f"{number:g} is above the maximum {spec.maximum:g}"
    return None


def _numeric_dtype(column: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype))


def _encode_numeric_array(spec: FieldSpec, values: np.ndarray) -> tuple[np.ndarray, list[FieldError]]:
    """The fast path for typed columns: same rules as `_encode_value`, checked with numpy."""
    bad: dict[int, str] = {}
    nan = np.isnan(values)
    if not spec.nullable:
        bad.update((int(i), "must not be null") for i in np.flatnonzero(nan))
    finite = ~nan
    bad.update((int(i), "must be finite") for i in np.flatnonzero(np.isinf(values)))
    if spec.type == "bool":
        bad.update(
            (int(i), "expected a boolean, got a number")
            for i in np.flatnonzero(finite & (values != 0) & (values != 1))
        )
    if spec.type == "int":
        frac = finite & np.isfinite(values) & (np.floor(values) != values)
        bad.update((int(i), f"expected an integer, got {values[i]!r}") for i in np.flatnonzero(frac))
    checkable = finite & np.isfinite(values)
    if spec.minimum is not None or spec.maximum is not None:
        lo = spec.minimum if spec.minimum is not None else -np.inf
        hi = spec.maximum if spec.maximum is not None else np.inf
        for i in np.flatnonzero(checkable & ((values < lo) | (values > hi))):
            bad.setdefault(int(i), _range_problem(spec, float(values[i])) or "out of range")
    return values, [FieldError(i, spec.name, p) for i, p in sorted(bad.items())]


def _parse(raw: Mapping[str, Any], source: str) -> Contract:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    fields = tuple(
        FieldSpec(
            name=f["name"],
            type=f["type"],
            description=f.get("description", ""),
            unit=f.get("unit"),
            minimum=f.get("minimum"),
            maximum=f.get("maximum"),
            categories=tuple(f.get("categories", ())),
            nullable=bool(f.get("nullable", False)),
            feature=bool(f.get("feature", True)),
            segment=bool(f.get("segment", False)),
            invariant=_invariance(raw.get("name"), f),
        )
        for f in raw["fields"]
    )
    names = {f.name for f in fields}
    derived = tuple(
        DerivedFeature(
            name=d["name"],
            op=d["op"],
            args=(d["args"][0], d["args"][1]),
            description=d.get("description", ""),
            unit=d.get("unit"),
        )
        for d in raw.get("derived", ())
    )
    for d in derived:
        if d.op != "difference" or not set(d.args) <= names:
            raise ValueError(
                f"contract {raw['name']}: derived feature {d.name} is not a difference of two fields"
            )
    for f in fields:
        if f.type not in ("float", "int", "bool", "category"):
            raise ValueError(f"contract {raw['name']}: field {f.name} has unknown type {f.type}")
        if f.type == "category" and not f.categories:
            raise ValueError(f"contract {raw['name']}: category field {f.name} lists no categories")
    return Contract(
        name=raw["name"],
        description=raw.get("description", "").strip(),
        target=raw["target"]["name"],
        classes=tuple(raw["target"]["classes"]),
        fields=fields,
        derived=derived,
        example_case=dict(raw.get("example_case", {})),
        version=hashlib.sha256(canonical.encode()).hexdigest(),
        source=source,
    )


def _invariance(model: Any, f: Mapping[str, Any]) -> Invariance | None:
    """The field's `invariant` declaration, validated: only a segment field can carry one."""
    if "invariant" not in f:
        return None
    where = f"contract {model}: field {f.get('name')}"
    if not f.get("segment", False):
        raise ValueError(f"{where} is declared invariant but is not a segment field")
    declared = f["invariant"]
    try:
        return Invariance.model_validate({} if declared is True else declared)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'invariant'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: invalid `invariant` ({problems})") from exc


def load_contract_file(path: str | Path) -> Contract:
    return load_contract_text(Path(path).read_text())


def load_contract_text(text: str) -> Contract:
    raw = yaml.safe_load(text)
    if not isinstance(raw, Mapping) or "fields" not in raw or "target" not in raw:
        raise ValueError("not a Keel contract: expected a mapping with name, target and fields")
    return _parse(raw, text)


def without_features(contract: Contract, names: Sequence[str]) -> Contract:
    """The same contract with `names` no longer model features (still validated and logged)."""
    raw = yaml.safe_load(contract.source)
    for f in raw["fields"]:
        if f["name"] in names:
            f["feature"] = False
    return load_contract_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


@cache
def load_contract(name: str) -> Contract:
    """The packaged contract of one of the three decision models."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    text = resources.files("keel.feature_defs").joinpath(f"{name}.yaml").read_text()
    return load_contract_text(text)
