"""Size caps of what the system writes about a data file: sample values, and whole records.

A file's own cells end up in what is written about it: a quarantine reason names sample bad
values, the "done" marker and the monitoring record repeat the reason's message, a log line says
it again. A file with one 10 MB cell once made a 20 MB reason, a 10 MB marker, a 20 MB monitoring
record and a 10 MB log line. So:

- every sample value (and column name) put into a message or a record is cut to
  ``MAX_VALUE_CHARS`` characters, marked as cut (``cut_text``): where messages are built;
- every record as a whole is kept under ``MAX_RECORD_BYTES`` (``fit_record``): at the one place
  each kind of record is written (quarantine reason, processed marker, monitoring record, log
  line). An oversized record is still valid JSON with its key fields and a ``cut`` marker; a text
  log line is cut at its end (``cut_line``).

No heavy imports: ``shared.logs`` uses this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

MAX_VALUE_CHARS = 200  # one sample value or name in a message or record
MAX_MESSAGE_CHARS = 2000  # a key field (a message) of a record that had to be cut
MAX_LIST_ITEMS = 20  # items of a list kept in a record that had to be cut
MAX_RECORD_BYTES = 64 * 1024  # one record or log line, as written (UTF-8)
CUT_FIELD = "cut"  # the marker of a record that was over MAX_RECORD_BYTES

_CUT_MARK = re.compile(r"…\[cut from \d+ chars\]")


def cut_text(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` if at most ``limit`` characters, else its first ``limit`` and a visible mark.

    Cutting a text that was already cut at the same limit leaves it as it is.
    """
    if len(text) <= limit or _CUT_MARK.fullmatch(text, limit):
        return text
    return f"{text[:limit]}…[cut from {len(text)} chars]"


def cut_value(value: Any, chars: int = MAX_VALUE_CHARS, items: int | None = None) -> Any:
    """``value`` with every string in it (keys too) cut to ``chars``, deeply; lists (and dicts)
    cut to their first ``items`` entries when ``items`` is given."""
    if isinstance(value, str):
        return cut_text(value, chars)
    if isinstance(value, dict):
        pairs = list(value.items())[:items] if items is not None else value.items()
        return {cut_text(str(k), chars): cut_value(v, chars, items) for k, v in pairs}
    if isinstance(value, list | tuple):
        kept = value[:items] if items is not None else value
        return [cut_value(v, chars, items) for v in kept]
    return value


def cut_line(line: str, limit: int = MAX_RECORD_BYTES) -> str:
    """A line of text kept under ``limit`` bytes (UTF-8): its start, and a visible mark."""
    encoded = line.encode()
    if len(encoded) <= limit:
        return line
    head = encoded[: limit - 64].decode(errors="ignore")  # 64 bytes left for the mark
    return f"{head}…[cut from {len(line)} chars]"


def fit_record(
    record: dict[str, Any],
    keep: Collection[str],
    render: Callable[[dict[str, Any]], str],
    limit: int = MAX_RECORD_BYTES,
) -> str:
    """``render(record)`` when that is at most ``limit`` bytes; else the rendering of a cut record.

    Cut in steps until it fits: (1) the ``keep`` fields' strings cut to ``MAX_MESSAGE_CHARS`` (a
    message is cut, names and rules stay whole), every other field's strings to
    ``MAX_VALUE_CHARS`` and its lists to ``MAX_LIST_ITEMS``; (2) only the ``keep`` fields;
    (3) those cut to ``MAX_VALUE_CHARS`` too. The result has a ``cut`` field: the bytes the whole
    record had, the limit, and the fields dropped.
    """
    text = render(record)
    size = len(text.encode())
    if size <= limit:
        return text
    marker: dict[str, Any] = {"bytes": size, "limit": limit, "dropped": []}
    kept = {
        k: (cut_text(v, MAX_MESSAGE_CHARS) if isinstance(v, str) else v)
        for k, v in record.items()
        if k in keep
    }
    others = {k: cut_value(v, MAX_VALUE_CHARS, MAX_LIST_ITEMS) for k, v in record.items() if k not in keep}
    attempts = (
        lambda: {**kept, **others},
        lambda: kept,
        lambda: cut_value(kept, MAX_VALUE_CHARS, MAX_LIST_ITEMS),
    )
    for attempt in attempts:
        smaller = attempt()
        dropped = [k for k in record if k not in smaller and k != CUT_FIELD]
        marker["dropped"] = cut_value(dropped, MAX_VALUE_CHARS, MAX_LIST_ITEMS)
        text = render({**smaller, CUT_FIELD: marker})
        if len(text.encode()) <= limit:
            return text
    return render({CUT_FIELD: marker})
