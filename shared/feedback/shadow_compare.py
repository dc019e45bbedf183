"""How the shadow compares with the champion on live traffic (issue 16; docs/feedback.md).

The rows are the join's (``shared.feedback.join``: one row per prediction id, the first served),
matured (``shared.feedback.maturity``), restricted to the predictions the pointer's champion
answered and the shadow scored: ``shadow_version`` is the pointer's version and neither score is
missing (a static-mode miss served none; a shadow that failed left NaN). Only the shadow's current
run counts: predictions served from the pointer's ``started`` on (the log objects of those days
are all that is read), so a version started again is not judged on an earlier run's rows.

- **Agreement**, at once, per source (``table``, ``model``, ``miss``) and over ``all``: the mean
  absolute score difference (for multiclass, over every class's probability) and the share of
  flipped labels (the shadow's predicted label, ``shared.scoring.predicted_labels``, is not the
  label served; None for regression).
- **Live comparison**, as labels mature: the paired test of the offline gate
  (``shared.training.gate.judge`` on each row's loss, ``gate.losses_of_scores``, with
  ``PROMOTION_TOLERANCE``) on the matured rows both scored, and the number of rows it rests on.
  It decides nothing before ``SHADOW_MIN_LABELS`` rows (``waiting``); then ``not_worse`` (the gate
  would promote) or ``worse``. What a decision does is ``shared.training.shadow_policy``'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import LabelState
from shared.data import monitoring
from shared.feedback import join, maturity
from shared.feedback.live import score_matrix
from shared.feedback.log_format import SHADOW_SCORE, SHADOW_VERSION
from shared.schema import Schema, load_schema
from shared.scoring import predicted_labels
from shared.storage import Bucket
from shared.training.gate import judge, losses_of_scores
from shared.training.shadow import ShadowPointer

Decision = Literal["waiting", "not_worse", "worse"]
ALL_SOURCES = "all"


@dataclass(frozen=True)
class Agreement:
    """How closely the shadow's scores follow the champion's answers on some rows."""

    rows: int
    mean_abs_difference: float | None  # None without rows
    flipped_share: float | None  # None without rows, or for regression


@dataclass(frozen=True)
class LiveComparison:
    """The paired comparison on matured rows both models scored, and what it decides."""

    rows: int  # matured rows both scored: what the test rests on
    min_rows: int  # SHADOW_MIN_LABELS
    metric: str  # the primary metric (log loss, RMSE)
    champion_metric: float | None  # on those rows; None without rows
    shadow_metric: float | None
    decision: Decision
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)  # the gate's (rows, mean difference, ...)


@dataclass(frozen=True)
class ShadowComparison:
    """Agreement and the live comparison of one shadow version against its champion."""

    version: str
    champion: str | None
    agreement: dict[str, Agreement]  # by source, and ALL_SOURCES
    live: LiveComparison

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON (``prodml shadow status --json``'s ``comparison``)."""
        return {
            "version": self.version,
            "champion": self.champion,
            "agreement": {source: asdict(a) for source, a in self.agreement.items()},
            "live": asdict(self.live),
        }


def compare(
    settings: Settings,
    pointer: ShadowPointer,
    *,
    artifacts: Bucket,
    predictions: Bucket,
    now: float | None = None,
) -> ShadowComparison:
    """Join the log and the labels now and compare the pointer's shadow with its champion.

    ``JoinTooLarge`` past JOIN_MAX_ROWS; ``SchemaError`` without a schema; ``ValueError`` when the
    pointer names no running shadow."""
    if pointer.version is None:
        raise ValueError("no shadow is running: nothing to compare")
    schema = load_schema(artifacts)
    default = maturity.label_default(schema, settings)
    since = pointer.started_at()
    joined = join.load_and_join(predictions, artifacts, settings, since)
    moment = time.time() if now is None else now
    rows = maturity.mature(joined.rows, moment, settings.label_window, default)
    return compare_rows(rows, schema, settings, pointer.version, pointer.champion, since)


