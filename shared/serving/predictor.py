"""Online serving: the model and table in memory, hot reload, and the three serving modes.

``Predictor`` answers from one immutable ``ServingState`` (``shared.serving.state``) read once
per request, so every answer is computed by one model version and names it, and no request waits
for a reload. Loading is lazy (first request, once per instance); afterwards a background thread
reloads what changed at most every ``RELOAD_SECONDS``.

Modes (``SERVING_MODE``):

- ``dynamic``: every instance of a request goes to the model in one vectorized call;
- ``static``: answers from the table only; a key not in it is a ``miss`` (score null), still 200.
  The scores are those of the model the table was built from, and the answer names that version;
- ``hybrid``: table hits from the table, every miss to the model in one call. The table is used
  only while it was built from the model being served (same version), so a hybrid answer never
  mixes two models.

Table hits answer by key alone: non-key features are those the table build used (their schema
defaults), as static serving means. Requested keys are counted in a ``HeavyHitters`` sketch and
flushed to ``traffic/`` every ``TRAFFIC_FLUSH_SECONDS`` by a second thread (and at exit).

The module stays whole at about 420 lines: it is one class, ``Predictor``, whose modes, threads
and counters share one state reference; splitting it would scatter the one place a request reads.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.config import Settings
from shared.contracts import CURRENT_MODEL, ServingMode
from shared.errors import ModelNotReady, ProdMLError
from shared.feedback.prediction_log import PredictionLog, ServedRows
from shared.logs import get_logger
from shared.schema import Scalar
from shared.scoring import Scorer, predicted_labels, rows_to_columns
from shared.serving.health import TableFacts, ages_and_warnings
from shared.serving.request_checks import Require
from shared.serving.shadow import shadow_health
from shared.serving.state import FIRST_REQUEST, ServingState, StateLoader
from shared.serving.traffic import HeavyHitters, flush_counts
from shared.storage import Bucket
from shared.tables.codec import key_string

__all__ = ["Counters", "Predictor", "ServingState"]

log = get_logger(__name__)

# The first load (on the request path) retries a storage fault this often, after these waits (s).
FIRST_LOAD_ATTEMPTS = 3
FIRST_LOAD_BACKOFF = (0.1, 0.3)


@dataclass
class Counters:
    """Request counters for ``/health``; a lock keeps concurrent increments exact."""

    requests: int = 0
    instances: int = 0
    table_hits: int = 0
    model_predictions: int = 0
    misses: int = 0
    client_errors: int = 0
    server_errors: int = 0
    not_ready: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        """Add ``deltas`` to the named counters."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict."""
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Predictor:
    """One serving instance: lazy load, background reload and traffic flush, the three modes."""

    def __init__(
        self,
        artifacts: Bucket,
        settings: Settings,
        instance_id: str | None = None,
        predictions: Bucket | None = None,
    ) -> None:
        """``predictions``: the bucket of the prediction log (None: nothing is logged)."""
        self.artifacts = artifacts
        self.settings = settings
        self.mode = settings.serving_mode
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.counters = Counters()
        self.traffic = HeavyHitters(settings.traffic_sketch_size)
        self._traffic_since = datetime.now(UTC)
        self.prediction_log = PredictionLog(predictions, settings) if predictions is not None else None
        self.loader = StateLoader(artifacts, settings, shadow_off=_shadow_off(settings, self.prediction_log))
        self._tried_first_load = False
        self._first_load_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- loading ---------------------------------------------------------------------------

    def state(self) -> ServingState:
        """The current state; loads it on the first call. ``ModelNotReady`` when there is none."""
        state = self.loader.state
        if state is not None:
            return state
        with self._first_load_lock:
            if not self._tried_first_load:
                self._tried_first_load = True
                try:
                    self._first_load()
                finally:
                    self._start_threads()
        state = self.loader.state
        if state is None:
            raise ModelNotReady(self._not_ready_message())
        return state

    def _first_load(self) -> None:
        """Load on the request path, retrying a storage fault a few times with a short backoff.

        Bounded (``FIRST_LOAD_ATTEMPTS`` tries, at most ``sum(FIRST_LOAD_BACKOFF)`` seconds of
        waiting) so the first requests never wait long; after that the reload thread retries
        every ``RELOAD_SECONDS``. A content fault (a corrupt model) is not retried at all.
        """
        for attempt in range(FIRST_LOAD_ATTEMPTS):
            if attempt:
                time.sleep(FIRST_LOAD_BACKOFF[attempt - 1])
            self.loader.reload(by=FIRST_REQUEST)
            if not self.loader.retry_pending:
                return
        log.warning(
            "first load met storage faults; the reload thread retries",
            extra={"fields": {"attempts": FIRST_LOAD_ATTEMPTS, "error": self.loader.last_error}},
        )

    def _not_ready_message(self) -> str:
        error = self.loader.last_error
        reason = f" (last error: {error})" if error else ""
        return (
            f"no model is being served yet: {CURRENT_MODEL} is absent from bucket {self.artifacts.name!r} "
            f"or could not be loaded{reason}; train one with `prodml train FILE`"
        )

    def reload(self) -> bool:
        """Load whatever changed since the last look; True when a new state was swapped in."""
        return self.loader.reload()

    # --- background threads ----------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads:
            return
        loops = [("prodml-reload", self._reload_loop), ("prodml-traffic", self._traffic_loop)]
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.prediction_log is not None:
            self.prediction_log.start()
        atexit.register(self.close)

    def _reload_loop(self) -> None:
        interval = max(self.settings.reload_seconds, 0.05)
        while not self._stop.wait(interval):
            try:
                self.loader.reload(by="reload thread")
            except Exception as exc:  # storage hiccup: try again next interval
                self.loader.last_error = repr(exc)
                self.loader.failures += 1
                log.warning("reload check failed", extra={"fields": {"error": repr(exc)}})

    def _traffic_loop(self) -> None:
        interval = max(self.settings.traffic_flush_seconds, 0.05)
        while not self._stop.wait(interval):
            self.flush_traffic()

    def flush_traffic(self) -> str | None:
        """Write the key counts since the last flush to ``traffic/``; the object name, or None."""
        with self._flush_lock:
            state = self.loader.state
            counts = self.traffic.drain()
            start, end = self._traffic_since, datetime.now(UTC)
            self._traffic_since = end
            if not counts or state is None:
                return None
            try:
                return flush_counts(
                    self.artifacts, counts, list(state.model.schema.key), self.instance_id, start, end
                )
            except Exception as exc:  # traffic is evidence, not data: log and drop this interval
                log.warning("could not flush traffic counts", extra={"fields": {"error": repr(exc)}})
                return None

    def close(self) -> None:
        """Stop the background threads and flush the last traffic counts and logged predictions.

        Registered with ``atexit``: a gunicorn worker stopped by SIGTERM leaves its run loop and
        exits through ``sys.exit``, so this runs (docs/design.md section 5).
        """
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.flush_traffic()

    # --- answering -------------------------------------------------------------------------

    def predict(self, body: bytes) -> dict[str, Any]:
        """Answer a request body; ``BadRequest`` for bad input, ``ModelNotReady`` with nothing to serve."""
        state = self.state()
        if self.mode == ServingMode.STATIC and not state.table_usable:
            raise ModelNotReady(
                f"static serving has no usable table yet ({state.table_note}): "
                f"build one with `prodml table build`"
            )
        require: Require = "key" if self.mode == ServingMode.STATIC else "all"
        checked = state.checker.check(body, require)
        instances = checked.instances
        model = state.model
        n = len(instances)
        # Made here when the client sent none: uuid4 hex, unique across instances and requests.
        ids = checked.ids if checked.ids is not None else [uuid.uuid4().hex for _ in range(n)]
        keys = [state.codec.key_values(instance) for instance in instances] if state.codec.key else []
        static = self.mode == ServingMode.STATIC
        scores: list[Any] = [None] * n
        sources = ["miss" if static else "model"] * n
        to_model: Sequence[int] = [] if static else range(n)  # static never calls the model
        hits = 0
        if state.table_usable and state.table is not None and keys:
            table, codec = state.table, state.codec
            missed: list[int] = []
            for i, values in enumerate(keys):
                row = table.lookup_one(codec.encode_one(values))
                if row is None:
                    missed.append(i)
                else:
                    scores[i] = row
                    sources[i] = "table"
            hits = n - len(missed)
            if not static:
                to_model = missed
        if to_model:
            # Straight from the parsed instances: ONNX Runtime inputs for a compiled version,
            # a frame (pandas, loaded then) only for a version served by scikit-learn.
            model_scores = model.score_columns(
                rows_to_columns(model.schema, [instances[i] for i in to_model])
            )
            for j, i in enumerate(to_model):
                scores[i] = model_scores[j]
        if keys:
            self.traffic.add_many([key_string(values) for values in keys])
        self.counters.add(
            requests=1,
            instances=n,
            table_hits=hits,
            model_predictions=len(to_model),
            misses=n - hits - len(to_model),
        )
        version = state.table.model_version if static and state.table else model.version
        answer = _answer(model, version, scores, sources, ids)
        if self.prediction_log is not None:
            table_build = state.table.blob if hits and state.table is not None else ""
            # The shadow of this very state: the flusher scores it later, off the request path.
            served = ServedRows(
                model.schema,
                time.time(),
                ids,
                instances,
                answer["predictions"],
                version,
                table_build,
                state.shadow,
            )
            self.prediction_log.record(served)
        return answer

    def _shadow_health(self, state: ServingState | None) -> dict[str, Any]:
        """``/health``'s ``shadow``: what the pointer names, whether it is scored and why, counts."""
        counters = self.prediction_log.shadow_snapshot() if self.prediction_log is not None else None
        if state is None:
            return shadow_health(None, None, "no model is served yet", counters)
        note = state.shadow_note
        if self.loader.shadow_retry is not None:
            note = f"{note}; retrying after {self.loader.shadow_retry}"
        return shadow_health(state.shadow_slot, state.shadow, note, counters)

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` reports: mode, model, table, counters."""
        try:
            state: ServingState | None = self.state()
        except ModelNotReady:
            state = None
        out: dict[str, Any] = {
            "status": "ok" if state is not None else "no_model",
            "mode": self.mode,
            "reload_seconds": self.settings.reload_seconds,
            "counters": {
                **self.counters.snapshot(),
                "reloads": self.loader.reloads,
                "reload_checks": self.loader.checks,
                "reload_failures": self.loader.failures,
            },
            "last_reload_error": self.loader.last_error,
            "model": None,
            "table": None,
            "warnings": [],
            "prediction_log": self.prediction_log.snapshot() if self.prediction_log else None,
            "shadow": self._shadow_health(state),
        }
        if state is None:
            return out
        now = datetime.now(UTC)
        model_age = (now - state.model_updated).total_seconds()
        table_age, out["warnings"] = ages_and_warnings(
            self.settings,
            state.model.version,
            model_age,
            TableFacts.of(state.table) if state.table is not None else None,
            now,
        )
        out["model"] = {
            "version": state.model.version,
            "generation": state.model_generation,
            "task": state.model.schema.label.task,
            "form": state.model.form,
            "form_note": state.model_note,
            "age_seconds": round(model_age, 3),
            "loaded_by": state.model_loaded_by,
            "loaded_at_check": state.model_loaded_check,
        }
        if state.table is not None:
            table = state.table
            cardinality = state.codec.cardinality
            out["table"] = {
                "version": table.version,
                "blob": table.blob,  # the exact object the pointer named (one per build)
                "rows": len(table),
                "model_version": table.model_version,
                "matches_model": table.model_version == state.model.version,
                "used": state.table_usable,
                "note": state.table_note,
                "coverage": round(len(table) / cardinality, 6) if cardinality else None,
                "strategy": table.meta.get("strategy"),
                "age_seconds": table_age,
            }
        if self.mode == ServingMode.STATIC and not state.table_usable:
            out["status"] = "no_table"
        return out


def _shadow_off(settings: Settings, prediction_log: PredictionLog | None) -> str | None:
    """Why this instance scores no shadow (None: it does): shadow scores go into the prediction
    log, so without one there is nothing to score for."""
    if prediction_log is None:
        return "this instance has no prediction log (PREDICTIONS_BUCKET), where shadow scores go"
    if not prediction_log.enabled:
        return "the prediction log is off (PREDICTION_LOG_RATE=0), and shadow scores go there"
    if settings.shadow_rate <= 0.0:
        return "SHADOW_RATE=0"
    return None


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    return float(value)


def _answer(
    model: Scorer, version: str, scores: list[Any], sources: list[str], ids: Sequence[str]
) -> dict[str, Any]:
    """The response body: one prediction per instance (with its id), the model version, classes
    if multiclass."""
    task = model.schema.label.task
    answered = [i for i, s in enumerate(scores) if s is not None]
    labels: list[Scalar | None] = [None] * len(scores)
    if answered and task != "regression":
        found = predicted_labels(model.schema, np.asarray([scores[i] for i in answered], dtype=float))
        for i, label in zip(answered, found, strict=True):
            labels[i] = label
    predictions = []
    for prediction_id, score, source, label in zip(ids, scores, sources, labels, strict=True):
        plain = _plain(score)
        if plain is not None and not all(
            math.isfinite(v) for v in (plain if isinstance(plain, list) else [plain])
        ):
            raise ProdMLError(f"model {version!r} produced a non-finite score {plain!r}")
        prediction: dict[str, Any] = {"id": prediction_id, "score": plain, "source": source}
        if task != "regression":
            prediction["label"] = label
        predictions.append(prediction)
    body: dict[str, Any] = {"predictions": predictions, "model_version": version}
    if task == "multiclass":
        body["classes"] = list(model.schema.label.classes)
    return body
