"""The worked example (examples/invoice_approval) as a person runs it, against a real `keel serve`:
30 BPMN process instances on SpiffWorkflow with 0 errors, and every decision and feedback found
again by its process instance id, with the context the instance sent; and an instance restored
from its persisted state and run again gets Keel's first answers, not second ones."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from keel.client import Context, KeelClient
from tests.integration.conftest import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoice_approval"


def test_the_invoice_approval_process_runs_30_instances_each_found_by_its_process_instance(
    server: Server,
) -> None:
    args = ["--url", server.url, "--key", server.keys["all"], "--instances", "30", "--json"]
    run = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["errors"] == [] and len(report["instances"]) == 30

    routes, abstained, refused = set(), 0, 0
    with KeelClient(server.url, server.keys["read"]) as keel:
        for instance in report["instances"]:
            pid = instance["process_instance_id"]
            found = list(keel.process_decisions(pid))
            assert [d.decision_id for d in found] == [instance["decision_id"]], pid
            decision = found[0]
            assert decision.context == Context(
                process_definition_id="invoice_approval",
                process_definition_version=report["process_definition_version"],
                process_instance_id=pid,
                element_id="classify_invoice",
                business_key=instance["business_key"],
            )
            routes.add(decision.route)
            abstained += decision.abstained

            # Every person's outcome came back as feedback, from the element that sent it.
            assert sorted(f.feedback_id for f in decision.feedback) == sorted(instance["feedback_ids"])
            by_element = {f.context.element_id: f for f in decision.feedback if f.context is not None}
            assert len(by_element) == len(decision.feedback)
            assert all(f.context.process_instance_id == pid for f in decision.feedback if f.context)
            finance_refused = decision.route == "finance_approval" and not instance["finance_approved"]
            refused += finance_refused
            review = by_element.get("send_review")
            assert (review is not None) == (decision.route == "human_review" or finance_refused), pid
            if review is not None:
                assert review.final_outcome == instance["final_outcome"]
                assert (review.kind == "label") == decision.abstained
            else:
                assert instance["final_outcome"] == decision.outcome
            audit = by_element.get("send_audit")
            assert decision.audit is not None
            assert (audit is not None) == decision.audit.selected, pid
            if audit is not None:
                assert audit.reviewer_pool == decision.audit.pool
            assert instance["status"] == (
                "posted" if instance["final_outcome"] == "clean" else f"queued:{instance['final_outcome']}"
            )

    assert routes == {"auto", "finance_approval", "human_review"}
    assert refused >= 1  # two of the four new vendors' invoices are over the approver's 15,000 USD
    # 7 of the 30 sample invoices sit on four of the checklist's edges at once; the session's
    # invoice model abstains on about 60% of such cases, so none of 7 abstaining is ~0.1%.
    assert abstained >= 1


def _example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/invoice_approval/run.py imported as its script runs (its folder on the path)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    spec = importlib.util.spec_from_file_location("invoice_approval_run", EXAMPLE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_instance_run_again_from_its_persisted_state_gets_keels_first_answers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _example(monkeypatch)
    from stand_ins import sample_invoices  # the example's folder is on the path now

    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    spec, version = example.load_process()
    invoice = sample_invoices(4)[3]  # over 50,000 USD: decided, then reviewed by policy
    with KeelClient(server.url, server.keys["all"]) as keel:
        workflow = example.start_instance(spec, version, keel, invoice)
        saved = serializer.serialize_json(workflow)  # persisted; then the worker ran it and crashed
        first = example.finish(workflow)
        again = serializer.deserialize_json(saved)
        again.script_engine = example.KeelServices(keel)
        second = example.finish(again)
        assert second == first and first["route"] == "human_review" and first["feedback_ids"]
        found = list(keel.process_decisions(first["process_instance_id"]))
    assert [d.decision_id for d in found] == [first["decision_id"]]
    assert sorted(f.feedback_id for f in found[0].feedback) == sorted(first["feedback_ids"])