def compare_rows(
    rows: pd.DataFrame,
    schema: Schema,
    settings: Settings,
    version: str,
    champion: str | None,
    since: float | None = None,
) -> ShadowComparison:
    """``compare`` on rows already joined and matured (the live report's); ``since``: only the
    predictions served from then on (this run of the shadow: a version started again is judged on
    its new run, not on the rows of an earlier one)."""
    if since is not None and len(rows):
        rows = rows[rows["time"].to_numpy(dtype=np.float64) >= since]
    paired = _paired_rows(rows, schema, version, champion)
    agreement = {ALL_SOURCES: _agreement(paired, schema)}
    for source, group in paired.groupby("source", sort=True):
        agreement[str(source)] = _agreement(group, schema)
    live = _live(paired, schema, settings)
    return ShadowComparison(version, champion, agreement, live)


def _paired_rows(rows: pd.DataFrame, schema: Schema, version: str, champion: str | None) -> pd.DataFrame:
    """The rows the champion answered and the shadow scored, both with a score."""
    if not len(rows) or SHADOW_VERSION not in rows.columns:
        return rows.iloc[0:0]
    # pandas hands back read-only arrays: combine into a fresh one, never in place.
    mask = (rows[SHADOW_VERSION] == version).to_numpy(dtype=bool)
    if champion is not None:
        mask = mask & (rows["model_version"] == champion).to_numpy(dtype=bool)
    mask = mask & _scored(score_matrix(rows, schema)) & _scored(score_matrix(rows, schema, SHADOW_SCORE))
    paired: pd.DataFrame = rows[mask]
    return paired


def _scored(scores: np.ndarray) -> np.ndarray:
    scored: np.ndarray = ~np.isnan(scores).any(axis=1) if scores.ndim == 2 else ~np.isnan(scores)
    return scored


def _agreement(rows: pd.DataFrame, schema: Schema) -> Agreement:
    if not len(rows):
        return Agreement(0, None, None)
    served = score_matrix(rows, schema)
    shadow = score_matrix(rows, schema, SHADOW_SCORE)
    difference = float(np.abs(shadow - served).mean())
    if schema.label.task == "regression":
        return Agreement(len(rows), difference, None)
    shadow_labels = [str(label) for label in predicted_labels(schema, shadow)]
    flipped = np.asarray(shadow_labels, dtype=object) != rows["label"].astype(str).to_numpy(dtype=object)
    return Agreement(len(rows), difference, float(flipped.mean()))


def _live(paired: pd.DataFrame, schema: Schema, settings: Settings) -> LiveComparison:
    task = schema.label.task
    metric, _ = monitoring.PRIMARY_METRIC[task]
    matured = paired[paired[maturity.STATE] != LabelState.PENDING.value]
    need = settings.shadow_min_labels
    if not len(matured):
        reason = f"waiting: no matured live rows scored by both yet (SHADOW_MIN_LABELS={need})"
        return LiveComparison(0, need, metric, None, None, "waiting", reason)
    truth = _truth(matured, schema)
    champion_losses = losses_of_scores(schema, score_matrix(matured, schema), truth)
    shadow_losses = losses_of_scores(schema, score_matrix(matured, schema, SHADOW_SCORE), truth)
    champion_metric, shadow_metric = _metric(task, champion_losses), _metric(task, shadow_losses)
    n = len(matured)
    if n < need:
        reason = f"waiting: {n} of SHADOW_MIN_LABELS={need} matured live rows scored by both"
        return LiveComparison(n, need, metric, champion_metric, shadow_metric, "waiting", reason)
    not_worse, verdict, numbers = judge(
        task, shadow_losses, champion_losses, settings.promotion_tolerance, rows_are="matured live rows"
    )
    # judge's verdict starts "promoted: " or "rejected: "; here it only says not worse or worse.
    detail = verdict.split(": ", 1)[1]
    decision: Decision = "not_worse" if not_worse else "worse"
    reason = f"{'not worse' if not_worse else 'worse'}: the shadow's {detail}"
    return LiveComparison(n, need, metric, champion_metric, shadow_metric, decision, reason, numbers)


def _truth(rows: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The matured rows' labels as the schema's values (the join holds them as text)."""
    outcome = rows[maturity.OUTCOME]
    if schema.label.task == "regression":
        return outcome.to_numpy(dtype=np.float64)
    by_text = {str(c): c for c in schema.label.classes}
    return np.asarray([by_text[str(v)] for v in outcome], dtype=object)


def _metric(task: str, losses: np.ndarray) -> float:
    """The primary metric from per-row losses: their mean (log loss), or its root (RMSE)."""
    mean = float(losses.mean())
    return math.sqrt(mean) if task == "regression" else mean
