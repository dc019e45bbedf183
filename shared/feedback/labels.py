"""Labels that arrive after their predictions: a labels file's contract, and its stored form.

A labels file is an object under ``labels/`` of the data bucket (CSV, JSON Lines or Parquet, read
by the data files' own readers and size limits: MAX_FILE_BYTES, MAX_ROWS, MAX_COLUMNS). Columns:

- ``id``: the prediction id, text of 1 to ``MAX_PREDICTION_ID_CHARS`` characters (a CSV id is
  read as written: ``00123`` stays ``00123``);
- the schema's label column: one of the label's classes, or a finite number for regression
  (the data files' own label rule, ``invalid_label``);
- ``event_time`` (optional): when the outcome happened, ISO 8601 (UTC when it names no zone) or
  seconds since the epoch; an empty cell means none.

Other columns are ignored. A file that breaks a rule (``LabelsRule``, or a reading rule) raises
``ValidationFailed`` and is quarantined like a bad data file. An accepted file is stored, once, as
``feedback/labels/<bucket>/<name>@<generation>.npz`` in the artifacts bucket
(``if_generation_match=0``: a second delivery of the same file version writes nothing), numpy
only and pickle-free: ``id`` and ``label`` as fixed-width unicode (regression labels float64),
``event_time`` float64 (NaN for none), ``meta`` a JSON string (``format``, ``bucket``, ``object``,
``generation``, ``label``, ``task``, ``stored_at``).
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import MAX_PREDICTION_ID_CHARS, STORED_LABELS_PREFIX, LabelsRule
from shared.data.fault_details import details
from shared.data.files import read_table
from shared.data.validation import check_size
from shared.data.validation_rules import check_label, check_masks, label_nulls
from shared.data.values import category_strings, numeric_values
from shared.errors import NotFound, PreconditionFailed, StoredLabelsError, ValidationFailed, ZipTooLarge
from shared.schema import Schema
from shared.storage import Bucket
from shared.storage.names import derived_name
from shared.zip_limits import NPZ_READ_ERRORS, read_npz

LABELS_FORMAT = "prodml-labels/1"
ID_COLUMN = "id"
EVENT_TIME_COLUMN = "event_time"
# A stored labels object holds at most MAX_ROWS rows of three short columns; this bounds what one
# may decompress to when it is read back (a hand-written bomb is refused unread).
MAX_STORED_LABELS_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class LabelRows:
    """The rows of one labels file: ``ids`` and ``labels`` (text; float64 for regression) and
    ``event_times`` (seconds since the epoch, NaN where none), aligned; and where they came from."""

    ids: np.ndarray
    labels: np.ndarray
    event_times: np.ndarray
    bucket: str
    object: str
    generation: int

    def __len__(self) -> int:
        return len(self.ids)


def stored_labels_name(bucket: str, name: str, generation: int) -> str:
    """``feedback/labels/<bucket>/<name>@<generation>.npz`` (a long name shortened with a hash)."""
    return derived_name(f"{STORED_LABELS_PREFIX}{bucket}/", name, f"@{int(generation)}.npz")


def read_labels_object(
    data: Bucket, name: str, generation: int, schema: Schema, settings: Settings
) -> LabelRows | None:
    """The validated rows of ``name`` at ``generation``; None when that generation is not in the
    bucket (the stored object's own size and generation are checked, never an event's claims);
    ``ValidationFailed`` when the file breaks its contract."""
    try:
        stored = data.stat(name)
    except NotFound:
        return None
    if stored.generation != generation:
        return None
    check_size(stored.size, settings)
    with tempfile.TemporaryDirectory(prefix="prodml-labels-") as folder:
        path = Path(folder) / "labels"
        try:
            info = data.download(name, path)
        except NotFound:
            return None
        if info.generation != generation:
            return None
        return validate_labels_file(path, name, schema, settings, bucket=data.name, generation=generation)


def validate_labels_file(
    path: Path, object_name: str, schema: Schema, settings: Settings, *, bucket: str, generation: int
) -> LabelRows:
    """Read the labels file at ``path`` and check it (module doc); ``ValidationFailed`` if bad."""
    check_size(path.stat().st_size, settings)
    table = read_table(
        path, object_name, settings.max_rows, max_columns=settings.max_columns, text_columns=(ID_COLUMN,)
    )
    frame = table.frame
    ids = _check_ids(object_name, frame)
    label_name = schema.label.name
    if label_name not in frame.columns:
        raise ValidationFailed(
            LabelsRule.MISSING_LABEL,
            f"{object_name!r} has no label column {label_name!r} (a labels file holds {ID_COLUMN!r}, "
            f"{label_name!r} and optionally {EVENT_TIME_COLUMN!r})",
            details(columns=[label_name], samples=table.columns[:5]),
        )
    values = frame[label_name]
    typed = check_label(object_name, schema, values, label_nulls(schema, values))
    if schema.label.task == "regression":
        labels = typed.to_numpy(dtype=np.float64)
    else:
        labels = np.asarray(category_strings(typed).astype(str).to_list(), dtype=str)
    times = _event_times(object_name, frame)
    return LabelRows(ids, labels, times, bucket, object_name, int(generation))


def _text_of_bytes(value: object) -> object:
    """A Parquet BINARY id (bytes) as the UTF-8 text it holds (None, an invalid id, if it holds
    none): ``str(b"a")`` would be ``"b'a'"``, which no prediction id ever is."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


