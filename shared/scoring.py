"""What every form of a model answers with: the ``Scorer`` protocol, and labels from scores.

Two forms score a version: ``shared.model.ModelBundle`` (the scikit-learn estimator, through
pandas) and ``shared.compiled.runtime.CompiledModel`` (its ONNX graph, through ONNX Runtime, with
no scikit-learn or pandas). predict, the table build and the Beam table pipeline take either, so
whichever form serves a version also scores its table.

This module imports only numpy: a predict process that serves a compiled model or a table loads
it without loading scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from shared.contracts import ModelForm
from shared.schema import Scalar, Schema

Columns = Mapping[str, Sequence[Any] | np.ndarray]
"""Model input by column: each schema feature's values, all of one length, already validated."""


class Scorer(Protocol):
    """One model version, ready to score."""

    @property
    def version(self) -> str:
        """The version it is."""
        ...

    @property
    def schema(self) -> Schema:
        """The schema it was trained on."""
        ...

    @property
    def form(self) -> ModelForm:
        """Which form answers: ONNX Runtime or scikit-learn."""
        ...

    def score_columns(self, columns: Columns) -> np.ndarray:
        """Scores for rows given by column (float64).

        Binary: the positive class's probability, shape ``(n,)``. Multiclass: one probability per
        class in the schema's order, shape ``(n, k)``. Regression: the prediction, shape ``(n,)``.
        """
        ...


def rows_to_columns(schema: Schema, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Parsed instances (one dict each) as columns in schema order, the input ``score_columns`` takes."""
    return {name: [row[name] for row in rows] for name in schema.feature_names}


def predicted_labels(schema: Schema, scores: np.ndarray) -> list[Scalar | None]:
    """The predicted label for each row of ``scores`` (None for regression).

    Binary: the positive class from a probability of 0.5 up. Multiclass: the class of the largest
    probability (the first, on a tie).
    """
    task = schema.label.task
    if task == "regression":
        return [None] * len(scores)
    classes = schema.label.classes
    if task == "binary":
        negative, positive = classes
        return [positive if s >= 0.5 else negative for s in scores]
    return [classes[int(i)] for i in np.argmax(scores, axis=1)]
