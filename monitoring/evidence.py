"""Everything one window's checks judge: the computed results, before thresholds make verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.models.consistency_report import ConsistencyReport
from keel.monitoring.audit import AuditReport
from keel.monitoring.detection import DetectionLimit
from keel.monitoring.drift import DriftResult, PredictionDriftResult
from keel.monitoring.overrides import OverrideReport
from keel.monitoring.process_drift import ProcessDriftReport
from keel.monitoring.quality import QualityReport
from keel.monitoring.segments import ConceptReport, ExpectedQuality, MixReport, SegmentParents
from keel.monitoring.sequential import SequentialState

__all__ = ["Evidence"]


@dataclass
class Evidence:
    """Every check's computed result for one window, before thresholds turn them into verdicts."""

    feature: DriftResult | None
    """None (with prediction and explanation) when the Evidently parts were not run."""
    prediction: PredictionDriftResult | None
    explanation: DriftResult | None
    overrides: OverrideReport
    quality: QualityReport
    process: ProcessDriftReport
    mix: MixReport
    concept: ConceptReport
    expected: ExpectedQuality
    sequential: SequentialState | None = None
    parents: SegmentParents = field(default_factory=dict)
    """Segment values that lie wholly inside a value of a coarser field (entity -> region), so a
    finding on the entity is shown under its region's rather than beside it as a repeat."""
    audit: AuditReport | None = None
    """Estimates from audit-selected cases and the local-vs-cross readings (None: not computed)."""
    limits: list[DetectionLimit] = field(default_factory=list)
    """The smallest effect each review check would catch in this window with 90% power."""
    consistency: ConsistencyReport | None = None
    """The counterfactual audit of a bounded sample of the window (None: not computed)."""
    consistency_problem: str | None = None
    """Why the counterfactual audit could not run, when it could not."""
