"""The one way a dashboard page writes a number, so a page can be checked against ``--json``.

A float is written with ``DIGITS`` decimals (the CLI tables' own precision for metrics), an
integer as it is, a missing value as ``MISSING``; a test parses a cell back with ``float()`` and
compares it with the CLI's JSON rounded the same way (tests/dashboard).
"""

from __future__ import annotations

import math

DIGITS = 4
MISSING = "-"


def number(value: object, digits: int = DIGITS) -> str:
    """``value`` as a page shows it: ``0.1234`` for a float, ``12`` for an int, ``-`` for none."""
    if value is None or isinstance(value, bool):
        return MISSING if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def seconds(value: object) -> str:
    """An age or a duration: whole seconds (``number``) and, past a minute, in words beside it."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return MISSING
    text = f"{number(float(value), 0)} s"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{text} ({value / size:.1f} {unit})"
    return text
