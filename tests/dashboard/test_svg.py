"""The SVG charts: titles and labels escaped, points thinned, axis labels present."""

from __future__ import annotations

from page_parser import parse, scripts_or_handlers

from shared.dashboard.svg import MAX_POINTS, Series, bar_chart, coverage_curve, line_chart


def test_a_line_chart_escapes_its_title_and_names_and_thins_its_points() -> None:
    title = "<script>alert(1)</script>"
    labels = [f"t{i}" for i in range(10_000)]
    chart = line_chart(
        title, labels, [Series("<img src=x onerror=y>", [i / 10_000 for i in range(10_000)])], "x", "y"
    )
    page = parse(chart)
    assert "<script" not in chart and "<img" not in chart and scripts_or_handlers(page) == []
    (polyline,) = [attrs for tag, attrs in page.tags if tag == "polyline"]
    assert len((polyline["points"] or "").split()) == MAX_POINTS
    texts = page.all_text()
    assert title in texts and "t0" in texts and "t9999" in texts and "<img src=x onerror=y>" in texts
    assert ("svg", {}) not in page.tags and any(t == "title" for t, _ in page.tags)


def test_gaps_and_a_single_point_still_draw() -> None:
    page = parse(line_chart("one", ["a"], [Series("s", [0.5])], "x", "y"))
    assert [t for t, _ in page.tags].count("circle") == 1
    page = parse(line_chart("gaps", ["a", "b", "c"], [Series("s", [None, 1.0, float("nan")])], "x", "y"))
    assert [t for t, _ in page.tags].count("circle") == 1


def test_a_bar_chart_has_a_bar_per_label_and_a_coverage_curve_a_line() -> None:
    page = parse(bar_chart("served", ["d1", "d2"], [3.0, 5.0], "day", "served"))
    assert [t for t, _ in page.tags].count("rect") == 2 and "d2: 5.0000" in page.all_text()
    curve = parse(coverage_curve("coverage", [[1, 0.2], [10, 0.6], [100, 1.0]]))
    assert [t for t, _ in curve.tags].count("polyline") == 1 and "K=100" in curve.all_text()
