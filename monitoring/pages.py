"""Jinja2 rendering of the monitoring pages (templates in monitoring/templates, autoescaped)."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["percent", "render"]


def percent(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    return f"{100 * float(value):.{digits}f}%"


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("keel.monitoring", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = percent
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)
