"""Champion vs shadow and canary for the Changes page: `keel compare`'s result as table rows.

keel.monitoring.challenger_compare.compare pairs each shadow decision with the live one it
shadows and compares a canary's cases with the champion's as two samples; this module only
words its rates, intervals and differences for the page.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SEGMENT_ROWS", "comparisons", "difference", "rate"]

SEGMENT_ROWS = 60
"""Segment rows shown per comparison (the overall row comes first)."""


def rate(r: dict[str, Any] | None) -> str:
    """A rate with its 95% interval and its base, or 'n/a' without cases."""
    if not r or r.get("rate") is None:
        return "n/a"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] of {r['n']}"


def difference(d: dict[str, Any] | None) -> str:
    """Challenger minus champion in points, with its 95% interval."""
    if not d:
        return "n/a"
    return f"{100 * d['difference']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _row(label: str, block: dict[str, Any]) -> dict[str, str]:
    return {
        "segment": label,
        "cases": str(block["challenger"]["coverage"]["n"]),
        "coverage_champion": rate(block["champion"]["coverage"]),
        "coverage_challenger": rate(block["challenger"]["coverage"]),
        "coverage_difference": difference(block.get("coverage_difference")),
        "override_champion": rate(block["champion"]["override_rate"]),
        "override_challenger": rate(block["challenger"]["override_rate"]),
        "override_difference": difference(block.get("override_difference")),
        "agreement": rate(block["agreement"]) if "agreement" in block else "",
    }


def _section(title: str, lead: str, body: dict[str, Any], paired: bool) -> dict[str, Any]:
    segments = body.get("segments") or []
    return {
        "title": title,
        "lead": lead,
        "paired": paired,
        "rows": [
            _row("all cases", body["overall"]),
            *(_row(f"{s['field']} = {s['value']}", s) for s in segments[:SEGMENT_ROWS]),
        ],
        "left_out": max(0, len(segments) - SEGMENT_ROWS),
    }


def comparisons(result: dict[str, Any]) -> dict[str, Any]:
    """The page's view of one model's comparison: its live decisions and one table per shadow
    version and for the canary (none when neither decided in the window)."""
    sections = [
        _section(
            f"Shadow v{version} vs champion",
            f"{body['pairs']} shadow decisions paired with the live decision of the same case.",
            body,
            paired=True,
        )
        for version, body in sorted(result.get("shadow", {}).items())
    ]
    canary = result.get("canary")
    if canary:
        sections.append(
            _section(
                f"Canary v{', v'.join(canary['canary_versions'])} vs champion "
                f"v{', v'.join(canary['champion_versions']) or '—'}",
                f"The canary decided {rate(canary['share_of_live'])} live cases "
                "(split by a hash of the case).",
                canary,
                paired=False,
            )
        )
    return {"live_decisions": result.get("live_decisions", 0), "sections": sections}
