"""Run the invoice-approval BPMN process (invoice_approval.bpmn) with SpiffWorkflow and Keel.

    python examples/invoice_approval/run.py --url http://127.0.0.1:3000 --key $KEEL_KEY --instances 10

(--key defaults to $KEEL_KEY.)

Keel decides each invoice's exception path; the process posts it, queues the exception, asks
finance, or asks a person, and sends every person's outcome back to Keel as feedback. Every call
carries the correlation context of the process instance, so GET /v1/decisions?process_instance=
finds what each instance asked. The people are stand-ins (stand_ins.py). See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.specs.bpmn_process_spec import BpmnProcessSpec
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskState
from stand_ins import PEOPLE, sample_invoices

from keel.client import Context, KeelClient

BPMN = Path(__file__).with_name("invoice_approval.bpmn")
PROCESS_ID = "invoice_approval"
MAX_STEPS = 20
"""Rounds of engine steps and user tasks per instance; this process needs at most four."""


def load_process(path: Path = BPMN) -> tuple[BpmnProcessSpec, str]:
    """The parsed process (validated against the BPMN 2.0 schema) and its version: the first
    12 hex digits of the file's sha256, so a changed diagram is a new version in Keel's log."""
    parser = SpiffBpmnParser(validator=VALIDATOR)
    parser.add_bpmn_file(str(path))
    return parser.get_spec(PROCESS_ID), hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def context_of(task: Task) -> Context:
    """Which process step is asking: the instance's ids (kept in the workflow's data, which
    SpiffWorkflow persists with the instance) and the BPMN element the task runs."""
    workflow = task.workflow.top_workflow
    return Context(
        process_definition_id=workflow.spec.name,
        process_definition_version=workflow.data["process_definition_version"],
        process_instance_id=workflow.data["process_instance_id"],
        element_id=task.task_spec.bpmn_id,
        business_key=workflow.data["business_key"],
    )


class KeelServices(PythonScriptEngine):  # type: ignore[misc]
    """Runs the service tasks' operators (`keel/decide`, `keel/feedback`) with keel.client."""

    def __init__(self, keel: KeelClient) -> None:
        super().__init__()
        self.keel = keel

    def call_service(
        self, task: Task, operation_name: str, operation_params: dict[str, Any], **_: Any
    ) -> str:
        params = {name: p["value"] for name, p in operation_params.items()}
        # The task's id is unique per execution and stays the same when the engine reloads a
        # persisted instance, so a worker that crashed and runs the task again gets the answer
        # Keel recorded the first time instead of a second decision.
        once = str(task.id)
        answer: BaseModel
        if operation_name == "keel/decide":
            answer = self.keel.decide(params["model"], params["case"], context_of(task), idempotency_key=once)
        elif operation_name == "keel/feedback":
            answer = self.keel.feedback(**params, context=context_of(task), idempotency_key=once)
        else:
            raise ValueError(f"no service operator {operation_name!r}")
        return answer.model_dump_json()  # SpiffWorkflow stores the JSON in the result variable


def start_instance(
    spec: BpmnProcessSpec, version: str, keel: KeelClient, invoice: dict[str, Any]
) -> BpmnWorkflow:
    """A new process instance for one invoice, not run yet."""
    workflow = BpmnWorkflow(spec, script_engine=KeelServices(keel))
    workflow.data.update(
        process_instance_id=str(uuid.uuid4()),
        process_definition_version=version,
        business_key=invoice["case_id"],
    )
    workflow.get_tasks(state=TaskState.READY)[0].data["invoice"] = invoice
    return workflow


def finish(workflow: BpmnWorkflow) -> dict[str, Any]:
    """Run an instance to its end; returns what it did."""
    for _ in range(MAX_STEPS):
        workflow.do_engine_steps()
        waiting = workflow.get_tasks(state=TaskState.READY, manual=True)
        if not waiting:
            break
        for task in waiting:  # STAND-IN: a person completes the user task (stand_ins.py)
            task.data.update(PEOPLE[task.task_spec.bpmn_id](task.data))
            task.run()
    if not workflow.is_completed():
        raise RuntimeError(f"instance {workflow.data['process_instance_id']} did not finish")
    data = workflow.data
    return {
        "process_instance_id": data["process_instance_id"],
        "business_key": data["business_key"],
        "decision_id": data["decision"]["decision_id"],
        "route": data["decision"]["route"],
        "keel_outcome": data["decision"]["outcome"],
        "finance_approved": data.get("approved"),
        "final_outcome": data["final_outcome"],
        "status": data["status"],
        "feedback_ids": [data[k]["feedback_id"] for k in ("review_feedback", "audit_feedback") if k in data],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the Keel service")
    parser.add_argument(
        "--key",
        default=os.environ.get("KEEL_KEY"),
        required="KEEL_KEY" not in os.environ,
        help="an API key with the decide and feedback roles (default: $KEEL_KEY)",
    )
    parser.add_argument("--instances", type=int, default=10, help="process instances to run")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample invoices")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    args = parser.parse_args(argv)

    spec, version = load_process()
    done, errors = [], []
    with KeelClient(args.url, args.key) as keel:
        for invoice in sample_invoices(args.instances, args.seed):
            try:
                done.append(finish(start_instance(spec, version, keel, invoice)))
            except Exception as exc:  # a failed instance is counted; the next one runs
                errors.append({"business_key": invoice["case_id"], "error": repr(exc)})
                print(f"{invoice['case_id']}: {exc!r}", file=sys.stderr)
            else:
                if not args.json:
                    i = done[-1]
                    print(f"{i['business_key']}  {i['process_instance_id']}  route={i['route']:<16} "
                          f"keel={i['keel_outcome'] or 'abstained'}  final={i['final_outcome']}  "
                          f"{i['status']}  feedback={len(i['feedback_ids'])}")  # fmt: skip
    if args.json:
        print(json.dumps({"process_definition_version": version, "instances": done, "errors": errors}))
    else:
        print(f"{len(done)} instances finished, {len(errors)} errors (process version {version})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
