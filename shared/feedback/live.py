"""Live quality: what each model version served, how much of it is labelled, and how good it was.

Per model version, and within it per source (``table``, ``model``, ``miss``) and per day (UTC, of
the serving time): ``counts`` (``served``, ``labelled``, ``defaulted``, ``pending``, ``matured`` =
labelled + defaulted) and the task's ``metrics`` on the matured rows that carry a score (a
static-mode miss served none): ``shared.data.monitoring.quality_of_scores`` (log loss, ROC AUC,
accuracy; MAE, RMSE for regression) plus ``calibration`` (mean predicted against observed: the
positive rate for binary, each class's share for multiclass, the mean for regression).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from shared.contracts import LabelState
from shared.data.monitoring import quality_of_scores
from shared.feedback.maturity import OUTCOME, STATE
from shared.schema import Schema


def counts(rows: pd.DataFrame) -> dict[str, int]:
    """Served, labelled, defaulted, pending and matured predictions among ``rows``."""
    states = rows[STATE].value_counts()
    labelled = int(states.get(LabelState.LABELLED.value, 0))
    defaulted = int(states.get(LabelState.DEFAULTED.value, 0))
    return {
        "served": len(rows),
        "labelled": labelled,
        "defaulted": defaulted,
        "pending": int(states.get(LabelState.PENDING.value, 0)),
        "matured": labelled + defaulted,
    }


def score_matrix(rows: pd.DataFrame, schema: Schema, column: str = "score") -> np.ndarray:
    """The served scores (``column``: the log's ``score``, or ``shadow_score``): ``(n,)``, or
    ``(n, k)`` for multiclass (the join's ``<column>.<i>``)."""
    if schema.label.task == "multiclass":
        width = len(schema.label.classes)
        return rows[[f"{column}.{i}" for i in range(width)]].to_numpy(dtype=np.float64)
    return rows[column].to_numpy(dtype=np.float64)


def quality(rows: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """``counts``, and ``metrics`` and ``calibration`` of the matured, scored rows (None if none)."""
    matured = rows[rows[STATE] != LabelState.PENDING.value]
    scores = score_matrix(matured, schema)
    scored = ~np.isnan(scores).any(axis=1) if scores.ndim == 2 else ~np.isnan(scores)
    out: dict[str, Any] = {"counts": counts(rows), "metrics": None, "calibration": None}
    if not bool(scored.any()):
        return out
    kept = matured[scored]
    scores = scores[scored]
    if schema.label.task == "regression":
        truth = kept[OUTCOME].to_numpy(dtype=np.float64)
        out["metrics"] = quality_of_scores(schema, truth, scores, None)
        out["calibration"] = {"mean_predicted": float(scores.mean()), "mean_observed": float(truth.mean())}
        return out
    by_text = {str(c): c for c in schema.label.classes}
    truth = np.asarray([by_text[str(v)] for v in kept[OUTCOME]], dtype=object)
    predicted = np.asarray([by_text.get(str(v), v) for v in kept["label"]], dtype=object)
    typed = truth.astype(type(schema.label.classes[0])) if schema.label.classes else truth
    out["metrics"] = quality_of_scores(schema, typed, scores, predicted)
    out["calibration"] = _calibration(schema, truth, scores)
    return out


def _calibration(schema: Schema, truth: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Mean predicted probability against the observed rate (binary), or per class (multiclass)."""
    if schema.label.task == "binary":
        positive = schema.label.positive_class
        return {"mean_predicted": float(scores.mean()), "observed_rate": float(np.mean(truth == positive))}
    return {
        str(c): {"mean_predicted": float(scores[:, i].mean()), "observed_rate": float(np.mean(truth == c))}
        for i, c in enumerate(schema.label.classes)
    }


def version_quality(rows: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """One version's ``quality`` overall, ``by_source`` and ``by_day`` (``YYYY-MM-DD``, oldest first)."""
    out = quality(rows, schema)
    out["by_source"] = {str(source): quality(group, schema) for source, group in rows.groupby("source")}
    days = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in rows["time"]]
    out["by_day"] = [
        {"day": str(day), **quality(group, schema)}
        for day, group in rows.groupby(np.asarray(days, dtype=object))
    ]
    return out
