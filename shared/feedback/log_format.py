"""The prediction log's file format: one ``.npz`` object per flush of one predict instance.

Name: ``predictions/<YYYY-MM-DD>/<instance>-<first ms>-<seq>.npz`` in ``PREDICTIONS_BUCKET`` (a
bucket with no trigger, so a flush fires no function). The date is that of the batch's first
prediction (UTC); ``<first ms>`` its time in milliseconds since the epoch, ``<seq>`` the flush's
number in the instance. Written with ``if_generation_match=0``: an object is never written twice,
and two instances can never collide (the instance id is in the name).

Columnar, numpy only (predict imports no pandas or pyarrow), never a pickle: every column is a
plain array, strings as fixed-width unicode (``<U``), so ``np.load(..., allow_pickle=False)``
reads it. Columns, one row per served instance:

- ``id`` (``<U``): the prediction id (the request's, or one predict made);
- ``time`` (float64): when it was served, seconds since the epoch (UTC);
- ``score`` (float64, ``(n,)``; ``(n, k)`` for multiclass, classes in ``meta["classes"]``);
  NaN for a static-mode miss (no score was served);
- ``label`` (``<U``): the predicted label as text ("" for regression or a miss);
- ``source`` (``<U``): ``table``, ``model`` or ``miss``;
- ``model_version`` (``<U``): the version that answered;
- ``table_build`` (``<U``): the table object that answered ("" when the model did);
- ``shadow_score`` (float64, the shape of ``score``): the shadow model's score of the same instance
  (issue 16, ``shared.training.shadow``), NaN where no shadow scored it (none running, not sampled
  by ``SHADOW_RATE``, or it failed); files written before shadows existed lack the column, and
  read as NaN;
- ``shadow_version`` (``<U``): the version that scored ``shadow_score`` ("" where none did);
- ``f.<feature>``: each schema feature as served (categories ``<U``, numbers float64; a feature
  left out of the request, as a key-only static request may, holds its schema default).

``meta`` (a 0-d ``<U`` array of JSON): ``format``, ``instance``, ``features`` (name and type, in
schema order), ``classes`` (multiclass), ``written_at``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.contracts import PREDICTIONS_PREFIX
from shared.errors import PredictionLogError, ZipTooLarge
from shared.schema import Schema
from shared.storage import Bucket
from shared.zip_limits import NPZ_READ_ERRORS, read_npz

LOG_FORMAT = "prodml-predictions/1"
ID_COLUMN = "id"
FEATURE_PREFIX = "f."
BASE_COLUMNS = ("id", "time", "score", "label", "source", "model_version", "table_build")
SHADOW_SCORE = "shadow_score"
SHADOW_VERSION = "shadow_version"
SHADOW_COLUMNS = (SHADOW_SCORE, SHADOW_VERSION)  # optional: absent from files written before them


@dataclass
class LogBatch:
    """Predictions of one instance between two flushes, column by column (see the module doc)."""

    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    scores: list[Any] = field(default_factory=list)  # float, list of floats (multiclass) or None
    labels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    model_versions: list[str] = field(default_factory=list)
    table_builds: list[str] = field(default_factory=list)
    features: dict[str, list[Any]] = field(default_factory=dict)
    # The shadow's score of each row (None where no shadow scored it) and its version (""): filled
    # in by the flusher, off the request path, one entry per row like the lists above.
    shadow_scores: list[Any] = field(default_factory=list)
    shadow_versions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def log_object_name(instance: str, first_time: float, seq: int) -> str:
    """The object one flush writes (``predictions/<date>/<instance>-<first ms>-<seq>.npz``)."""
    moment = datetime.fromtimestamp(first_time, UTC)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance)[:100] or "instance"
    return f"{PREDICTIONS_PREFIX}{moment:%Y-%m-%d}/{safe}-{int(first_time * 1000):013d}-{seq:06d}.npz"


def encode_batch(batch: LogBatch, schema: Schema, instance: str) -> bytes:
    """The npz bytes of ``batch`` (compressed; no object arrays)."""
    n = len(batch)
    multiclass = schema.label.task == "multiclass"
    shadow_scores = batch.shadow_scores or [None] * n
    columns: dict[str, np.ndarray] = {
        "id": _text(batch.ids),
        "time": np.asarray(batch.times, dtype=np.float64),
        "score": _score_column(batch.scores, schema),
        "label": _text(batch.labels),
        "source": _text(batch.sources),
        "model_version": _text(batch.model_versions),
        "table_build": _text(batch.table_builds),
        SHADOW_SCORE: _score_column(shadow_scores, schema),
        SHADOW_VERSION: _text(batch.shadow_versions or [""] * n),
    }
    for feature in schema.features:
        values = batch.features.get(feature.name, [])
        columns[FEATURE_PREFIX + feature.name] = (
            _text(values) if feature.type == "category" else np.asarray(values, dtype=np.float64)
        )
    meta = {
        "format": LOG_FORMAT,
        "instance": instance,
        "features": [{"name": f.name, "type": f.type} for f in schema.features],
        "classes": [str(c) for c in schema.label.classes] if multiclass else [],
        "written_at": datetime.now(UTC).isoformat(),
    }
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"meta": np.asarray(json.dumps(meta)), **columns}
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _score_column(scores: Sequence[Any], schema: Schema) -> np.ndarray:
    """Scores as float64, ``(n,)`` or ``(n, k)`` for multiclass; NaN where a score is None."""
    if schema.label.task == "multiclass":
        column = np.full((len(scores), len(schema.label.classes)), math.nan)
        for i, score in enumerate(scores):
            if score is not None:
                column[i] = score
        return column
    return np.array([math.nan if s is None else float(s) for s in scores], dtype=np.float64)


def _text(values: Sequence[Any]) -> np.ndarray:
    """Fixed-width unicode: readable without pickle (an empty column is ``<U1``)."""
    return np.asarray([str(v) for v in values], dtype=str) if len(values) else np.zeros(0, dtype="<U1")


@dataclass(frozen=True)
class LogFile:
    """One log object as read: its columns and its meta."""

    name: str
    columns: Mapping[str, np.ndarray]
    meta: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.columns[ID_COLUMN])

    def feature(self, name: str) -> np.ndarray:
        """The served values of feature ``name``."""
        return self.columns[FEATURE_PREFIX + name]


def decode_log(name: str, data: bytes, max_bytes: int) -> LogFile:
    """Read a log object's bytes; ``PredictionLogError`` when they are not a log file or could
    decompress past ``max_bytes``."""
    try:
        columns, meta = read_npz(data, max_bytes, "MAX_TABLE_BYTES")
    except ZipTooLarge as exc:
        raise PredictionLogError(f"prediction log {name!r} refused unread: {exc}") from None
    except NPZ_READ_ERRORS as exc:
        raise PredictionLogError(
            f"prediction log {name!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != LOG_FORMAT:
        raise PredictionLogError(f"prediction log {name!r} is not a {LOG_FORMAT} file")
    missing = [c for c in BASE_COLUMNS if c not in columns]
    lengths = {len(v) for v in columns.values()}
    if missing or len(lengths) > 1:
        raise PredictionLogError(f"prediction log {name!r} lacks columns {missing} or has ragged columns")
    return LogFile(name, columns, meta)


def write_log(bucket: Bucket, batch: LogBatch, schema: Schema, instance: str, seq: int) -> str:
    """Write ``batch`` as its own new object; return its name (``PreconditionFailed`` if it exists)."""
    name = log_object_name(instance, batch.times[0], seq)
    write_encoded(bucket, name, encode_batch(batch, schema, instance))
    return name


def write_encoded(bucket: Bucket, name: str, data: bytes) -> None:
    """Write an encoded batch as the new object ``name`` (``PreconditionFailed`` if it exists)."""
    bucket.write(name, data, content_type="application/x-npz", if_generation_match=0)


def read_log(bucket: Bucket, name: str, max_bytes: int) -> LogFile:
    """Read one log object (see ``decode_log``)."""
    return decode_log(name, bucket.read(name), max_bytes)
