"""The service's one route table: every route, the role it needs and how it is documented.

The gate (serving/gate.py) authorises from it, denying any path not declared here; the
OpenAPI document (serving/openapi.py) is generated from it; the decide route is answered by
Keel's own handler (serving/decide_endpoint.py) and the rest by the BentoML service's app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ANY_KEY", "CONSOLE", "PUBLIC", "ROUTES", "Match", "Route", "match", "route_label"]

PUBLIC = "public"
"""Role of a route that needs no key."""
ANY_KEY = "authenticated"
"""Role of a route any valid key may call, whatever its roles."""
CONSOLE = "/console"
"""Where the review console is mounted (keel/console, mounted by `keel serve`)."""

Handler = Literal["decide", "docs", "app", "bentoml", "console"]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    """Template; `{name}` matches one path segment."""
    role: str
    """PUBLIC, ANY_KEY or the key role the route needs (decide, feedback, read, review, admin;
    a `review` key passes where read or feedback is needed, serving/keys.py IMPLIED)."""
    summary: str
    handler: Handler = "app"
    """Who answers: `decide` Keel's decide handler, `docs` the docs page, `app` the service's
    FastAPI app (a function registered under `name`), `bentoml` BentoML itself (probes),
    `console` the review console the command line mounts at CONSOLE (its pages are signed in to
    with a key and then carry a session cookie, serving/sessions.py, instead of a bearer key)."""
    json_body: bool = False
    """The route takes a JSON body: content type checked, size bounded before the handler."""
    statuses: tuple[int, ...] = (200,)
    """Success statuses, for the OpenAPI document."""
    documented: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def public(self) -> bool:
        return self.role == PUBLIC


ROUTES: tuple[Route, ...] = (
    Route("livez", "GET", "/livez", PUBLIC, "Liveness probe", handler="bentoml"),
    Route(
        "readyz",
        "GET",
        "/readyz",
        PUBLIC,
        "Readiness probe: 200 once the models are loaded",
        handler="bentoml",
    ),
    Route("metrics", "GET", "/metrics", PUBLIC, "Prometheus metrics (text format)"),
    Route("openapi", "GET", "/openapi.json", PUBLIC, "This OpenAPI document"),
    Route("docs", "GET", "/docs", PUBLIC, "API docs page (Swagger UI over /openapi.json)", handler="docs"),
    Route("index", "GET", "/", PUBLIC, "API docs page", handler="docs", documented=False),
    Route(
        "docs_asset",
        "GET",
        "/docs/assets/{asset}",
        PUBLIC,
        "Swagger UI files",
        handler="docs",
        documented=False,
    ),
    Route(
        "decide",
        "POST",
        "/v1/{model}/decide",
        "decide",
        "Decide 1 to 1,000 cases; decisions come back in the same order",
        handler="decide",
        json_body=True,
    ),
    Route(
        "feedback",
        "POST",
        "/v1/feedback",
        "feedback",
        "Record a reviewer's final outcome (idempotent: a repeat returns the first record)",
        json_body=True,
        statuses=(200, 201),
    ),
    Route("decision", "GET", "/v1/decisions/{decision_id}", "read", "The logged decision with its feedback"),
    Route(
        "decisions",
        "GET",
        "/v1/decisions",
        "read",
        "A process instance's decisions (?process_instance=), oldest first, with their feedback; "
        "pages of `limit`, the next one from `after`",
    ),
    Route("models", "GET", "/v1/models", ANY_KEY, "Served models, versions, thresholds, contracts, policies"),
    Route(
        "history",
        "GET",
        "/v1/models/{model}/history",
        "read",
        "Every alias move of a model: when, by whom, from and to which version, gates, reason",
    ),
    Route(
        "reload",
        "POST",
        "/v1/admin/reload",
        "admin",
        "Re-read registry aliases and swap models",
        statuses=(200, 207),
    ),
    *(
        Route(name, method, CONSOLE + path, role, summary, handler="console", documented=False)
        for name, method, path, role, summary in (
            ("console_sign_in", "GET", "/sign-in", PUBLIC, "Console: the sign-in form"),
            ("console_sign_in_post", "POST", "/sign-in", PUBLIC, "Console: exchange a key for a session"),
            ("console_static", "GET", "/static/{asset}", PUBLIC, "Console: its style sheet"),
            ("console_sign_out", "POST", "/sign-out", "read", "Console: end the session"),
            ("console_overview", "GET", "", "read", "Console: models, versions, verdicts"),
            ("console_decisions", "GET", "/decisions", "read", "Console: decision search"),
            ("console_decisions_csv", "GET", "/decisions.csv", "read", "Console: a search as CSV"),
            ("console_decision", "GET", "/decisions/{decision_id}", "read", "Console: one decision"),
            ("console_queue", "GET", "/queue", "read", "Console: the review queue"),
            ("console_overrides", "GET", "/overrides", "read", "Console: override pairs by segment"),
            ("console_changes", "GET", "/changes", "read", "Console: alias history, champion vs challengers"),
            ("console_monitoring", "GET", "/monitoring", "read", "Console: monitoring runs per model"),
            (
                "console_monitoring_model",
                "GET",
                "/monitoring/{model}",
                "read",
                "Console: a model's runs and trends",
            ),
            ("console_run", "GET", "/runs/{run_id}", "read", "Console: one monitoring run's report"),
        )
    ),
)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


def match(method: str, path: str) -> Match | None:
    """The route a request is for, or None (the gate denies it)."""
    for route in ROUTES:
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            found = route.pattern.match(path)
            if found:
                return Match(route, found.groupdict())
    return None


def route_label(method: str, path: str) -> str:
    """Bounded label for metrics and logs: the route template, never the raw path (ids, names)."""
    found = match(method, path)
    return found.route.path if found else "other"
