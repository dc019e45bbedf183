"""The join of the prediction log with the labels, by prediction id (train and CLI side: pandas).

It is recomputed from both stores each time (every log object of the predictions bucket, every
stored labels object of the artifacts bucket), so order does not matter: labels stored before
their predictions were logged are kept, counted as unmatched, and join on the first run after
the log arrives. Rules:

- a log object that cannot be read (``PredictionLogError``) is skipped and counted; so is a stored
  labels object (``StoredLabelsError``), and one deleted between the listing and the read;
- a prediction id logged twice: the first served (earliest time, then object name) is kept, the
  rest counted as ``duplicate_predictions``;
- an id labelled twice (in several files or rows): the latest ``event_time`` wins (a label
  without one counts as older than any with one), then the latest file (its generation), then
  the later row; the rest are counted as ``duplicate_labels``;
- bounded: log rows and label rows together at most JOIN_MAX_ROWS (``JoinTooLarge`` past it, as
  soon as the bound is passed, naming the Beam join).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shared.config import Settings
from shared.contracts import PREDICTIONS_PREFIX, STORED_LABELS_PREFIX
from shared.errors import JoinTooLarge, NotFound, PredictionLogError, StoredLabelsError
from shared.feedback.labels import LabelRows, read_stored_labels
from shared.feedback.log_format import (
    BASE_COLUMNS,
    FEATURE_PREFIX,
    SHADOW_SCORE,
    SHADOW_VERSION,
    LogFile,
    read_log,
)
from shared.logs import get_logger
from shared.storage import Bucket

log = get_logger(__name__)

TRUTH = "truth"  # the joined label (text; float64 for regression), missing where none arrived
LABEL_TIME = "label_event_time"
LISTED = 20  # names of skipped objects, and unmatched ids, a report lists
DAY_SECONDS = 86400


@dataclass
class _Budget:
    """Rows read so far against JOIN_MAX_ROWS."""

    limit: int
    rows: int = 0

    def take(self, rows: int, what: str) -> None:
        self.rows += rows
        if self.rows > self.limit:
            raise JoinTooLarge(
                f"the prediction log and the labels hold more than JOIN_MAX_ROWS={self.limit} rows "
                f"(passed while reading {what}): more than the join in a function may hold; run the "
                "join as a Beam pipeline (`prodml pipeline join`), or raise JOIN_MAX_ROWS with the "
                "function's memory"
            )


@dataclass(frozen=True)
class Loaded:
    """Rows read from one store, and the objects skipped as unreadable."""

    frame: pd.DataFrame
    objects: int
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinCounts:
    """What the join saw and decided."""

    log_objects: int
    unreadable_logs: int
    logged: int
    duplicate_predictions: int
    label_objects: int
    unreadable_labels: int
    label_rows: int
    duplicate_labels: int
    matched_labels: int
    unmatched_labels: int


@dataclass(frozen=True)
class Joined:
    """One row per prediction id (the log's columns, plus ``TRUTH`` and ``LABEL_TIME``)."""

    rows: pd.DataFrame
    counts: JoinCounts
    unreadable: tuple[str, ...] = ()
    unmatched_ids: tuple[str, ...] = field(default=())


def load_predictions(
    predictions: Bucket, settings: Settings, budget: _Budget | None = None, since: float | None = None
) -> Loaded:
    """Every readable log object as one frame: ``id``, ``time``, ``score`` (``score.<i>`` per class
    for multiclass), ``label``, ``source``, ``model_version``, ``table_build``, ``shadow_score``
    (``shadow_score.<i>``), ``shadow_version``, ``f.<feature>``, ``object``, ``row``.

    ``since`` (seconds since the epoch): only the objects of the days that may hold predictions
    served from then on (``predictions/<date>/``, from the day before: a flush's object is named by
    its first row's day), so a shadow's comparison reads its own run, not the whole log."""
    budget = budget or _Budget(settings.join_max_rows)
    frames: list[pd.DataFrame] = []
    unreadable: list[str] = []
    infos = [
        i
        for i in predictions.list(PREDICTIONS_PREFIX)
        if i.name.endswith(".npz") and (since is None or not _day_before(i.name, since))
    ]
    for info in infos:
        try:
            frame = read_log_frame(predictions, info.name, settings)
        except (PredictionLogError, NotFound) as exc:
            log.warning(f"skipping prediction log {info.name!r}: {exc}")
            unreadable.append(info.name)
            continue
        budget.take(len(frame), info.name)
        frames.append(frame)
    return log_rows(frames, len(infos), unreadable)


def _day_before(name: str, since: float) -> bool:
    """Whether log object ``name`` is of a day that ended a full day before ``since`` (a name
    whose day cannot be read is kept)."""
    day = name[len(PREDICTIONS_PREFIX) :].split("/", 1)[0]
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False
    return start + 2 * DAY_SECONDS <= since


def read_log_frame(predictions: Bucket, name: str, settings: Settings) -> pd.DataFrame:
    """One log object as the join's frame (``load_predictions``' columns); ``PredictionLogError``
    or ``NotFound`` when it cannot be read. The Beam join reads each object with it too."""
    return _log_frame(read_log(predictions, name, settings.max_table_bytes))


def log_rows(frames: Sequence[pd.DataFrame], objects: int = 0, unreadable: Sequence[str] = ()) -> Loaded:
    """Frames of ``read_log_frame`` as one ``Loaded`` (with the log's columns when there are none)."""
    frame = pd.concat(frames, ignore_index=True) if frames else _log_frame(None)
    return Loaded(frame, objects, tuple(unreadable))


def _log_frame(logged: LogFile | None) -> pd.DataFrame:
    if logged is None:
        return pd.DataFrame({c: [] for c in (*BASE_COLUMNS, SHADOW_SCORE, SHADOW_VERSION, "object", "row")})
    columns = dict(logged.columns)
    if SHADOW_VERSION not in columns:  # written before shadows existed: no shadow scored it
        columns[SHADOW_SCORE] = np.full(columns["score"].shape, np.nan)
        columns[SHADOW_VERSION] = np.full(len(logged), "", dtype="<U1")
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name in ("score", SHADOW_SCORE) and values.ndim == 2:
            out.update({f"{name}.{i}": values[:, i] for i in range(values.shape[1])})
        else:
            out[name] = values.astype(object) if values.dtype.kind == "U" else values
    out["object"] = np.full(len(logged), logged.name, dtype=object)
    out["row"] = np.arange(len(logged))
    return pd.DataFrame(out)


def load_labels(artifacts: Bucket, settings: Settings, budget: _Budget | None = None) -> Loaded:
    """Every readable stored labels object as one frame: ``id``, ``TRUTH``, ``LABEL_TIME``,
    ``generation``, ``object``, ``row``."""
    budget = budget or _Budget(settings.join_max_rows)
    frames: list[pd.DataFrame] = []
    unreadable: list[str] = []
    infos = [i for i in artifacts.list(STORED_LABELS_PREFIX) if i.name.endswith(".npz")]
    for info in infos:
        try:
            frame = read_labels_frame(artifacts, info.name)
        except (StoredLabelsError, NotFound) as exc:
            log.warning(f"skipping stored labels {info.name!r}: {exc}")
            unreadable.append(info.name)
            continue
        budget.take(len(frame), info.name)
        frames.append(frame)
    return label_rows(frames, len(infos), unreadable)


def read_labels_frame(artifacts: Bucket, name: str) -> pd.DataFrame:
    """One stored labels object as the join's frame (``load_labels``' columns);
    ``StoredLabelsError`` or ``NotFound`` when it cannot be read."""
    return _labels_frame(read_stored_labels(artifacts, name))


def label_rows(frames: Sequence[pd.DataFrame], objects: int = 0, unreadable: Sequence[str] = ()) -> Loaded:
    """Frames of ``read_labels_frame`` as one ``Loaded`` (with the labels' columns when none)."""
    empty = pd.DataFrame({c: [] for c in ("id", TRUTH, LABEL_TIME, "generation", "object", "row")})
    frame = pd.concat(frames, ignore_index=True) if frames else empty
    return Loaded(frame, objects, tuple(unreadable))


def _labels_frame(rows: LabelRows) -> pd.DataFrame:
    truth = rows.labels if rows.labels.dtype.kind == "f" else rows.labels.astype(object)
    return pd.DataFrame(
        {
            "id": rows.ids.astype(object),
            TRUTH: truth,
            LABEL_TIME: rows.event_times,
            "generation": np.full(len(rows), rows.generation, dtype=np.int64),
            "object": np.full(len(rows), rows.object, dtype=object),
            "row": np.arange(len(rows)),
        }
    )


def load_and_join(
    predictions: Bucket, artifacts: Bucket, settings: Settings, since: float | None = None
) -> Joined:
    """Read both stores within JOIN_MAX_ROWS together and join them (``join``); ``since``: the
    log's objects of those days only (``load_predictions``)."""
    budget = _Budget(settings.join_max_rows)
    logged = load_predictions(predictions, settings, budget, since)
    return join(logged, load_labels(artifacts, settings, budget))


def join(logged: Loaded, labels: Loaded) -> Joined:
    """The predictions, one row per id, each with its winning label (module doc).

    What an id ends up with depends only on that id's own rows (every order is by the rows' own
    fields), so the Beam join (``shared.pipelines.join_pipeline``) calls this very function on each
    shard of ids and sums the counts.

    Every step runs on integer codes: the ids of both sides are factorized once, together, so the
    dedupe is numpy's on codes and the lookup of each prediction's label an index; the text ids
    are hashed once instead of once per ``drop_duplicates`` and once per side of each ``merge``
    (which cost three times a plain merge of the same rows).
    """
    log_frame, label_frame = logged.frame, labels.frame
    log_order = _order(log_frame, ("time", "object", "row"))
    label_order = _order(label_frame, (LABEL_TIME, "generation", "object", "row"))
    log_codes, label_codes, ids = _id_codes(log_frame["id"], label_frame["id"])
    log_codes, label_codes = log_codes[log_order], label_codes[label_order]
    kept = _first_positions(log_codes)  # into the ordered log: each id's first served
    won = _last_positions(label_codes)  # into the ordered labels: each id's winning label
    label_of_id = np.full(ids, -1, dtype=np.intp)  # the winning label's row, or -1
    label_of_id[label_codes[won]] = label_order[won]
    matched = label_of_id[log_codes[kept]]
    rows = log_frame.iloc[log_order[kept]].reset_index(drop=True)
    rows[TRUTH] = _take(label_frame[TRUTH], matched)
    rows[LABEL_TIME] = _take(label_frame[LABEL_TIME], matched)
    served = np.zeros(ids, dtype=bool)
    served[log_codes] = True
    unmatched = label_frame["id"].iloc[label_order[won][~served[label_codes[won]]]]
    counts = JoinCounts(
        log_objects=logged.objects,
        unreadable_logs=len(logged.unreadable),
        logged=len(log_frame),
        duplicate_predictions=len(log_frame) - len(kept),
        label_objects=labels.objects,
        unreadable_labels=len(labels.unreadable),
        label_rows=len(label_frame),
        duplicate_labels=len(label_frame) - len(won),
        matched_labels=len(won) - len(unmatched),
        unmatched_labels=len(unmatched),
    )
    skipped: Sequence[str] = (*logged.unreadable, *labels.unreadable)
    listed = tuple(str(i) for i in unmatched.sort_values().iloc[:LISTED])
    return Joined(rows, counts, tuple(skipped[:LISTED]), listed)


def _order(frame: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """The row positions of ``frame`` sorted by ``keys`` (a missing time first), through one
    ``np.lexsort`` of numeric codes: pandas' multi-column ``sort_values`` on text columns cost ten
    times the merge itself."""
    columns = []
    for key in keys:
        values = frame[key]
        if pd.api.types.is_numeric_dtype(values.dtype):
            columns.append(np.nan_to_num(values.to_numpy(dtype=np.float64), nan=-np.inf))
        else:
            columns.append(pd.factorize(values, sort=True)[0])
    return np.lexsort(columns[::-1]) if len(frame) else np.zeros(0, dtype=np.intp)


def _id_codes(log_ids: pd.Series, label_ids: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Both sides' ids as codes of one factorization (equal ids, equal codes), and how many ids.

    One pyarrow ``dictionary_encode`` of one contiguous array: ``pd.factorize`` of the
    concatenated column encodes its chunks (one per log object) each and then unifies their
    dictionaries, which cost twice as much on the log's many chunks.
    """
    both = pa.concat_arrays([_contiguous_text(log_ids), _contiguous_text(label_ids)])
    encoded = both.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    return codes[: len(log_ids)], codes[len(log_ids) :], len(encoded.dictionary)


def _contiguous_text(ids: pd.Series) -> pa.Array[Any]:
    """``ids`` as one pyarrow text array (a column of pandas' arrow-backed ``str`` is reused)."""
    if not len(ids):  # an empty side's frame is made from empty lists: no text dtype
        return pa.array([], type=pa.large_string())
    # pyarrow's stubs say one array; pandas' arrow-backed columns hand over a ChunkedArray.
    array: pa.Array[Any] | pa.ChunkedArray[Any] = pa.array(ids.array, type=pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _first_positions(codes: np.ndarray) -> np.ndarray:
    """The positions of each code's first occurrence, ascending (``np.unique`` returns firsts)."""
    return np.sort(np.unique(codes, return_index=True)[1])


def _last_positions(codes: np.ndarray) -> np.ndarray:
    """The positions of each code's last occurrence, ascending."""
    return np.sort(len(codes) - 1 - np.unique(codes[::-1], return_index=True)[1])


def _take(values: pd.Series, rows: np.ndarray) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """``values`` at ``rows``, missing (the dtype's own NA, as a left merge gives) where -1."""
    return pd.api.extensions.take(values.array, rows, allow_fill=True)


def served_features(rows: pd.DataFrame) -> pd.DataFrame:
    """The features as served (the log's ``f.<feature>`` columns), named as the schema names them."""
    columns = [c for c in rows.columns if str(c).startswith(FEATURE_PREFIX)]
    return rows[columns].rename(columns={c: str(c)[len(FEATURE_PREFIX) :] for c in columns})
