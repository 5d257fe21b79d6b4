"""What a registered version records about its abstention guarantee, and which alias it may get.

Tags (strings, searchable in the registry) and metrics (numbers, plotted by MLflow) for the
overall certified bound and, with segment-conditional control, each segment's.
"""

from __future__ import annotations

from typing import Any

from keel.models.registry import CHALLENGER, CHAMPION
from keel.training.risk_control import RiskControl, SegmentControl

__all__ = ["CERTIFIED_TAG", "first_alias", "risk_metrics", "risk_tags", "uncertified_message"]

CERTIFIED_TAG = "keel.certified"
SEGMENT_TAG = "keel.segment."


def risk_tags(risk: RiskControl, segments: SegmentControl | None) -> dict[str, str]:
    tags = {
        CERTIFIED_TAG: str(risk.certified).lower(),
        "keel.upper_bound": f"{risk.upper_bound:.6f}",
        "keel.risk_method": risk.method,
    }
    if segments is not None:
        tags["keel.segment_field"] = segments.field
        tags["keel.segment_fallback"] = segments.fallback
        tags["keel.segment_fallback_values"] = ",".join(segments.fallback_values)
        for value, rc in segments.segments.items():
            tags[f"{SEGMENT_TAG}{value}.upper_bound"] = f"{rc.upper_bound:.6f}"
            tags[f"{SEGMENT_TAG}{value}.threshold"] = str(rc.threshold)
    return tags


def risk_metrics(risk: RiskControl, segments: SegmentControl | None) -> dict[str, float]:
    metrics = {
        "risk.threshold": risk.threshold,
        "risk.coverage": risk.coverage,
        "risk.upper_bound": risk.upper_bound,
    }
    if segments is not None:
        for value, rc in segments.segments.items():
            prefix = f"risk.segment.{segments.field}.{value}"
            metrics.update(
                {
                    f"{prefix}.threshold": rc.threshold,
                    f"{prefix}.coverage": rc.coverage,
                    f"{prefix}.upper_bound": rc.upper_bound,
                }
            )
    return metrics


def first_alias(certified: bool, has_champion: bool) -> str:
    """A first version becomes champion only if it certifies some coverage; all else challenger."""
    return CHAMPION if certified and not has_champion else CHALLENGER


def uncertified_message(name: str, version: str, result: Any) -> str:
    r = result.risk
    return (
        f"{name}: version {version} certifies nothing (no threshold has selective error <= "
        f"{r.alpha} at delta {r.delta}; it would abstain on every case); registered as challenger "
        f"only, not made champion"
    )
