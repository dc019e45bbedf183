"""predict's prediction log: every served prediction (sampled) kept in bounded memory and written
in batches to ``PREDICTIONS_BUCKET`` off the request path (docs/design.md section 5, "The
prediction log"; the file format is ``shared.feedback.log_format``).

The request path does one thing under one lock: it appends the request's rows (references to
what was already computed for the answer) to a list, or counts them as dropped when
``PREDICTION_LOG_MAX_ROWS`` rows already wait, so memory never grows with traffic. Sampling
(``PREDICTION_LOG_RATE``) is decided before the lock by a hash of each id, so one id is always
in or always out, on every instance and every run.

A background thread turns the waiting rows into columns and writes them with ``write_log``
every ``PREDICTION_LOG_FLUSH_SECONDS``, or as soon as ``PREDICTION_LOG_BATCH_ROWS`` rows wait.
A request also wakes it when the interval has passed: on Cloud Functions (Cloud Run with
request-based billing) an instance has CPU only while it serves a request, so a timer alone
could sleep through idle periods; a flush kicked by a request runs while requests are in
flight. ``close`` (predict's exit hook, run by the gunicorn worker on SIGTERM) writes what is
left. So a graceful stop loses no row, and a kill -9 loses the rows not yet in a written object:
the flush in flight (one interval's, or one batch) plus those served while it was being written.

A write that fails (a storage fault) keeps its batch, with the same object name, for the next
flush: if the failed write had in fact landed, the retry finds the object there
(``PreconditionFailed``: written with ``if_generation_match=0``) and counts it as written, so a
row is never written twice. Rows waiting for a retry still count against the maximum.

The flusher also scores the shadow (issue 16, ``shared.feedback.shadow_scoring``): each request's
rows carry the shadow its serving state held, and before a flush turns them into batches it
scores the sampled rows of each shadow in one call, filling ``shadow_score``/``shadow_version``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings
from shared.errors import PreconditionFailed
from shared.feedback.log_format import LogBatch, encode_batch, log_object_name, write_encoded
from shared.feedback.shadow_scoring import ShadowScoring
from shared.logs import get_logger
from shared.schema import Feature, Scalar, Schema
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.tables.keys import default_value

log = get_logger(__name__)

_HASH_SPACE = float(2**64)
CLOSE_JOIN_SECONDS = 5.0  # Cloud Run gives ~10 s after SIGTERM: leave the rest to the last write


def sampled_in(prediction_id: str, rate: float) -> bool:
    """Whether ``prediction_id`` is logged at ``rate``: the same answer for the same id, always."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(prediction_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE < rate


def new_instance_name() -> str:
    """A name for this process's log objects, unique across instances: the host and pid alone can
    repeat (every Cloud Run container may run its worker as the same pid)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ServedRows:
    """What one request served, as the answer said it: one row per kept prediction."""

    schema: Schema
    time: float
    ids: Sequence[str]
    instances: Sequence[Mapping[str, Scalar]]
    predictions: Sequence[Mapping[str, Any]]  # the answer's: "score", "source", "label"
    model_version: str
    table_build: str  # the table object of the rows whose source is "table"
    shadow: Scorer | None = None  # the shadow the request's state held: the flusher scores it

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Unwritten:
    """A batch given its object's sequence number, waiting to be written (or written again)."""

    seq: int
    schema: Schema
    batch: LogBatch


@dataclass
class LogCounters:
    """The log's counters for ``/health`` (changed under the log's lock)."""

    logged: int = 0  # rows taken into the buffer
    sampled_out: int = 0
    dropped: int = 0  # rows refused because the buffer was full
    unencodable: int = 0  # rows of a batch that could not be encoded (a bug), dropped and logged
    flushed_rows: int = 0
    flushed_objects: int = 0
    flush_failures: int = 0
    last_flush: str | None = None  # when the last object was written (UTC, ISO 8601)
    last_flush_object: str | None = None
    last_flush_error: str | None = None


