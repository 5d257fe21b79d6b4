"""The console's server-side SVG: well-formed, escaped, honest about gaps and empty series."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from keel.console.charts import Series, line_chart, status_marks

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # raises on anything not well-formed XML


def test_titles_labels_and_run_times_are_escaped() -> None:
    hostile = '<script>alert("x")</script> & "quotes"'
    svg = line_chart("c1", hostile, [hostile, "b"], Series(hostile, [0.1, 0.2]), hostile)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    root = _parse(svg)
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == hostile  # escaped in the markup, intact when read
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c1-title c1-desc"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert hostile in texts and "Monitoring run (oldest left, UTC)" in texts  # both axes labelled
    marks = status_marks(hostile, ["ok", "<b>"])
    assert "<b>" not in marks.replace("<svg", "").replace("<rect", "").replace("<title", "")
    _parse(marks)


def test_an_empty_series_draws_a_frame_that_says_so() -> None:
    for labels, values in (([], []), (["a", "b"], [None, None])):
        root = _parse(line_chart("e", "Empty", labels, Series("rate", values), "rate", percent=True))
        assert not list(root.iter(f"{SVG}polyline")) and not list(root.iter(f"{SVG}circle"))
        assert "No data in these runs" in [t.text for t in root.iter(f"{SVG}text")]
        desc = root.find(f"{SVG}desc")
        assert desc is not None and desc.text == "No rate recorded in these runs."


def test_none_values_break_the_line_and_the_band() -> None:
    labels = [f"run {i}" for i in range(6)]
    values = [0.1, 0.2, None, 0.3, 0.35, float("nan")]
    low = [0.05, 0.1, None, 0.2, None, None]
    high = [0.2, 0.3, None, 0.4, None, None]
    root = _parse(line_chart("n", "Override", labels, Series("override rate", values, low, high), "r", True))
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2  # runs 0-1 and 3-4: no line across the gap
    assert [len(line.get("points", "").split()) for line in lines] == [2, 2]
    points = [c.find(f"{SVG}title") for c in root.iter(f"{SVG}circle")]
    assert [p.text for p in points if p is not None] == [
        "run 0: 10%",
        "run 1: 20%",
        "run 3: 30%",
        "run 4: 35%",
    ]
    bands = list(root.iter(f"{SVG}polygon"))
    assert len(bands) == 2  # runs 0-1, and run 3 alone as a short bar
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "latest 35%" in (desc.text or "")


def test_values_beyond_the_axis_stay_inside_the_plot_and_the_reference_line_is_drawn() -> None:
    root = _parse(
        line_chart(
            "s",
            "Evidence",
            ["a", "b"],
            Series("evidence", [0.4, 3.2]),
            "evidence",
            reference=1.0,
            reference_label="alarm",
        )
    )
    ys = [float(c.get("cy", "0")) for c in root.iter(f"{SVG}circle")]
    frame = root.find(f"{SVG}rect")
    assert frame is not None
    top, bottom = float(frame.get("y", "0")), float(frame.get("y", "0")) + float(frame.get("height", "0"))
    assert all(top <= y <= bottom for y in ys) and ys[1] < ys[0]
    assert "alarm" in [t.text for t in root.iter(f"{SVG}text")]
    assert any(line.get("stroke-dasharray") for line in root.iter(f"{SVG}line"))
    # a single run is drawn as a point in the middle, without a line
    one = _parse(line_chart("o", "One", ["a"], Series("x", [0.5]), "x", percent=True))
    assert len(list(one.iter(f"{SVG}circle"))) == 1 and not list(one.iter(f"{SVG}polyline"))


def test_status_marks_read_out_their_statuses_oldest_first() -> None:
    root = _parse(status_marks("Override rate", ["ok", "warn", "alert", "no_data"]))
    assert root.get("aria-label") == "Override rate: ok, warn, alert, no data (oldest first)"
    assert [r.get("class") for r in root.iter(f"{SVG}rect")] == [
        "mark-ok", "mark-warn", "mark-alert", "mark-no_data",
    ]  # fmt: skip
    assert "no runs" in (_parse(status_marks("x", [])).get("aria-label") or "")
