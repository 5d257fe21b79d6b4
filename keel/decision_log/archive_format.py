"""What an archive of the decision log is on disk: one folder per closed month, each with Parquet
files and a signed manifest. Written by `keel.decision_log.archive`, checked offline by
`keel.decision_log.archive_verify`; both read the layout from here only.

    <url>/2026-05/decisions.parquet       the month's segment of the decisions chain
    <url>/2026-05/feedback.parquet        the month's segment of the feedback chain
    <url>/2026-05/alias_history.parquet   a whole copy (that chain always stays whole in the live log)
    <url>/2026-05/audit_plans.parquet     a whole copy, likewise
    <url>/2026-05/retention_events.parquet  a whole copy of the records chain as it stood (earlier
                                          archives, removals, restores, holds: who, when, why)
    <url>/2026-05/manifest.json           written last: a month folder without one is incomplete

A month's segment is a contiguous range of a chain's sequence numbers: every row logged before the
month's end (by `created_at`) up to the highest such seq. Rows are cut by seq, not by date, so the
segments of consecutive months join link to link; a row committed just after midnight with an
earlier timestamp lands in the month its seq falls in, and the manifest states the dates it holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from keel.decision_log.chain import CHAINS
from keel.decision_log.schema import metadata

__all__ = [
    "COPIED",
    "COPIES_OF",
    "FORMAT",
    "MANIFEST",
    "SEGMENTED",
    "Part",
    "arrow_schema",
    "file_sha256",
    "manifest_mac",
    "month_folders",
    "parts_of",
    "read_manifest",
]

FORMAT = "keel-archive/2"
MANIFEST = "manifest.json"
SEGMENTED = ("decisions", "feedback")
"""Chains cut month by month."""
COPIED = ("alias_history", "audit_plans", "retention_events")
"""Chains copied whole into every month's archive (small, and always kept whole in the live log)."""
COPIES_OF = {"keel-archive/1": ("alias_history", "audit_plans"), FORMAT: COPIED}
"""The copies each format's manifest must list (format 1 had no copy of the retention chain)."""
LINK_COLUMNS = ("prev_hash", "row_hash", "key_id")


@dataclass(frozen=True)
class Part:
    """One chain's rows in one month's archive: where the segment starts and ends in its chain."""

    file: str
    sha256: str
    rows: int
    first_seq: int | None
    last_seq: int
    """The seq of the segment's last row; with no rows, the seq the chain stood at before it."""
    prev_hash: str
    """The hash the segment's first row links to (the chain's genesis, or the previous month's end)."""
    last_hash: str
    created_min: str | None
    created_max: str | None
    legacy_until: int = 0
    """Alias moves up to this seq were chained in the pre-0004 format."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _arrow_type(column: sa.Column[Any]) -> pa.DataType:
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):  # BigInteger and the SQLite variant of seq too
        return pa.int64()
    if isinstance(kind, sa.Float):  # sa.Double included
        return pa.float64()
    return pa.string()


def arrow_schema(table: str) -> pa.Schema:
    """The Parquet schema of a chain's archived rows: seq, the hashed columns, then the links."""
    columns = metadata.tables[table].c
    names = ("seq", *CHAINS[table], *LINK_COLUMNS)
    return pa.schema([pa.field(name, _arrow_type(columns[name]), nullable=name != "seq") for name in names])


def manifest_mac(key: bytes, body: dict[str, Any]) -> str:
    """HMAC-SHA256 of the manifest body (everything but `mac`) as canonical JSON."""
    text = json.dumps({k: v for k, v in body.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def month_folders(fs: Any, root: str) -> list[str]:
    """The archive's complete month folders (those with a manifest), oldest first."""
    if not fs.exists(root):
        return []
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    months = [n for n in names if len(n) == 7 and n[4] == "-" and n.replace("-", "").isdigit()]
    return sorted(m for m in months if fs.exists(f"{root}/{m}/{MANIFEST}"))


def read_manifest(fs: Any, root: str, month: str) -> dict[str, Any]:
    with fs.open(f"{root}/{month}/{MANIFEST}", "rb") as handle:
        data: dict[str, Any] = json.loads(handle.read())
    return data


def parts_of(manifest: dict[str, Any], section: str) -> dict[str, Part]:
    return {table: Part(**part) for table, part in manifest.get(section, {}).items()}


def file_sha256(fs: Any, path: str) -> str:
    """sha256 of a file's bytes, read in 8 MiB pieces (hashlib releases the GIL on each)."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while piece := handle.read(8 << 20):
            digest.update(piece)
    return digest.hexdigest()
