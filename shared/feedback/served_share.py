"""The feedback-loop share of a data file: how many of its rows are ids this system served.

Google's lesson: a model whose predictions shape its own future training data (the ads it chose
to show are the only ones that can convert) drifts into a loop. A data file whose rows carry an
``id`` column (an extra column: validation allows it and keeps it beside the frame,
``ValidatedData.ids``) is looked up in the prediction log: ``served_share`` is the share of the
file's rows whose id predict served and logged.

Bounded: only the ``FEEDBACK_LOG_OBJECTS`` most recently written log objects are read (the
record says how many were listed and read), and of each only the rows of the file's ids are kept
(``read_recent_log``; the row-by-row feature skew, ``shared.feedback.row_skew``, compares those
rows too), so ids served before them count as not served and
the share is a lower bound once the log is longer. Unreadable log objects are skipped and
counted. A file without an ``id`` column has no share (``None``), and the record says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.contracts import PREDICTIONS_PREFIX
from shared.errors import NotFound, PredictionLogError
from shared.feedback.log_format import FEATURE_PREFIX, ID_COLUMN, LogFile, read_log
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


@dataclass(frozen=True)
class RecentLog:
    """What the most recently written log objects hold of a file's ids: the log rows of those
    ids (``id``, ``time``, ``object`` and the ``f.<feature>`` columns as served), and what was read."""

    rows: pd.DataFrame
    listed: int
    read: int  # objects tried (the most recent ``max_objects``)
    unreadable: int
    max_objects: int


def read_recent_log(bucket: Bucket, wanted: set[str], max_objects: int, max_bytes: int) -> RecentLog:
    """The log rows of the ids ``wanted`` in the ``max_objects`` most recently written log objects.

    Only the rows of those ids are kept, object by object: memory follows the file, not the log.
    """
    listed = [info for info in bucket.list(PREDICTIONS_PREFIX) if info.name.endswith(".npz")]
    newest_first = sorted(listed, key=lambda info: (info.updated, info.name), reverse=True)
    recent = newest_first[:max_objects]
    frames: list[pd.DataFrame] = []
    unreadable = 0
    for info in recent:
        try:
            logged = read_log(bucket, info.name, max_bytes)
        except NotFound:
            continue  # deleted since the listing (retention): nothing to look up
        except PredictionLogError as exc:
            unreadable += 1
            log.warning(f"served share: skipping a prediction log object: {exc}")
            continue
        frames.append(_rows_of(logged, wanted))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({ID_COLUMN: []}, dtype=object)
    return RecentLog(rows, len(listed), len(recent), unreadable, max_objects)


def _rows_of(logged: LogFile, wanted: set[str]) -> pd.DataFrame:
    """The rows of ``logged`` whose id is ``wanted``: id, time, object and the served features."""
    ids = logged.columns[ID_COLUMN]
    keep = np.fromiter((str(i) in wanted for i in ids), dtype=bool, count=len(ids))
    columns: dict[str, Any] = {ID_COLUMN: ids[keep].astype(object), "time": logged.columns["time"][keep]}
    columns["object"] = np.full(int(keep.sum()), logged.name, dtype=object)
    for name, values in logged.columns.items():
        if name.startswith(FEATURE_PREFIX):
            columns[name] = values[keep].astype(object) if values.dtype.kind == "U" else values[keep]
    return pd.DataFrame(columns)


def served_share(
    ids: pd.Series | None, predictions: Callable[[], Bucket], max_objects: int, max_bytes: int
) -> ServedShare:
    """The served share of ``ids`` (a file's ``id`` column; None when it has none).

    ``predictions`` opens the predictions bucket, only when there are ids to look up.
    """
    if ids is None:
        return ServedShare(None, 0, 0, 0, 0, 0, NO_ID_COLUMN)
    wanted = {text for text in (id_text(value) for value in ids) if text is not None}
    return share_in(ids, read_recent_log(predictions(), wanted, max_objects, max_bytes))


def share_in(ids: pd.Series, recent: RecentLog) -> ServedShare:
    """The served share of ``ids`` in the log objects ``recent`` read (for those ids)."""
    served = {str(i) for i in recent.rows[ID_COLUMN]}
    texts = [id_text(value) for value in ids]
    hits = sum(1 for text in texts if text is not None and text in served)
    share = hits / len(texts) if texts else 0.0
    note = (
        f"{hits} of {len(texts)} rows carry an id found in the {recent.read} most recent of "
        f"{recent.listed} prediction log objects (FEEDBACK_LOG_OBJECTS={recent.max_objects})"
    )
    return ServedShare(share, len(texts), hits, recent.listed, recent.read, recent.unreadable, note)


def id_text(value: Any) -> str | None:
    """An id cell as the log's text; None when missing. A number read from CSV (``123``, or
    ``123.0`` in a column pandas widened to float for a missing cell) is its integer text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
