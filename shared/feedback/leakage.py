"""Label leakage: a feature that alone predicts the label almost perfectly (issue 15, item 9).

Google's lesson: a feature that is a copy of the label in disguise (the conversion time of a
conversion label, a status set after the outcome) makes a model that looks perfect offline and
fails in serving, where that feature does not exist yet. ``check_leakage`` measures, for each
schema feature on a data file's rows, how well that feature alone orders the label:

- **binary**: ROC AUC of the feature as a score against the positive class;
- **multiclass**: one-vs-rest ROC AUC of each class present, macro-averaged;
- **regression**: |Spearman rank correlation| with the label (an AUC needs classes; a monotone
  copy of the label has |rho| = 1 as a leaking classifier feature has AUC 1).

Either direction counts: an AUC is reported as ``max(auc, 1 - auc)``. A number is its own score
(binary, regression); a category, and a number in a multiclass task (one raw order cannot rank a
middle class), is scored by its value's label rate, one rate per class, or mean label
(regression). Those rates are **cross-fitted**: each row gets the rate measured on the other half
of the rows (a seeded split, smoothed towards the overall rate), so a high-cardinality category
whose values each occur once (an id) scores as chance, not as a perfect in-sample lookup. Numbers
in multiclass are grouped into ``NUMERIC_BINS`` quantile bins first.

A feature scoring ``LEAKAGE_AUC`` or more leaks. The cost is bounded: at most
``LEAKAGE_SAMPLE_ROWS`` rows are measured (a seeded sample of a bigger file).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from shared.contracts import LEAKAGE_RULE
from shared.data.fault_details import details
from shared.errors import ValidationFailed
from shared.schema import Feature, Schema

ROC_AUC = "roc_auc"
ABS_SPEARMAN = "abs_spearman"
NUMERIC_BINS = 20  # quantile bins of a number in a multiclass task
SMOOTHING_ROWS = 1.0  # a group's cross-fitted rate counts the overall rate as this many rows


@dataclass(frozen=True)
class LeakageCheck:
    """Each feature's univariate score against the label on one file, and which ones leak."""

    measure: str  # ROC_AUC (binary, multiclass macro one-vs-rest) or ABS_SPEARMAN (regression)
    scores: Mapping[str, float]  # per feature; a feature that cannot be measured is absent
    leaking: tuple[str, ...]  # scores >= threshold, strongest first
    threshold: float
    rows: int  # rows measured
    sampled: bool  # True when ``rows`` is a sample of a bigger file

    def to_record(self) -> dict[str, Any]:
        """The check as a monitoring record and the card hold it."""
        return {
            "measure": self.measure,
            "threshold": self.threshold,
            "rows": self.rows,
            "sampled": self.sampled,
            "scores": {name: round(score, 6) for name, score in self.scores.items()},
            "leaking": list(self.leaking),
        }

    def describe(self, name: str) -> str:
        """``'bid' (ROC AUC 0.999)``: one leaking feature, for a message."""
        label = "ROC AUC" if self.measure == ROC_AUC else "|Spearman|"
        return f"{name!r} ({label} {self.scores[name]:.4f})"


def check_leakage(
    frame: pd.DataFrame, schema: Schema, threshold: float, max_rows: int, seed: int
) -> LeakageCheck:
    """Score every feature of ``frame`` (validated rows: features + label) against the label."""
    sampled = len(frame) > max_rows
    rows = frame.sample(n=max_rows, random_state=seed) if sampled else frame
    rows = rows.reset_index(drop=True)
    halves = np.random.default_rng(seed).random(len(rows)) < 0.5
    task = schema.label.task
    label = rows[schema.label.name]
    scores: dict[str, float] = {}
    for feature in schema.features:
        score = _feature_score(rows[feature.name], feature, label, schema, halves)
        if score is not None and np.isfinite(score):
            scores[feature.name] = float(score)
    leaking = sorted((n for n, s in scores.items() if s >= threshold), key=lambda n: (-scores[n], n))
    measure = ABS_SPEARMAN if task == "regression" else ROC_AUC
    return LeakageCheck(measure, scores, tuple(leaking), threshold, len(rows), sampled)


