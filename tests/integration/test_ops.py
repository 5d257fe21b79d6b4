"""The Grafana dashboard and Prometheus alert rules in ops/ name only metrics `keel serve` exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keel.feature_defs.contract import MODEL_NAMES, load_contract
from tests.integration.conftest import Server

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "keel-alerts.yml"
DASHBOARD = OPS / "grafana" / "keel-dashboard.json"
METRIC = re.compile(r"\bkeel_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def exported_series(server: Server) -> set[str]:
    """Every series name /metrics can carry, from its families' names and types."""
    text = server.client().get("/metrics").text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_dashboard_and_alert_rules_reference_only_exported_metrics(server: Server) -> None:
    case = load_contract("routing").example_case
    with server.client() as c:
        assert c.post("/v1/routing/decide", json={"cases": [case]}).status_code == 200
    exported = exported_series(server)
    rules, panels = rule_expressions(), dashboard_expressions()
    assert len(rules) >= 10 and len(panels) >= 12
    referenced = {name for expr in [*rules, *panels] for name in METRIC.findall(expr)}
    # The operator-facing signals the rules are for must each be watched.
    for needed in ("keel_ready", "keel_reload_failures_total", "keel_log_write_failures_total"):
        assert needed in referenced
    assert referenced - exported == set(), f"not exported by keel serve: {sorted(referenced - exported)}"
    families = text_string_to_metric_families(server.client().get("/metrics").text)
    assert any(s.name == "keel_ready" and s.value == 1.0 for f in families for s in f.samples)


def test_alert_rules_pass_promtool_when_it_is_installed() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package ships it)")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_serve_prints_one_ready_line(server: Server) -> None:
    assert server.log_path is not None
    lines = [line for line in server.log_path.read_text().splitlines() if "keel serve: ready on" in line]
    assert len(lines) == 1, server.log_path.read_text()[-2000:]
    line = lines[0]
    assert line.startswith(f"keel serve: ready on {server.url} ")
    for name in MODEL_NAMES:
        assert f"{name} v" in line
    assert f"API docs {server.url}/" in line and "api_keys table of sqlite:///" in line
