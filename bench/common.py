"""What every benchmark module shares: repeated timing with medians, and the result row.

A benchmark module is ``bench/bench_<area>.py`` with ``run(quick: bool) -> list[Row]``. Each row
compares a measured thing with a baseline measured in the same run (this machine is shared and
noisy: absolute times are not stable, ratios are), and may state a goal for the ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the bench table."""

    area: str
    what: str
    value: float  # the measured quantity (seconds, rows/s, bytes, ...)
    unit: str
    baseline: str  # what the ratio is against
    ratio: float  # value / baseline value (or the ratio the goal is stated in)
    goal: str = ""  # e.g. "<= 1.5"; empty when informational
    met: bool | None = None  # None when there is no goal


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def goal_row(
    area: str,
    what: str,
    value: float,
    unit: str,
    baseline: str,
    ratio: float,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Row:
    """A row whose ratio is checked against ``at_most`` / ``at_least`` (or none)."""
    if at_most is not None:
        return Row(area, what, value, unit, baseline, ratio, f"<= {at_most:g}", ratio <= at_most)
    if at_least is not None:
        return Row(area, what, value, unit, baseline, ratio, f">= {at_least:g}", ratio >= at_least)
    return Row(area, what, value, unit, baseline, ratio)