def leakage_failure(check: LeakageCheck) -> ValidationFailed:
    """The quarantine reason of a file with a leaking feature (``LEAKAGE_POLICY=quarantine``)."""
    shown = ", ".join(check.describe(name) for name in check.leaking)
    return ValidationFailed(
        LEAKAGE_RULE,
        f"label leakage: {shown} alone predicts the label (LEAKAGE_AUC={check.threshold})",
        details(
            columns=list(check.leaking),
            samples=[round(check.scores[name], 4) for name in check.leaking],
            count=len(check.leaking),
            leakage=check.to_record(),
        ),
    )


def _feature_score(
    values: pd.Series, feature: Feature, label: pd.Series, schema: Schema, halves: np.ndarray
) -> float | None:
    """The feature's score against the label (see the module doc); None when not measurable."""
    task = schema.label.task
    if task == "regression":
        target = label.to_numpy(dtype="float64")
        order = (
            _group_scores(_groups(values, feature), target, halves) if feature.type == "category" else values
        )
        return _abs_spearman(np.asarray(order, dtype="float64"), target)
    truth = label.to_numpy()
    if task == "binary":
        positive = (truth == schema.label.positive_class).astype("float64")
        if feature.type == "category":
            return _either_way_auc(positive, _group_scores(_groups(values, feature), positive, halves))
        return _either_way_auc(positive, values.to_numpy(dtype="float64"))
    groups = _groups(values, feature)
    present = [c for c in schema.label.classes if bool((truth == c).any())]
    if len(present) < 2:
        return None
    aucs = []
    for cls in present:
        is_class = (truth == cls).astype("float64")
        aucs.append(_either_way_auc(is_class, _group_scores(groups, is_class, halves)))
    measured = [a for a in aucs if a is not None]
    return float(np.mean(measured)) if measured else None


def _groups(values: pd.Series, feature: Feature) -> np.ndarray:
    """Integer group codes: a category's values, or a number's quantile bins (multiclass)."""
    if feature.type == "category":
        codes, _ = pd.factorize(values.astype(str))
        return np.asarray(codes)
    numbers = values.to_numpy(dtype="float64")
    edges = np.unique(np.quantile(numbers, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
    return np.searchsorted(edges, numbers, side="left")


def _group_scores(groups: np.ndarray, target: np.ndarray, halves: np.ndarray) -> np.ndarray:
    """Each row's group mean of ``target`` measured on the other half of the rows (smoothed)."""
    out = np.empty(len(target), dtype="float64")
    size = int(groups.max()) + 1 if len(groups) else 0
    # One prior for both halves: a per-half prior would differ between the halves by chance and
    # rank one half above the other, a signal that is no feature's.
    prior = float(target.mean())
    for half in (True, False):
        fit = halves != half
        sums = np.bincount(groups[fit], weights=target[fit], minlength=size)
        counts = np.bincount(groups[fit], minlength=size)
        rates = (sums + prior * SMOOTHING_ROWS) / (counts + SMOOTHING_ROWS)
        out[halves == half] = rates[groups[halves == half]]
    return out


def _either_way_auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """``max(auc, 1 - auc)``; None when ``truth`` holds one class only."""
    if truth.min() == truth.max():
        return None
    auc = float(roc_auc_score(truth, score))
    return max(auc, 1.0 - auc)


def _abs_spearman(values: np.ndarray, target: np.ndarray) -> float | None:
    """|Spearman's rho|; None when either side is constant."""
    ranks = pd.Series(values).rank().to_numpy(), pd.Series(target).rank().to_numpy()
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return None
    return abs(float(np.corrcoef(ranks[0], ranks[1])[0, 1]))
