"""The argument parser of every command (help shows defaults)."""

from __future__ import annotations

import argparse
from typing import Any

import keel
from keel.cli.audits import cmd_audit
from keel.cli.consistency import cmd_consistency
from keel.cli.events import cmd_events
from keel.cli.governance import (
    cmd_approve,
    cmd_canary,
    cmd_compare,
    cmd_history,
    cmd_models,
    cmd_promote,
    cmd_rollback,
    cmd_shadow,
)
from keel.cli.monitoring import cmd_monitor, cmd_simulate
from keel.cli.operations import (
    cmd_keys,
    cmd_log,
    cmd_log_key,
    cmd_score,
    cmd_serve,
    cmd_status,
    cmd_verify_archive,
    cmd_verify_log,
)
from keel.cli.training import cmd_train
from keel.feature_defs.contract import MODEL_NAMES


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each argument's default, except where there is none to show (flags, unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.help is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: help shows defaults; subparsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keel-decisions")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return keel.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keel",
        description="Serve and monitor business decision models (see README.md).",
        epilog="exit status: 0 ok; 1 the command found a problem; 2 wrong arguments or input; "
        "3 the state or service it needs is not there (keel monitor: 0 ok, 1 warning, 2 critical, "
        "3 could not run)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train, evaluate and register a model (new version -> challenger)")
    p.add_argument("model", help=f"{' | '.join(MODEL_NAMES)} | all")
    p.add_argument("--data", help="CSV or Parquet file satisfying the contract (default: generated data)")
    p.add_argument("--rows", type=int, help="rows to generate (default: KEEL_TRAIN_ROWS or 40000)")
    p.add_argument("--seed", type=int, help="generator and training seed (default: KEEL_TRAIN_SEED or 7)")
    p.add_argument("--if-missing", action="store_true", help="skip models that already have a champion")
    p.add_argument(
        "--contract", help="contract YAML defining the model (any name; needs --data); sealed in the version"
    )
    p.add_argument("--policy", help="policy YAML sealed in the version (default: the packaged one, if any)")
    p.add_argument(
        "--from-log",
        action="store_true",
        help="add reviewed cases from the decision log (overrides, labelled abstentions) and "
        "compare the new challenger with the champion on the newest reviewed cases",
    )
    p.add_argument(
        "--segment-field",
        help="certify a threshold per value of this segment field (e.g. region), jointly with the "
        "overall one (default KEEL_TRAIN_SEGMENT_FIELDS)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("promote", help="move champion to a version after its promotion gates pass")
    p.add_argument("model", help="model name (see keel models)")
    p.add_argument("version", help="registered version number (see keel models)")
    p.add_argument("--force", action="store_true", help="move even if gates fail (needs --reason)")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("approve", help="second person's approval of a pending promotion (two-person rule)")
    p.add_argument("model")
    p.add_argument("version")
    p.add_argument("--actor", help="who approves (default: the operating-system user)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("rollback", help="return champion to the previous champion")
    p.add_argument("model")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who rolls back (default: the operating-system user)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "shadow", help="score live traffic with a version beside the champion (logged, never returned)"
    )
    p.add_argument("model")
    p.add_argument("version", help="registered version, or off")
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_shadow)

    p = sub.add_parser("canary", help="serve a version to a deterministic share of cases (by case hash)")
    p.add_argument("model")
    p.add_argument("version", help="registered version, or off")
    p.add_argument("--share", type=float, help="fraction of cases the canary decides, e.g. 0.1")
    p.add_argument(
        "--auto-rollback",
        action="store_true",
        help="stop the canary when its reviewed override rate is worse than the champion's "
        "beyond KEEL_PROMOTE_OVERRIDE_TOLERANCE (checked by keel monitor and keel compare)",
    )
    p.add_argument("--reason", help="why; recorded in the alias history")
    p.add_argument("--actor", help="who moves it (default: the operating-system user)")
    p.set_defaults(func=cmd_canary)

    p = sub.add_parser(
        "compare", help="champion vs shadow or canary on live traffic and feedback, per segment"
    )
    p.add_argument("model")
    p.add_argument("--window", help="7d, 24h, 30m or START..END (default KEEL_MONITOR_WINDOW or 7d)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "history", help="every alias move and audit plan of a model: when, who, from, to, gates, reason"
    )
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the JSON of GET /v1/models/{model}/history")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "audit", help="audit sampling: plan per-segment probabilities from the log, record a plan"
    )
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    a = asub.add_parser(
        "plan",
        help="per-segment audit probabilities that catch an override increase in time; prints and writes",
    )
    a.add_argument("model")
    a.add_argument(
        "--detect", type=float, required=True, help="override-rate ratio to catch in any one segment value"
    )
    a.add_argument("--within", type=int, required=True, help="within this many monitoring windows")
    a.add_argument("--power", type=float, default=0.9, help="probability of catching it")
    a.add_argument("--budget", type=float, help="most of the decided cases to audit (a share, e.g. 0.1)")
    a.add_argument("--field", help="segment field whose values are the cells (default region, or the first)")
    a.add_argument(
        "--window", help="monitoring window the volumes are read over (default KEEL_MONITOR_WINDOW)"
    )
    a.add_argument("--alpha", type=float, help="the test's level (default KEEL_MONITOR_PROCESS_DRIFT_P)")
    a.add_argument(
        "--cross-share", type=float, help="share of audits for cross reviewers (default KEEL_AUDIT_*)"
    )
    a.add_argument("--out", help="plan file to write (default audit-plan-MODEL.json)")
    a = asub.add_parser(
        "set", help="record a plan file as the model's audit plan (every replica picks it up)"
    )
    a.add_argument("model")
    a.add_argument("--plan", required=True, help="plan file (as `keel audit plan` writes it)")
    a.add_argument("--reason", help="why; recorded with the plan")
    a.add_argument("--actor", help="who sets it (default: the operating-system user)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("models", help="list registered champion, challenger, shadow and canary versions")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="run the decision service")
    p.add_argument("--host", help="interface to bind (default: KEEL_SERVE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default: KEEL_SERVE_PORT or 3000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "keys",
        help="API keys: add, list, revoke, rotate (a new key is printed once; only its hash is stored)",
    )
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k = ksub.add_parser("add", help="create a key and print it once")
    k.add_argument("name", help="who uses the key; recorded as the caller of every decision")
    k.add_argument(
        "--role",
        nargs="+",
        action="extend",
        required=True,
        choices=["decide", "feedback", "read", "review", "admin"],
        help="one or more roles (review = read + feedback); repeat --role or list several after one",
    )
    k.add_argument("--if-missing", action="store_true", help="do nothing if an active key has this name")
    k.add_argument("--rate", type=float, help="requests per second this key may make (default: KEEL_KEYS_*)")
    ksub.add_parser("list", help="list keys (names, roles, state; never the keys)")
    k = ksub.add_parser("revoke", help="revoke a key (its name can be used again)")
    k.add_argument("name", help="the key's name")
    k = ksub.add_parser(
        "rotate", help="replace a key with a new one of the same name and roles (e.g. a lost key)"
    )
    k.add_argument("name", help="the key's name")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("simulate", help="send realistic traffic and reviewer feedback to a running service")
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the running service")
    p.add_argument("--key", help="API key with decide and feedback roles (default: $KEEL_KEY)")
    p.add_argument("--model", default="all", help="a model name or all")
    p.add_argument("--cases", type=int, default=500, help="cases per model")
    p.add_argument(
        "--scenario",
        default="none",
        help="none | covariate_shift | concept_shift | segment_overrides | region_process_change | "
        "review_practice (EMEA's local reviewers override more) | rule_change (the truth changes "
        "for 30%% of EMEA's cases) | reviewer_disagreement (EMEA's reviewers disagree with each other; "
        "reviewed cases are submitted again and reviewed by another person)",
    )
    p.add_argument("--batch-size", type=int, default=20, help="cases per decide request")
    p.add_argument("--rate", type=float, default=0.0, help="max requests per second (0 = unthrottled)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = no limit)")
    p.add_argument("--feedback-share", type=float, default=0.3, help="share of decided cases reviewed")
    p.add_argument(
        "--duplicate-share",
        type=float,
        default=None,
        help="share of reviewed cases submitted again under the same case_id and reviewed by another "
        "person (default 0, 0.5 with reviewer_disagreement)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated cases and reviewers")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "monitor",
        help="drift, override and process-drift reports (exit 0 ok, 1 warn, 2 alert, "
        "3 could not run); `monitor explain DECISION_ID` renders one decision",
    )
    p.add_argument("target", help="a registered model's name | all | explain")
    p.add_argument("decision_id", nargs="?", help="with explain: the decision to render")
    p.add_argument(
        "--window", help="7d, 24h, 30m or START..END in ISO 8601 (default KEEL_MONITOR_WINDOW or 7d)"
    )
    p.add_argument("--out", help="report folder (default $KEEL_HOME/reports) or, with explain, the HTML file")
    p.add_argument("--json", action="store_true", help="print one JSON summary line per model")
    p.add_argument(
        "--include-batch", action="store_true", help="also count batch decisions (keel score --log)"
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "consistency",
        help="counterfactual audit: how often outcome, route and abstention would change with another "
        "value of each segment field (exit 1 when an invariant field fails its tolerance)",
    )
    p.add_argument("model", help="model name (see keel models)")
    p.add_argument("--window", default="7d", help="7d, 24h, 30m or START..END in ISO 8601 (default 7d)")
    p.add_argument("--sample", type=int, default=2000, help="most logged decisions audited (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the entity a region takes and of samples")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--include-batch", action="store_true", help="also audit batch decisions (keel score --log)"
    )
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser(
        "score", help="decide a Parquet/CSV file of cases in batch, exactly as the online route would"
    )
    p.add_argument("model", help="model name (see keel models)")
    p.add_argument("--input", required=True, help="Parquet or CSV file of cases (contract fields, case_id)")
    p.add_argument("--output", required=True, help="decisions: .parquet, .csv or .jsonl")
    p.add_argument("--errors", help="rejected cases with field-level problems (default OUTPUT.errors.SUFFIX)")
    p.add_argument("--engine", choices=["local", "spark"], default="local")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", help="model version (default: the champion)")
    which.add_argument("--alias", help="registry alias (default champion)")
    p.add_argument("--log", action="store_true", help="record the decisions in the decision log, as batch")
    p.add_argument("--run-id", help="names the run in the log (default: from version, file and chunking)")
    p.add_argument(
        "--context",
        metavar="JSON",
        help='correlation context of every row, e.g. \'{"process_definition_id": "ap-nightly"}\' '
        "(context.<field> columns override it per row)",
    )
    p.add_argument("--traceparent", help="W3C traceparent stored with every decision of the run")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("verify-log", help="check the decision log's hash chains on one snapshot")
    p.add_argument("--checkpoint", help="signed checkpoint file: check the earlier ones, append a new one")
    p.set_defaults(func=cmd_verify_log)

    p = sub.add_parser("log", help="the decision log's life cycle: archive, remove, restore, hold, retention")
    gsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    g = gsub.add_parser("archive", help="write closed months as Parquet + signed manifest, verified")
    g.add_argument(
        "--before", required=True, help="first day of a month (YYYY-MM-01): archive every month before it"
    )
    g.add_argument("--to", required=True, help="folder or fsspec URL (file://, memory://, s3://...)")
    g = gsub.add_parser("maintain", help="PostgreSQL: make the coming months' partitions, move strays in")
    g = gsub.add_parser("remove", help="archived months leave the live log (verified first, holds kept)")
    g.add_argument("--archive", required=True, help="the archive's folder or fsspec URL")
    g.add_argument("--through", required=True, help="last month to remove (YYYY-MM), oldest first")
    g = gsub.add_parser("restore", help="bring archived months back into the live log (to investigate)")
    g.add_argument("month", help="the earliest month to bring back (YYYY-MM); later removed ones come too")
    g.add_argument("--archive", required=True, help="the archive's folder or fsspec URL")
    for action in ("hold", "release"):
        g = gsub.add_parser(
            action, help="put a month under legal hold" if action == "hold" else "release a legal hold"
        )
        g.add_argument("month", help="YYYY-MM")
    g = gsub.add_parser("retention", help="what the retention policy (KEEL_RETENTION_*) says is due; --apply")
    g.add_argument("--archive", required=True, help="the archive's folder or fsspec URL")
    g.add_argument("--apply", action="store_true", help="remove and delete what is due")
    for g in gsub.choices.values():
        if g.prog.split()[-1] in ("remove", "restore", "hold", "release", "retention"):
            g.add_argument("--actor", help="who (default: the operating-system user)")
            g.add_argument("--reason", default="", help="why (kept in the retention chain)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("verify-archive", help="check an archive offline: signatures, files, hash chains")
    p.add_argument("path", help="the archive's folder or fsspec URL")
    p.add_argument("--key-file", help="the chain key file (default $KEEL_LOG_KEY_FILE)")
    p.add_argument("--live", action="store_true", help="also check the live log continues from the archive")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify_archive)

    p = sub.add_parser(
        "events", help="the event outbox: deliver it (where no keel serve runs), list it, retry failed, purge"
    )
    esub = p.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    esub.add_parser(
        "deliver", help="deliver every due event once to the configured sinks (exit 1: some left)"
    )
    e = esub.add_parser("list", help="the newest events with their delivery state, and counts per state")
    e.add_argument("--status", choices=["pending", "delivered", "failed"], help="only events in this state")
    e.add_argument("--limit", type=int, default=50, help="most events listed")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    esub.add_parser("retry", help="make every failed event pending again")
    esub.add_parser(
        "purge", help="delete delivered and failed events past KEEL_EVENTS_KEEP_*_DAYS (never pending ones)"
    )
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("log-key", help="create (or --rotate) the chain key file every replica receives")
    lsub = p.add_subparsers(dest="log_key_command", required=True)
    k = lsub.add_parser("create", help="write a new key file (default $KEEL_LOG_KEY_FILE)")
    k.add_argument("--file", help="where to write it")
    k.add_argument("--rotate", action="store_true", help="add a new current key to an existing file")
    p.set_defaults(func=cmd_log_key)
    p = sub.add_parser(
        "status", help="state directory, MLflow store and decision log in use; models, versions, log size"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.set_defaults(func=cmd_status)
    return parser
