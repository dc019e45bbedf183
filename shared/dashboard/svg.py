"""Charts drawn on the server as inline SVG: a line chart, a bar chart and a coverage curve.

Every chart is built with ``shared.dashboard.html.element`` (each label, title and value escaped),
colours as SVG presentation attributes (the page's CSP forbids inline ``style``), and a
``<title>`` plus ``role="img"`` and ``aria-label`` so it reads without sight. At most
``MAX_POINTS`` points a series are drawn (evenly thinned, first and last kept), so a chart of
10,000 records stays a few kilobytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from shared.dashboard.formatting import number
from shared.dashboard.html import Markup, element

WIDTH, HEIGHT = 640, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 60, 16, 28, 44
MAX_POINTS = 400
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Series:
    """One line: its name (in the legend) and a value per x position (None: a gap)."""

    name: str
    values: Sequence[float | None]


def _thin(count: int) -> list[int]:
    """The indices drawn of ``count`` points: all of them, or ``MAX_POINTS`` evenly spread."""
    if count <= MAX_POINTS:
        return list(range(count))
    step = (count - 1) / (MAX_POINTS - 1)
    return sorted({round(i * step) for i in range(MAX_POINTS)})


def _bounds(values: Sequence[float]) -> tuple[float, float]:
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    return low, high


def _frame(title: str, x_label: str, y_label: str, low: float, high: float) -> list[Markup]:
    """The axes, their labels and the y range's two ticks."""
    bottom, right = HEIGHT - MARGIN_BOTTOM, WIDTH - MARGIN_RIGHT
    return [
        element("title", None, title),
        element("line", {"x1": MARGIN_LEFT, "y1": bottom, "x2": right, "y2": bottom, "stroke": "#555"}),
        element(
            "line", {"x1": MARGIN_LEFT, "y1": MARGIN_TOP, "x2": MARGIN_LEFT, "y2": bottom, "stroke": "#555"}
        ),
        element("text", {"x": MARGIN_LEFT, "y": 16, "font-size": 13, "font-weight": "bold"}, title),
        element("text", {"x": WIDTH / 2, "y": HEIGHT - 6, "text-anchor": "middle", "font-size": 11}, x_label),
        element(
            "text",
            {
                "x": 12,
                "y": HEIGHT / 2,
                "font-size": 11,
                "text-anchor": "middle",
                "transform": f"rotate(-90 12 {HEIGHT / 2})",
            },
            y_label,
        ),
        element(
            "text", {"x": MARGIN_LEFT - 4, "y": bottom, "text-anchor": "end", "font-size": 10}, number(low)
        ),
        element(
            "text",
            {"x": MARGIN_LEFT - 4, "y": MARGIN_TOP + 8, "text-anchor": "end", "font-size": 10},
            number(high),
        ),
    ]


def _svg(title: str, parts: Sequence[Markup]) -> Markup:
    return element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {WIDTH} {HEIGHT}",
            "width": WIDTH,
            "height": HEIGHT,
            "role": "img",
            "aria-label": title,
            "class": "chart",
        },
        *parts,
    )


def _x(i: int, count: int) -> float:
    span = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    return MARGIN_LEFT + (span * i / (count - 1) if count > 1 else span / 2)


def _y(value: float, low: float, high: float) -> float:
    span = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    return HEIGHT - MARGIN_BOTTOM - span * (value - low) / (high - low)


def line_chart(
    title: str, x_labels: Sequence[str], series: Sequence[Series], x_label: str, y_label: str
) -> Markup:
    """Lines over shared x positions (``x_labels``: the first and last are written under the axis)."""
    count = len(x_labels)
    finite = [float(v) for s in series for v in s.values if v is not None and math.isfinite(v)]
    low, high = _bounds(finite)
    parts = _frame(title, x_label, y_label, low, high)
    if count:
        bottom = HEIGHT - MARGIN_BOTTOM + 14
        parts.append(element("text", {"x": MARGIN_LEFT, "y": bottom, "font-size": 10}, x_labels[0]))
        parts.append(
            element(
                "text",
                {"x": WIDTH - MARGIN_RIGHT, "y": bottom, "font-size": 10, "text-anchor": "end"},
                x_labels[-1],
            )
        )
    for n, line in enumerate(series):
        colour = PALETTE[n % len(PALETTE)]
        points = [
            f"{_x(i, count):.1f},{_y(float(line.values[i]), low, high):.1f}"
            for i in _thin(count)
            if i < len(line.values)
            and line.values[i] is not None
            and math.isfinite(float(line.values[i] or 0))
        ]
        if len(points) == 1:
            x, y = points[0].split(",")
            parts.append(element("circle", {"cx": x, "cy": y, "r": 3, "fill": colour}))
        elif points:
            parts.append(
                element(
                    "polyline",
                    {"points": " ".join(points), "fill": "none", "stroke": colour, "stroke-width": 1.5},
                )
            )
        parts.append(
            element(
                "text",
                {
                    "x": WIDTH - MARGIN_RIGHT - 4,
                    "y": MARGIN_TOP + 12 * (n + 1),
                    "text-anchor": "end",
                    "font-size": 10,
                    "fill": colour,
                },
                line.name,
            )
        )
    return _svg(title, parts)


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], x_label: str, y_label: str
) -> Markup:
    """One bar per label (at most ``MAX_POINTS``), from zero."""
    shown = list(zip(labels, values, strict=True))[:MAX_POINTS]
    low, high = _bounds([0.0, *[float(v) for _, v in shown]])
    parts = _frame(title, x_label, y_label, low, high)
    span = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    width = span / max(1, len(shown))
    for i, (label, value) in enumerate(shown):
        top, base = _y(float(value), low, high), _y(0.0, low, high)
        parts.append(
            element(
                "rect",
                {
                    "x": f"{MARGIN_LEFT + i * width + 1:.1f}",
                    "y": f"{min(top, base):.1f}",
                    "width": f"{max(1.0, width - 2):.1f}",
                    "height": f"{abs(base - top):.1f}",
                    "fill": PALETTE[0],
                },
                element("title", None, f"{label}: {number(value)}"),
            )
        )
    return _svg(title, parts)


def coverage_curve(
    title: str, points: Sequence[Sequence[float]], x_label: str = "top K keys (log scale)"
) -> Markup:
    """Share of requests (0..1) answered by the K most requested keys, K on a log axis
    (``points``: ``[[k, share], ...]`` as the advisor's JSON gives them)."""
    low, high = 0.0, 1.0
    parts = _frame(title, x_label, "share of requests", low, high)
    if points:
        top = max(1.0, math.log10(max(float(p[0]) for p in points)))
        span = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        drawn = [
            f"{MARGIN_LEFT + span * math.log10(max(1.0, float(k))) / top:.1f},{_y(float(s), low, high):.1f}"
            for k, s in points
        ]
        parts.append(
            element(
                "polyline",
                {"points": " ".join(drawn), "fill": "none", "stroke": PALETTE[0], "stroke-width": 1.5},
            )
        )
        last = int(max(float(p[0]) for p in points))
        parts.append(
            element(
                "text",
                {
                    "x": WIDTH - MARGIN_RIGHT,
                    "y": HEIGHT - MARGIN_BOTTOM + 14,
                    "text-anchor": "end",
                    "font-size": 10,
                },
                f"K={last}",
            )
        )
        parts.append(
            element("text", {"x": MARGIN_LEFT, "y": HEIGHT - MARGIN_BOTTOM + 14, "font-size": 10}, "K=1")
        )
    return _svg(title, parts)
