"""What a data fault record says, in plain JSON: ``details`` of a ``ValidationFailed``, column
names for a message, and ``jsonable`` for every record written from a file's values (quarantine
reasons, monitoring records).

Names and sample values come from the file: they are cut (``caps.MAX_VALUE_CHARS``), so one huge
cell cannot make a huge record.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from shared.record_caps import cut_text, cut_value

MAX_NAMES_LISTED = 20  # column names quoted in one message


def details(
    columns: list[str] | None = None,
    rows: list[int] | None = None,
    samples: list[Any] | None = None,
    count: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The ``details`` of a ``ValidationFailed``: where the fault is and what it looks like."""
    # Names and sample values come from the file: cut, so that one huge cell cannot make a huge
    # reason (caps.MAX_VALUE_CHARS).
    return {
        "columns": [cut_text(str(c)) for c in (columns or [])],
        "rows": rows or [],
        "samples": [cut_value(jsonable(v)) for v in (samples or [])],
        "count": count,
        **extra,
    }


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (numpy scalars unwrapped; NaN and infinities as strings), deeply."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def names_listed(columns: Collection[Any]) -> str:
    """Column names for a message: the first ``MAX_NAMES_LISTED``, each cut, quoted."""
    listed = [str(c) for c in columns]
    shown = ", ".join(repr(cut_text(c)) for c in listed[:MAX_NAMES_LISTED])
    return f"[{shown}{', ...' if len(listed) > MAX_NAMES_LISTED else ''}]"
