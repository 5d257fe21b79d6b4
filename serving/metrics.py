"""Prometheus metrics of the decision service, in their own registry (no per-path labels)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from keel.decision_log.records import DecisionRecord

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "keel_decisions", "Decisions served", ["model", "outcome", "route"], registry=r
        )
        self.abstentions = Counter("keel_abstentions", "Cases the model abstained on", ["model"], registry=r)
        self.policy = Counter(
            "keel_policy_interventions", "Policy rules fired", ["model", "rule"], registry=r
        )
        self.feedback = Counter(
            "keel_feedback",
            "Feedback rows by kind (override, confirmation, label)",
            ["model", "kind"],
            registry=r,
        )
        self.explanation_failures = Counter(
            "keel_explanation_failures", "Explanations that failed", ["model"], registry=r
        )
        self.model_failures = Counter(
            "keel_model_failures", "Batches the model failed on", ["model"], registry=r
        )
        self.log_write = Histogram(
            "keel_log_write_seconds", "Decision-log group commit latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self.log_batch = Histogram(
            "keel_log_batch_rows",
            "Rows per group commit",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.requests = Histogram(
            "keel_request_seconds",
            "Request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_version = Gauge(
            "keel_model_version",
            "Served model version (value = version number)",
            ["model", "alias"],
            registry=r,
        )
        self.reload_failures = Counter(
            "keel_reload_failures", "Model versions that failed to load", ["model"], registry=r
        )
        # For alerting (ops/): writes the decision log could not commit, and readiness as a series.
        self.log_write_failures = Counter(
            "keel_log_write_failures",
            "Decision-log writes (submissions) the database failed to commit",
            registry=r,
        )
        # Shadow scoring (serving/challengers.py): off the request path, so its losses are counted here.
        self.shadow_decisions = Counter(
            "keel_shadow_decisions", "Cases a shadow version scored and logged", ["model"], registry=r
        )
        self.shadow_dropped = Counter(
            "keel_shadow_dropped",
            "Cases not shadow-scored because the shadow queue was full",
            ["model"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "keel_shadow_failures", "Cases the shadow version failed to score or log", ["model"], registry=r
        )
        self.ready = Gauge("keel_ready", "1 when every model is loaded and the service is ready", registry=r)

    def observe_commit(self, rows: int, seconds: float) -> None:
        self.log_write.observe(seconds)
        self.log_batch.observe(rows)

    def observe_decisions(self, model: str, decisions: list[DecisionRecord]) -> None:
        for d in decisions:
            self.decisions.labels(model, d["outcome"] or "abstained", d["route"]).inc()
            if d["abstained"]:
                self.abstentions.labels(model).inc()
            for rule in d["rules_fired"]:
                self.policy.labels(model, rule).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
