"""The console's run page: the reviewer-agreement section read from a stored run's summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keel.console.monitoring_pages import _reviewer_rows
from keel.monitoring.reviewer_agreement import agreement_report


def _summary() -> dict[str, object]:
    rng = np.random.default_rng(2)
    rows = []
    for i in range(900):
        region = ["NA", "EMEA", "APAC"][i % 3]
        # Product line p1 holds all of EMEA's pairs and a third of the others': EMEA's doing.
        product = "p1" if region == "EMEA" or i % 2 else "p2"
        first = str(rng.choice(list("abcd")))
        second = (
            str(rng.choice(list("abcd"))) if rng.random() < (0.5 if region == "EMEA" else 0.02) else first
        )
        rows.append({"case": f"c{i}", "source": "duplicate_case", "first": first, "second": second,
                     "first_actor": "r1", "second_actor": "r2", "region": region,
                     "product_line": product})  # fmt: skip
    reviewers = agreement_report(pd.DataFrame(rows), ["region", "product_line"]).to_dict()
    return {"consistency": {"fields": [], "reviewers": reviewers}}


def test_values_whose_reviewers_agree_less_come_first() -> None:
    shown = _reviewer_rows(_summary())
    assert shown is not None and shown["n_pairs"] == 900 and shown["total"] == 5
    assert shown["rows"][0]["value"] == "EMEA" and shown["rows"][0]["agrees_less"]
    assert not any(r["agrees_less"] for r in shown["rows"][1:])
    assert shown["sentences"] and "EMEA" in shown["sentences"][0]


def test_runs_stored_before_reviewer_agreement_show_no_section() -> None:
    assert _reviewer_rows({}) is None
    assert _reviewer_rows({"consistency": {"fields": []}}) is None
    assert _reviewer_rows({"consistency": None}) is None


def test_the_run_pages_section_renders_with_the_consoles_strict_templates() -> None:
    from pathlib import Path

    from jinja2 import Environment, PackageLoader, StrictUndefined

    import keel.console
    from keel.console.app import _num, _pct

    env = Environment(
        loader=PackageLoader("keel.console", "templates"), undefined=StrictUndefined, autoescape=True
    )
    env.filters.update(num=_num, pct=_pct)
    env.get_template("run.j2")  # the page compiles
    page = (Path(keel.console.__file__).parent / "templates" / "run.j2").read_text()
    section = page[page.index("{% if reviewers is not none %}") : page.index("{% if notes %}")]
    html = env.from_string(section).render(reviewers=_reviewer_rows(_summary()))
    assert "Reviewer agreement" in html and "region = EMEA" in html and "900 duplicate case" in html
    assert "no, explained by region EMEA" in html  # product line p1
    few = _summary()
    few["consistency"]["reviewers"]["by_segment"]["region"][0]["p_lower"] = None  # type: ignore[index]
    assert "not compared (too few pairs)" in env.from_string(section).render(reviewers=_reviewer_rows(few))
    empty = {"consistency": {"reviewers": {**_summary()["consistency"]["reviewers"], "n_pairs": 0}}}
    assert "No case of this window was reviewed by two people" in env.from_string(section).render(
        reviewers=_reviewer_rows(empty)
    )
