"""The shadow's scores of logged rows, computed by the prediction log's flusher (issue 16).

Off the request path: a request only hands the flusher the shadow its state held
(``ServedRows.shadow``); the flusher scores each sampled row (``SHADOW_RATE``, by a hash of the
id: one id is always in or always out) from the features as logged, in one vectorized call per
shadow and schema. A shadow that raises, or answers with a bad shape or a non-finite score, gives
NaN for those rows (no score), counted in ``failures`` with ``last_error``: never an exception out
of the flush and never a lost row, since the log's rows are the champion's answers.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shared.errors import ShadowScoreError
from shared.logs import get_logger
from shared.schema import Feature, Scalar, Schema
from shared.scoring import Columns, Scorer

log = get_logger(__name__)

_HASH_SPACE = float(2**64)
# Salted apart from the log's own sampling: at two rates below 1.0 the shadow's sample is then a
# share of the logged rows, not the same ids again.
_SHADOW_SALT = b"prodml-shadow"


def shadow_sampled_in(prediction_id: str, rate: float) -> bool:
    """Whether the shadow scores ``prediction_id`` at ``rate``: the same answer for the same id."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(
        prediction_id.encode("utf-8", "surrogatepass"), digest_size=8, person=_SHADOW_SALT
    ).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE < rate


@dataclass
class ShadowCounters:
    """What ``/health``'s ``shadow`` shows of the flusher's scoring (changed under a lock)."""

    scored_rows: int = 0
    sampled_out: int = 0  # logged rows a shadow ran beside but SHADOW_RATE left out
    failures: int = 0  # rows a shadow failed to score (raised, bad shape, non-finite)
    last_error: str | None = None
    seconds: float = 0.0  # spent in the shadow's scoring calls


def score_rows(shadow: Scorer, schema: Schema, columns: Columns, n: int) -> tuple[list[Any], str | None]:
    """The shadow's score of each of the ``n`` rows (floats, or lists for multiclass), or ``n``
    Nones and why, when it raised or answered wrongly. One call; never raises."""
    try:
        scores = _checked(shadow.score_columns(columns), schema, n)
    except Exception as exc:  # a shadow's fault must not reach the flush: its rows keep no score
        return [None] * n, f"shadow {shadow.version!r}: {type(exc).__name__}: {exc}"[:500]
    if scores.ndim == 2:
        return [row.tolist() for row in scores], None
    return scores.tolist(), None


def _checked(raw: Any, schema: Schema, n: int) -> np.ndarray:
    """``raw`` as float64 of the shape the log's score column has for ``schema``, all finite."""
    scores = np.asarray(raw, dtype=np.float64)
    task = schema.label.task
    shape = (n, len(schema.label.classes)) if task == "multiclass" else (n,)
    if scores.shape != shape:
        raise ShadowScoreError(f"scores of shape {scores.shape}, not {shape}")
    if not np.isfinite(scores).all():
        raise ShadowScoreError("a non-finite score")
    return scores


class ShadowedRows(Protocol):
    """What the scoring needs of one request's logged rows (``prediction_log.ServedRows``)."""

    @property
    def schema(self) -> Schema:
        """The schema the rows were served on."""
        ...

    @property
    def shadow(self) -> Scorer | None:
        """The shadow the request's serving state held (None: none)."""
        ...

    @property
    def ids(self) -> Sequence[str]:
        """The rows' prediction ids."""
        ...

    @property
    def instances(self) -> Sequence[Mapping[str, Scalar]]:
        """The rows' instances as parsed."""
        ...

    def __len__(self) -> int:
        """How many rows."""
        ...


ValueOf = Callable[[Feature, Mapping[str, Scalar]], Scalar]
"""The value a log row holds for a feature of an instance (the features as logged)."""

_Group = tuple[Scorer, Schema, list[tuple[int, int]]]  # a shadow, a schema, the (request, row)s


class ShadowScoring:
    """The flusher's shadow scoring: sampling, one call per (shadow, schema), the counters."""

    def __init__(self, rate: float, value_of: ValueOf) -> None:
        """``rate``: ``SHADOW_RATE``; ``value_of``: what the log holds for a feature of a row."""
        self.rate = rate
        self.counters = ShadowCounters()
        self._value_of = value_of
        self._lock = threading.Lock()

    def score(self, taken: Sequence[ShadowedRows]) -> list[list[Any]]:
        """The shadow's score of each row of each request in ``taken`` (None: not scored)."""
        out: list[list[Any]] = [[None] * len(rows) for rows in taken]
        groups, sampled_out = self._groups(taken)
        with self._lock:
            self.counters.sampled_out += sampled_out
        for shadow, schema, places in groups:
            if places:
                self._score_group(shadow, schema, places, taken, out)
        return out

    def _groups(self, taken: Sequence[ShadowedRows]) -> tuple[list[_Group], int]:
        """The sampled rows of ``taken`` by (shadow, schema), and how many were sampled out."""
        groups: list[_Group] = []
        sampled_out = 0
        for r, rows in enumerate(taken):
            if rows.shadow is None:
                continue
            kept = [i for i, name in enumerate(rows.ids) if shadow_sampled_in(name, self.rate)]
            sampled_out += len(rows) - len(kept)
            group = next((g for g in groups if g[0] is rows.shadow and g[1] == rows.schema), None)
            if group is None:
                group = (rows.shadow, rows.schema, [])
                groups.append(group)
            group[2].extend((r, i) for i in kept)
        return groups, sampled_out

    def _score_group(
        self,
        shadow: Scorer,
        schema: Schema,
        places: list[tuple[int, int]],
        taken: Sequence[ShadowedRows],
        out: list[list[Any]],
    ) -> None:
        """Score the rows at ``places`` with ``shadow`` in one call, into ``out``; count it."""
        columns = {
            f.name: [self._value_of(f, taken[r].instances[i]) for r, i in places] for f in schema.features
        }
        began = time.perf_counter()
        scores, error = score_rows(shadow, schema, columns, len(places))
        seconds = time.perf_counter() - began
        for (r, i), score in zip(places, scores, strict=True):
            out[r][i] = score
        with self._lock:
            self.counters.seconds += seconds
            if error is None:
                self.counters.scored_rows += len(places)
            else:
                self.counters.failures += len(places)
                self.counters.last_error = error
        if error is not None:
            log.warning(
                "the shadow model failed on logged rows; they keep no shadow score",
                extra={"fields": {"rows": len(places), "version": shadow.version, "error": error}},
            )

    def snapshot(self) -> dict[str, Any]:
        """The rate and the counters, for ``/health``."""
        with self._lock:
            return {"rate": self.rate, **vars(self.counters), "seconds": round(self.counters.seconds, 6)}
