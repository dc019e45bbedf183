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

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import PREDICTIONS_PREFIX, STORED_LABELS_PREFIX
from shared.errors import JoinTooLarge, NotFound, PredictionLogError, StoredLabelsError
from shared.feedback.labels import LabelRows, read_stored_labels
from shared.feedback.log_format import BASE_COLUMNS, FEATURE_PREFIX, LogFile, read_log
from shared.logs import get_logger
from shared.storage import Bucket

log = get_logger(__name__)

TRUTH = "truth"  # the joined label (text; float64 for regression), missing where none arrived
LABEL_TIME = "label_event_time"
LISTED = 20  # names of skipped objects, and unmatched ids, a report lists


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


def load_predictions(predictions: Bucket, settings: Settings, budget: _Budget | None = None) -> Loaded:
    """Every readable log object as one frame: ``id``, ``time``, ``score`` (``score.<i>`` per class
    for multiclass), ``label``, ``source``, ``model_version``, ``table_build``, ``f.<feature>``,
    ``object``, ``row``."""
    budget = budget or _Budget(settings.join_max_rows)
    frames: list[pd.DataFrame] = []
    unreadable: list[str] = []
    infos = [i for i in predictions.list(PREDICTIONS_PREFIX) if i.name.endswith(".npz")]
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
        return pd.DataFrame({c: [] for c in (*BASE_COLUMNS, "object", "row")})
    columns = logged.columns
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name == "score" and values.ndim == 2:
            out.update({f"score.{i}": values[:, i] for i in range(values.shape[1])})
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


def load_and_join(predictions: Bucket, artifacts: Bucket, settings: Settings) -> Joined:
    """Read both stores within JOIN_MAX_ROWS together and join them (``join``)."""
    budget = _Budget(settings.join_max_rows)
    return join(load_predictions(predictions, settings, budget), load_labels(artifacts, settings, budget))


def join(logged: Loaded, labels: Loaded) -> Joined:
    """The predictions, one row per id, each with its winning label (module doc).

    What an id ends up with depends only on that id's own rows (every order is by the rows' own
    fields), so the Beam join (``shared.pipelines.join_pipeline``) calls this very function on each
    shard of ids and sums the counts.
    """
    preds = _ordered(logged.frame, ("time", "object", "row"))
    unique = preds.drop_duplicates("id", keep="first")
    ordered = _ordered(labels.frame, (LABEL_TIME, "generation", "object", "row"))
    winners = ordered.drop_duplicates("id", keep="last")[["id", TRUTH, LABEL_TIME]]
    rows = unique.merge(winners, on="id", how="left").reset_index(drop=True)  # both sides unique
    # The unmatched labels by a second left merge, of the ids alone: pandas' ``isin`` on
    # arrow-backed text walks the values in Python (10x a merge), an outer merge sorts the keys.
    hits = winners[["id"]].merge(unique[["id"]].assign(_served=True), on="id", how="left")["_served"]
    unmatched = winners["id"][hits.isna().to_numpy()]
    counts = JoinCounts(
        log_objects=logged.objects,
        unreadable_logs=len(logged.unreadable),
        logged=len(preds),
        duplicate_predictions=len(preds) - len(unique),
        label_objects=labels.objects,
        unreadable_labels=len(labels.unreadable),
        label_rows=len(ordered),
        duplicate_labels=len(ordered) - len(winners),
        matched_labels=len(winners) - len(unmatched),
        unmatched_labels=len(unmatched),
    )
    skipped: Sequence[str] = (*logged.unreadable, *labels.unreadable)
    listed = tuple(str(i) for i in unmatched.sort_values().iloc[:LISTED])
    return Joined(rows, counts, tuple(skipped[:LISTED]), listed)


def _ordered(frame: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` sorted by ``keys`` (a missing time first), through one ``np.lexsort`` of numeric
    codes: pandas' multi-column ``sort_values`` on text columns cost ten times the merge itself."""
    columns = []
    for key in keys:
        values = frame[key]
        if pd.api.types.is_numeric_dtype(values.dtype):
            columns.append(np.nan_to_num(values.to_numpy(dtype=np.float64), nan=-np.inf))
        else:
            columns.append(pd.factorize(values, sort=True)[0])
    return frame.iloc[np.lexsort(columns[::-1])] if len(frame) else frame


def served_features(rows: pd.DataFrame) -> pd.DataFrame:
    """The features as served (the log's ``f.<feature>`` columns), named as the schema names them."""
    columns = [c for c in rows.columns if str(c).startswith(FEATURE_PREFIX)]
    return rows[columns].rename(columns={c: str(c)[len(FEATURE_PREFIX) :] for c in columns})
