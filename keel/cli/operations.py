"""Running Keel: serve, keys, verify-log, log archive, verify-archive, log-key, status, score."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from keel.cli.common import _actor, _state


def cmd_serve(args: argparse.Namespace) -> int:
    from keel.cli import state
    from keel.cli.ready_line import announce_start, announce_when_ready
    from keel.serving.server import serve
    from keel.serving.settings import ServingSettings
    from keel.settings import StateSettings

    settings = StateSettings()
    # Refuse to start on a store that is not there (it would wait forever for models).
    state.require(settings, registry=True)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serving = ServingSettings(**overrides)

    def announce(rt: Any, sessions: Any) -> None:
        announce_start(rt.state, serving)
        announce_when_ready(rt, sessions)

    def mounts(rt: Any, sessions: Any) -> dict[str, Any]:
        from keel.console import StoredRuns, console_app
        from keel.serving.routes import CONSOLE

        # Monitoring runs live in the decision log's database: every replica reads the same ones.
        return {CONSOLE: console_app(rt, sessions, StoredRuns(rt.decisions.db))}

    serve(settings, serving, announce, mounts)
    return 0


def _keys(create: bool) -> Any:
    """The key store; only `keys add` may create the state it lives in."""
    from keel.cli.state import announce
    from keel.decision_log.database import Database
    from keel.serving.keys import KeyStore
    from keel.settings import StateSettings

    state = StateSettings()
    if create:
        state.home_dir.mkdir(parents=True, exist_ok=True)
        announce(state)
    else:
        state = _state(registry=False, log=True)
    db = Database(state.log_url)
    db.create_schema()
    return KeyStore(db)


def cmd_keys(args: argparse.Namespace) -> int:
    store = _keys(create=args.keys_command == "add")
    if args.keys_command == "add":
        if args.if_missing and any(k.name == args.name for k in store.list_keys() if not k.revoked_at):
            print(f"key {args.name!r} exists; not creating another (--if-missing)")
            return 0
        key = store.add(args.name, args.role, args.rate)
        print(f"created key {args.name!r} with roles {', '.join(sorted(args.role))}; it is shown only once:")
        print(f"export KEEL_KEY={key}")
    elif args.keys_command == "list":
        for k in store.list_keys():
            state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
            print(f"{k.name}\t{','.join(sorted(k.roles))}\t{k.created_at}\t{state}")
    elif args.keys_command == "rotate":
        key = store.rotate(args.name)
        print(f"key {args.name!r} replaced (same roles); the old key no longer works. Shown only once:")
        print(f"export KEEL_KEY={key}")
    else:
        store.revoke(args.name)
        print(f"revoked key {args.name!r}")
    return 0


def cmd_verify_log(args: argparse.Namespace) -> int:
    from keel.cli.verification import verify_log
    from keel.settings import StateSettings

    state: StateSettings = _state(registry=False, log=True)
    return verify_log(state.log_url, Path(args.checkpoint) if args.checkpoint else None)


def cmd_log(args: argparse.Namespace) -> int:
    from keel.cli.archives import archive_log
    from keel.cli.records import records

    state = _state(registry=False, log=True)
    if args.log_command == "archive":
        return archive_log(state.log_url, args.before, args.to)
    return records(state.log_url, args, _actor(args) if hasattr(args, "actor") else "")


def cmd_verify_archive(args: argparse.Namespace) -> int:
    from keel.cli.archives import check_archive

    # Offline by design: no state is read unless the live log is asked for.
    live = _state(registry=False, log=True).log_url if args.live else None
    return check_archive(args.path, Path(args.key_file) if args.key_file else None, live, args.json)


def cmd_log_key(args: argparse.Namespace) -> int:
    from keel.cli.verification import log_key_create

    return log_key_create(Path(args.file) if args.file else None, args.rotate)


def cmd_status(args: argparse.Namespace) -> int:
    from keel.cli.status import status_lines

    for line in status_lines(as_json=args.json):
        print(line)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from keel.cli.score import score

    return score(args)