def _check_ids(object_name: str, frame: pd.DataFrame) -> np.ndarray:
    """The ids as text; ``missing_id`` without the column, ``invalid_id`` for a missing, empty or
    too long one."""
    if ID_COLUMN not in frame.columns:
        raise ValidationFailed(
            LabelsRule.MISSING_ID,
            f"{object_name!r} has no {ID_COLUMN!r} column: each label must name the prediction it "
            "belongs to (the id predict answered with)",
            details(columns=[ID_COLUMN], samples=[str(c) for c in frame.columns[:5]]),
        )
    strings = category_strings(frame[ID_COLUMN].map(_text_of_bytes))
    lengths = strings.map(lambda s: len(s) if isinstance(s, str) else 0)
    bad = strings.isna() | (lengths == 0) | (lengths > MAX_PREDICTION_ID_CHARS)
    check_masks(
        object_name,
        LabelsRule.INVALID_ID,
        {ID_COLUMN: bad},
        frame,
        f"must hold ids of 1 to {MAX_PREDICTION_ID_CHARS} characters, found",
    )
    return np.asarray(strings.to_list(), dtype=str)


FUTURE_SLACK_SECONDS = 86_400.0  # clocks differ; a day ahead is the most an event time may be


def _event_times(object_name: str, frame: pd.DataFrame) -> np.ndarray:
    """``event_time`` as seconds since the epoch (NaN where empty, or without the column)."""
    if EVENT_TIME_COLUMN not in frame.columns:
        return np.full(len(frame), np.nan)
    raw = frame[EVENT_TIME_COLUMN]
    numbers, text = numeric_values(raw)
    seconds = numbers.to_numpy(dtype=np.float64).copy()
    if bool(text.any()):
        parsed = pd.to_datetime(raw[text].astype(str), utc=True, format="ISO8601", errors="coerce")
        epoch = parsed.map(lambda t: t.timestamp() if not pd.isna(t) else np.nan).to_numpy(dtype=np.float64)
        seconds[text.to_numpy()] = epoch
    # A time more than a day ahead is no event that happened: most often milliseconds read as
    # seconds (1700000000000 is the year 55,800), which the join's "latest event time wins"
    # would let override every later correction of that id, forever.
    with np.errstate(invalid="ignore"):
        future = seconds > time.time() + FUTURE_SLACK_SECONDS
    bad = (
        (text & pd.Series(np.isnan(seconds), index=raw.index))
        | pd.Series(np.isinf(seconds), index=raw.index)
        | pd.Series(future, index=raw.index)
    )
    check_masks(
        object_name,
        LabelsRule.INVALID_EVENT_TIME,
        {EVENT_TIME_COLUMN: bad},
        frame,
        "must hold ISO 8601 times or seconds since the epoch, not after tomorrow, found",
    )
    return seconds


def store_labels(artifacts: Bucket, rows: LabelRows, label_name: str, task: str) -> tuple[str, bool]:
    """Write ``rows`` as their stored object, only if absent; (its name, whether this call wrote it)."""
    name = stored_labels_name(rows.bucket, rows.object, rows.generation)
    meta = {
        "format": LABELS_FORMAT,
        "bucket": rows.bucket,
        "object": rows.object,
        "generation": rows.generation,
        "label": label_name,
        "task": task,
        "stored_at": datetime.now(UTC).isoformat(),
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        meta=np.asarray(json.dumps(meta)),
        id=_text(rows.ids),
        label=rows.labels if rows.labels.dtype.kind == "f" else _text(rows.labels),
        event_time=np.asarray(rows.event_times, dtype=np.float64),
    )
    try:
        artifacts.write(name, buffer.getvalue(), content_type="application/x-npz", if_generation_match=0)
    except PreconditionFailed:
        return name, False  # stored by an earlier (or a simultaneous) delivery of this file version
    return name, True


def _text(values: np.ndarray) -> np.ndarray:
    """Fixed-width unicode, readable without pickle (an empty column is ``<U1``)."""
    return np.asarray(values, dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def read_stored_labels(artifacts: Bucket, name: str) -> LabelRows:
    """One stored labels object; ``StoredLabelsError`` when it is not one (``NotFound`` if gone)."""
    data = artifacts.read(name)
    try:
        columns, meta = read_npz(data, MAX_STORED_LABELS_BYTES, "the stored labels bound")
        ids, labels, times = columns["id"], columns["label"], columns["event_time"]
    except ZipTooLarge as exc:
        raise StoredLabelsError(f"stored labels {name!r} refused unread: {exc}") from None
    except NPZ_READ_ERRORS as exc:
        raise StoredLabelsError(
            f"stored labels {name!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != LABELS_FORMAT:
        raise StoredLabelsError(f"stored labels {name!r} is not a {LABELS_FORMAT} object")
    if not len(ids) == len(labels) == len(times):
        raise StoredLabelsError(f"stored labels {name!r} has ragged columns")
    try:
        generation = int(meta.get("generation", 0))
    except (TypeError, ValueError):
        raise StoredLabelsError(f"stored labels {name!r} names no generation") from None
    return LabelRows(ids, labels, times, str(meta.get("bucket", "")), str(meta.get("object", "")), generation)
