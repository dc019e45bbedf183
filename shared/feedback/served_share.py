"""The feedback-loop share of a data file: how many of its rows are ids this system served.

Google's lesson: a model whose predictions shape its own future training data (the ads it chose
to show are the only ones that can convert) drifts into a loop. A data file whose rows carry an
``id`` column (an extra column: validation allows it and keeps it beside the frame,
``ValidatedData.ids``) is looked up in the prediction log: ``served_share`` is the share of the
file's rows whose id predict served and logged.

Bounded: only the ``FEEDBACK_LOG_OBJECTS`` most recently written log objects are read (the
record says how many were listed and read), so ids served before them count as not served and
the share is a lower bound once the log is longer. Unreadable log objects are skipped and
counted. A file without an ``id`` column has no share (``None``), and the record says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shared.contracts import PREDICTIONS_PREFIX
from shared.errors import NotFound, PredictionLogError
from shared.feedback.log_format import ID_COLUMN, read_log
from shared.logs import get_logger
from shared.storage import Bucket

log = get_logger(__name__)

NO_ID_COLUMN = f"the file has no {ID_COLUMN!r} column: which of its rows were served is unknown"


@dataclass(frozen=True)
class ServedShare:
    """The share of a file's rows with an id found in the prediction log, and what was read."""

    share: float | None  # None: the file has no id column
    rows: int  # rows looked up (0 without an id column)
    served_rows: int
    log_objects_listed: int
    log_objects_read: int
    log_objects_unreadable: int
    note: str

    def to_record(self) -> dict[str, Any]:
        """The share as a monitoring record and the card hold it (beside ``served_share``)."""
        return {
            "rows": self.rows,
            "served_rows": self.served_rows,
            "log_objects_listed": self.log_objects_listed,
            "log_objects_read": self.log_objects_read,
            "log_objects_unreadable": self.log_objects_unreadable,
            "note": self.note,
        }


def served_share(
    ids: pd.Series | None, predictions: Callable[[], Bucket], max_objects: int, max_bytes: int
) -> ServedShare:
    """The served share of ``ids`` (a file's ``id`` column; None when it has none).

    ``predictions`` opens the predictions bucket, only when there are ids to look up.
    """
    if ids is None:
        return ServedShare(None, 0, 0, 0, 0, 0, NO_ID_COLUMN)
    bucket = predictions()
    listed = [info for info in bucket.list(PREDICTIONS_PREFIX) if info.name.endswith(".npz")]
    newest_first = sorted(listed, key=lambda info: (info.updated, info.name), reverse=True)
    recent = [info.name for info in newest_first[:max_objects]]
    served: set[str] = set()
    unreadable = 0
    for name in recent:
        try:
            served.update(str(i) for i in read_log(bucket, name, max_bytes).columns[ID_COLUMN])
        except NotFound:
            continue  # deleted since the listing (retention): nothing to look up
        except PredictionLogError as exc:
            unreadable += 1
            log.warning(f"served share: skipping a prediction log object: {exc}")
    texts = [_id_text(value) for value in ids]
    hits = sum(1 for text in texts if text is not None and text in served)
    share = hits / len(texts) if texts else 0.0
    note = (
        f"{hits} of {len(texts)} rows carry an id found in the {len(recent)} most recent of "
        f"{len(listed)} prediction log objects (FEEDBACK_LOG_OBJECTS={max_objects})"
    )
    return ServedShare(share, len(texts), hits, len(listed), len(recent), unreadable, note)


def _id_text(value: Any) -> str | None:
    """An id cell as the log's text; None when missing. A number read from CSV (``123``, or
    ``123.0`` in a column pandas widened to float for a missing cell) is its integer text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
