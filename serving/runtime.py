"""Everything the service holds at run time, built by the entry point (serving/server.py `serve`)
and handed to the app and the gate (serving/service.py `asgi_app`); nothing reaches it globally."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from keel.decision_log import DecisionLog
from keel.decision_log.database import Database
from keel.events.dispatcher import Dispatcher
from keel.events.settings import LOCAL_KEY_FILE, LOCAL_KEY_ID, EventSettings
from keel.serving.challengers import ShadowScorer
from keel.serving.decider import Decider
from keel.serving.keys import KeySettings, KeyStore
from keel.serving.metrics import Metrics
from keel.serving.model_set import ModelSet, ReloadReport
from keel.serving.settings import ServingSettings
from keel.serving.tracing import Tracing, TracingSettings, start_tracing
from keel.settings import StateSettings, prepare_state

__all__ = ["Runtime"]

log = logging.getLogger("keel.runtime")


@dataclass
class Runtime:
    state: StateSettings
    settings: ServingSettings
    metrics: Metrics
    decisions: DecisionLog
    keys: KeyStore
    models: ModelSet
    decider: Decider
    tracing: Tracing | None = None
    """Decide spans for an OTLP collector (serving/tracing.py); None when KEEL_TRACING_ENDPOINT is unset."""
    loaded: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    _versions_shown: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def start(
        cls,
        state: StateSettings,
        settings: ServingSettings,
        key_settings: KeySettings,
        tracing: TracingSettings | None = None,
    ) -> Runtime:
        state = prepare_state(state)
        metrics = Metrics()
        db = Database(state.log_url)
        decisions = DecisionLog(db).open()
        decisions.on_commit = metrics.observe_commit
        decisions.on_failure = metrics.log_write_failures.inc
        models = ModelSet(settings.alias, state.home_dir / "cache")
        rt = cls(
            state,
            settings,
            metrics,
            decisions,
            KeyStore(db, settings.key_cache_seconds, key_settings).start(),
            models,
            Decider(models, decisions, settings, metrics),
            start_tracing(tracing, settings.max_cases) if tracing is not None else None,
        )
        rt.decider.shadow = ShadowScorer(decisions, metrics, settings.top_k, settings.shadow_queue_cases)
        metrics.ready.set_function(lambda: float(rt.loaded.is_set()))
        threading.Thread(target=rt._load_loop, name="model-loader", daemon=True).start()
        threading.Thread(target=rt._audit_loop, name="audit-plans", daemon=True).start()
        events = EventSettings.load(state.home_dir)
        if events.own_key:
            log.warning(
                "events to KEEL_MONITOR_WEBHOOK_URL are signed with key id %r kept in %s; set "
                "KEEL_EVENTS_SIGNING_KEYS to share a key with receivers and replicas",
                LOCAL_KEY_ID,
                state.home_dir / LOCAL_KEY_FILE,
            )
        if events.enabled and events.dispatch_in_serve:  # off the request path: a thread of its own
            dispatcher = Dispatcher(db, events)
            threading.Thread(
                target=dispatcher.run, args=(rt.stopping,), name="event-dispatcher", daemon=True
            ).start()
        return rt

    def reload(self) -> ReloadReport:
        report = self.models.reload()
        snap = self.models.snapshot
        shown: set[tuple[str, str]] = set()
        for name, served in snap.models.items():
            challengers = snap.challengers.get(name)
            extra = (challengers.shadow, challengers.canary) if challengers else ()
            for version in (served, *extra):
                if version is not None:
                    ref = version.loaded.ref
                    self.metrics.model_version.labels(name, ref.alias or "").set(float(ref.version))
                    shown.add((name, ref.alias or ""))
        for stale in self._versions_shown - shown:  # a shadow or canary that was switched off
            self.metrics.model_version.remove(*stale)
        self._versions_shown = shown
        for name in report.failed:
            self.metrics.reload_failures.labels(name).inc()
        return report

    def _load_loop(self) -> None:
        """Load at start (retrying until every model is in), then poll aliases if configured."""
        delay = 1.0
        while not self.stopping.is_set():
            self.reload()
            # Readiness waits for the models only: while the log is away a decision could not be
            # logged anyway (503), and the audit loop reads the plans once it is back.
            self._refresh_audits()
            if self.models.ready:
                self.loaded.set()
                break
            self.stopping.wait(delay)
            delay = min(delay * 2, 30.0)
        poll = self.settings.reload_poll_seconds
        while poll > 0 and not self.stopping.wait(poll):
            self.reload()

    def _refresh_audits(self) -> bool:
        """Read every model's current audit plan from the log; False (logged) if it failed."""
        try:
            self.decider.audits.refresh(self.decisions.db)
        except Exception as exc:  # the log away: the plans held stay in force, retried next poll
            log.warning(
                "could not read the audit plans from the decision log: %s", " ".join(str(exc).split())[:300]
            )
            return False
        return True

    def _audit_loop(self) -> None:
        """Poll the audit plans, so a plan recorded by `keel audit set` reaches every replica
        within KEEL_AUDIT_REFRESH_SECONDS, without a restart (the first read is the loader's)."""
        settings = self.decider.audits.settings
        while not self.stopping.wait(settings.refresh_seconds if self.decider.audits.loaded else 1.0):
            self._refresh_audits()

    def close(self) -> None:
        self.stopping.set()
        self.keys.stop()
        if self.decider.shadow is not None:
            self.decider.shadow.close()
        self.decisions.close()
        if self.tracing is not None:
            self.tracing.close()