class PredictionLog:
    """The bounded buffer and its flusher for one predict instance (see the module doc)."""

    def __init__(self, bucket: Bucket, settings: Settings, instance: str | None = None) -> None:
        self.bucket = bucket
        self.rate = settings.prediction_log_rate
        self.max_rows = settings.prediction_log_max_rows
        self.batch_rows = settings.prediction_log_batch_rows
        self.flush_seconds = settings.prediction_log_flush_seconds
        self.instance = instance or new_instance_name()
        self.counters = LogCounters()
        self.shadow = ShadowScoring(settings.shadow_rate, _logged_value)
        self._lock = threading.Lock()  # the request path's one lock: the buffer and counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._pending: list[ServedRows] = []
        self._held = 0  # rows pending or waiting to be written again: bounded by max_rows
        self._pending_rows = 0
        self._unwritten: list[_Unwritten] = []
        self._seq = 0
        self._last_flush_started = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is logged at all (``PREDICTION_LOG_RATE`` above 0)."""
        return self.rate > 0.0

    # --- the request path ------------------------------------------------------------------

    def record(self, rows: ServedRows) -> None:
        """Keep a request's sampled rows for the next flush (or count them dropped when full)."""
        if not self.enabled or not len(rows):
            return
        if self.rate < 1.0:
            rows, out = _sample(rows, self.rate)
        else:
            out = 0
        n = len(rows)
        with self._lock:
            self.counters.sampled_out += out
            room = self.max_rows - self._held
            if n > room:
                self.counters.dropped += n - max(room, 0)
                rows = _head(rows, max(room, 0))
                n = len(rows)
            if n:
                self._pending.append(rows)
                self._pending_rows += n
                self._held += n
                self.counters.logged += n
            due = (
                self._pending_rows >= self.batch_rows
                or time.monotonic() - self._last_flush_started >= self.flush_seconds
            )
        if due:
            self._wake.set()

    # --- the flusher -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (once; not when the log is off)."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="prodml-prediction-log", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() writes the rest
            try:
                self.flush()
            except Exception:  # a bug, not storage (write faults are kept): keep the thread alive
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write every waiting row now; the number of rows written (failures are kept, counted)."""
        with self._flush_lock:
            self._last_flush_started = time.monotonic()
            with self._lock:
                taken, self._pending, self._pending_rows = self._pending, [], 0
            shadow_scores = self.shadow.score(taken)
            for schema, batch in _batches(taken, shadow_scores, self.batch_rows):
                self._seq += 1
                self._unwritten.append(_Unwritten(self._seq, schema, batch))
            return self._write_unwritten()

    def _write_unwritten(self) -> int:
        """Write the waiting batches in order; stop at the first failure (the rest wait)."""
        written = 0
        while self._unwritten:
            item = self._unwritten[0]
            try:
                data = encode_batch(item.batch, item.schema, self.instance)
            except (ValueError, TypeError, OverflowError) as exc:
                # A bug, not storage: no retry can encode it, and kept first in line it would
                # stop every later batch. Dropped, counted and said, so the log goes on.
                self._unwritten.pop(0)
                self._drop_unencodable(item, exc)
                continue
            name = log_object_name(self.instance, item.batch.times[0], item.seq)
            try:
                write_encoded(self.bucket, name, data)
            except PreconditionFailed:
                # Only this instance writes names with its id: an earlier attempt that reported
                # a failure had landed. Its rows are there; writing them again would double them.
                name = "(already written)"
            except Exception as exc:  # a storage fault: keep the batch for the next flush
                with self._lock:
                    self.counters.flush_failures += 1
                    self.counters.last_flush_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning(
                    "could not write the prediction log; its rows wait for the next flush",
                    extra={"fields": {"rows": len(item.batch), "seq": item.seq, "error": repr(exc)}},
                )
                return written
            self._unwritten.pop(0)
            n = len(item.batch)
            written += n
            with self._lock:
                self._held -= n
                self.counters.flushed_rows += n
                self.counters.flushed_objects += 1
                self.counters.last_flush = datetime.now(UTC).isoformat()
                self.counters.last_flush_object = name
        return written

    def _drop_unencodable(self, item: _Unwritten, exc: Exception) -> None:
        n = len(item.batch)
        with self._lock:
            self._held -= n
            self.counters.unencodable += n
            error = f"batch {item.seq} cannot be encoded: {type(exc).__name__}: {exc}"
            self.counters.last_flush_error = error[:500]
        log.error(
            "a prediction log batch cannot be encoded; its rows are dropped",
            extra={"fields": {"rows": n, "seq": item.seq, "error": repr(exc)}},
        )

    def close(self) -> None:
        """Stop the flusher and write what is left (predict's exit hook, run on SIGTERM)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_JOIN_SECONDS)
        if not self.enabled:
            return
        self.flush()
        with self._lock:
            lost = self._held
        if lost:
            log.error("prediction log rows not written at shutdown", extra={"fields": {"rows": lost}})

    def snapshot(self) -> dict[str, Any]:
        """What ``/health`` shows of the log: settings, counters, rows waiting."""
        with self._lock:
            return {
                "enabled": self.enabled,
                "rate": self.rate,
                "max_rows": self.max_rows,
                "batch_rows": self.batch_rows,
                "flush_seconds": self.flush_seconds,
                "instance": self.instance,
                "waiting": self._held,
                **vars(self.counters),
            }

    def shadow_snapshot(self) -> dict[str, Any]:
        """What ``/health``'s ``shadow`` shows of the flusher's scoring: the rate and counters."""
        return self.shadow.snapshot()


def _sample(rows: ServedRows, rate: float) -> tuple[ServedRows, int]:
    """The rows whose ids are sampled in at ``rate``, and how many were left out."""
    keep = [i for i, prediction_id in enumerate(rows.ids) if sampled_in(prediction_id, rate)]
    if len(keep) == len(rows):
        return rows, 0
    kept = ServedRows(
        rows.schema,
        rows.time,
        [rows.ids[i] for i in keep],
        [rows.instances[i] for i in keep],
        [rows.predictions[i] for i in keep],
        rows.model_version,
        rows.table_build,
        rows.shadow,
    )
    return kept, len(rows) - len(keep)


def _head(rows: ServedRows, n: int) -> ServedRows:
    """The first ``n`` rows of ``rows``."""
    return ServedRows(
        rows.schema,
        rows.time,
        rows.ids[:n],
        rows.instances[:n],
        rows.predictions[:n],
        rows.model_version,
        rows.table_build,
        rows.shadow,
    )


def _batches(
    taken: Sequence[ServedRows], shadow_scores: Sequence[Sequence[Any]], batch_rows: int
) -> list[tuple[Schema, LogBatch]]:
    """The requests' rows (with their shadow scores, one list per request) as column batches of
    at most ``batch_rows`` rows, one schema each (a new model may bring a new schema between two
    requests)."""
    out: list[tuple[Schema, LogBatch]] = []
    for rows, shadowed in zip(taken, shadow_scores, strict=True):
        if not out or out[-1][0] != rows.schema:
            out.append((rows.schema, _empty_batch(rows.schema)))
        for i in range(len(rows)):
            if len(out[-1][1]) >= batch_rows:
                out.append((rows.schema, _empty_batch(rows.schema)))
            _append_row(out[-1][1], rows, i, shadowed[i])
    return out


def _empty_batch(schema: Schema) -> LogBatch:
    return LogBatch(features={f.name: [] for f in schema.features})


def _missing_value(feature: Feature) -> Scalar:
    """What a log row holds for a feature the request left out: the value it was served with,
    the one the table was built with (``default_value``: the schema's default, else the first
    category or the middle of the range), never an empty or NaN that no data file could hold."""
    return default_value(feature)


def _logged_value(feature: Feature, instance: Mapping[str, Scalar]) -> Scalar:
    """The value a log row holds for ``feature`` of ``instance`` (and the shadow scores)."""
    value = instance.get(feature.name)
    return _missing_value(feature) if value is None else value


def _append_row(batch: LogBatch, rows: ServedRows, i: int, shadow_score: Any) -> None:
    """Append row ``i`` of ``rows`` (and its shadow score: None when none) to ``batch``."""
    prediction = rows.predictions[i]
    source = str(prediction["source"])
    label = prediction.get("label")
    batch.ids.append(rows.ids[i])
    batch.times.append(rows.time)
    batch.scores.append(prediction["score"])
    batch.labels.append("" if label is None else str(label))
    batch.sources.append(source)
    batch.model_versions.append(rows.model_version)
    batch.table_builds.append(rows.table_build if source == "table" else "")
    batch.shadow_scores.append(shadow_score)
    batch.shadow_versions.append(rows.shadow.version if shadow_score is not None and rows.shadow else "")
    instance = rows.instances[i]
    for feature in rows.schema.features:
        batch.features[feature.name].append(_logged_value(feature, instance))
