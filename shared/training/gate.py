"""The gate: whether a challenger is promoted over the champion, judged on the same held-out rows.

The gate (``judge``) compares the primary metric (``monitoring.PRIMARY_METRIC``: log loss for
classification, RMSE for regression) row by row on the held-out rows of the most recent files
the champion was trained with (``HOLDOUT_WINDOW_FILES``): data that already passed the gate once.
The new file's own held-out rows are scored too and recorded, but do not decide: its labels are
the one thing not yet trusted, and a file whose labels are noise would make a noise-fitted
challenger look *better* there (it is less confident, so its log loss on noise is lower).
Measured on synthetic files: with them in the gate, a shuffled-labels file was rejected in 1 of
6 runs; without, in 6 of 6.

``PROMOTION_TOLERANCE`` is in the metric's own units for classification (log loss is unitless:
0.01 is a hundredth of a nat) and a fraction of the champion's RMSE for regression, whose RMSE
is in the label's units (0.01 = 1 % worse). A challenger is rejected only when it is worse by
more than that with 95 % confidence (a paired one-sided bound over the held-out rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.data import monitoring
from shared.model import ModelBundle
from shared.schema import Schema
from shared.training import fitting

Z_ONE_SIDED_95 = 1.645  # the gate rejects only what is worse with 95 % confidence
PROMOTED_VERDICT = "promoted: "  # how the verdict on a challenger that passes begins
REJECTED_VERDICT = "rejected: "


def row_losses(bundle: ModelBundle, frame: pd.DataFrame, scores: np.ndarray | None = None) -> np.ndarray:
    """Each row's share of the primary metric: -log p(true class), or the squared error.

    The mean over rows is the log loss (the MSE, whose root is the RMSE) that ``evaluate`` reports.
    ``scores``: the model's scores of ``frame`` (``monitoring.model_scores``) when already computed.
    """
    schema = bundle.schema
    if scores is None:
        scores = bundle.scores(fitting.features(frame, schema))
    elif len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores given for {len(frame)} rows")
    return losses_of_scores(schema, scores, np.asarray(fitting.labels(frame, schema)))


def losses_of_scores(schema: Schema, scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each row's share of the primary metric from its ``scores`` and true label (``truth``: class
    values of the schema, or numbers for regression): the gate's loss, also the shadow's live one
    (``shared.feedback.shadow_compare``)."""
    task = schema.label.task
    if task == "regression":
        return np.asarray((scores - truth.astype(np.float64)) ** 2, dtype="float64")
    if task == "binary":
        positive = truth == schema.label.positive_class
        p_true = np.where(positive, scores, 1.0 - scores)
    else:
        proba = np.clip(scores, 1e-15, None)
        proba = proba / proba.sum(axis=1, keepdims=True)
        index = {c: i for i, c in enumerate(schema.label.classes)}
        p_true = proba[np.arange(len(truth)), [index[c] for c in truth]]
    losses: np.ndarray = -np.log(np.clip(p_true, 1e-15, 1.0))  # numpy types this as Any
    return losses


def judge(
    task: str,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    tolerance: float,
    *,
    rows_are: str = "held-out rows",
) -> tuple[bool, str, dict[str, float]]:
    """Promote or not, why, and the numbers: a paired comparison over the same held-out rows.

    ``challenger`` and ``champion`` are the per-row losses (``row_losses``) on the same rows. The
    challenger is rejected when its mean loss exceeds the champion's by more than the tolerance
    even at the low end of a one-sided 95 % confidence interval of the paired difference: a few
    dozen held-out rows differ by a hundredth of log loss between two equally good models, and the
    gate must not reject on that noise; a file of shuffled labels costs clearly more.
    ``rows_are`` names the rows in the verdict (a shadow is judged on matured live rows).
    """
    name, _ = monitoring.PRIMARY_METRIC[task]
    if champion is None:
        return True, "no current model: the first model is promoted", {}
    diff = challenger - champion
    rows = len(diff)
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(rows)) if rows > 1 else 0.0
    if task == "regression":
        # RMSE_c <= (1 + t) RMSE_k  <=>  MSE_c - MSE_k <= ((1 + t)^2 - 1) MSE_k
        allowed = ((1.0 + tolerance) ** 2 - 1.0) * float(champion.mean())
        unit = "squared error"
    else:
        allowed = tolerance
        unit = name
    bound = mean - Z_ONE_SIDED_95 * se
    numbers = {
        "rows": rows,
        "mean_difference": mean,
        "standard_error": se,
        "lower_bound": bound,
        "allowed": allowed,
    }
    verdict = (
        f"{unit} worse by {mean:+.4f} (95% lower bound {bound:+.4f}) than the champion "
        f"on {rows} {rows_are}; tolerance {allowed:.4f}"
    )
    if bound <= allowed:
        return True, PROMOTED_VERDICT + verdict, numbers
    return False, REJECTED_VERDICT + verdict, numbers


def scores_by_model(models: dict[str, ModelBundle | None], rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each present model's scores of ``rows`` (none when there are no rows)."""
    if not len(rows):
        return {}
    return {who: monitoring.model_scores(model, rows) for who, model in models.items() if model is not None}


def quality(
    model: ModelBundle | None, rows: pd.DataFrame, scores: np.ndarray | None
) -> dict[str, float | None] | None:
    """``monitoring.evaluate`` from the model's scores of ``rows``; None without a model or rows."""
    if model is None or scores is None:
        return None
    return monitoring.evaluate(model, rows, scores)


def copy_quality(quality: dict[str, float | None] | None) -> dict[str, float | None] | None:
    """A copy of a model's metrics (so two card entries never share one dict)."""
    return dict(quality) if quality is not None else None
