"""Fitting models: the default pipeline, the plug-in estimator, full and incremental training.

The default estimator is a plain scikit-learn ``Pipeline``::

    ColumnTransformer(OneHotEncoder(categories from the schema's domains, handle_unknown="ignore")
                      for category features, StandardScaler for integer and float features)
    -> SGDClassifier(loss="log_loss", alpha=0.01)   (binary and multiclass labels)
    -> SGDRegressor(alpha=0.01)                     (float labels)

Every piece is a type skops trusts by default, so a model loads without trusting custom code.
``Pipeline`` has no ``partial_fit``; an incremental update therefore transforms the new rows with
the already-fitted preprocessing (frozen after the first full fit, which is what keeps the
learned coefficients meaningful) and calls ``partial_fit`` on the last step only. The encoder's
categories come from the schema, so every value is known up front, whatever file comes first.

Another estimator plugs in with ``ESTIMATOR=module:function``: the function is called with the
``Schema`` and returns an unfitted estimator that takes the frame made by ``model.to_frame``
(``default_preprocessor(schema)`` is there to reuse). It must have ``predict_proba`` for
category labels and ``predict`` for float labels; for ``TRAINING_STRATEGY=incremental`` it (or
its last step, for a ``Pipeline``) needs ``partial_fit``, else the trainer falls back to a full
retrain. Types skops does not trust by default go in ``MODEL_TRUSTED_TYPES``.
"""

from __future__ import annotations

import hashlib
import importlib
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.config import Settings
from shared.errors import ConfigError, IncrementalUnsupported
from shared.schema import Schema

ALPHA = 0.01  # L2 strength of the default linear models (see default_pipeline)


def default_preprocessor(schema: Schema) -> ColumnTransformer:
    """One-hot for categories (domains from the schema), standard scaling for numbers."""
    categories = [f for f in schema.features if f.type == "category"]
    numbers = [f.name for f in schema.features if f.type != "category"]
    steps: list[tuple[str, Any, list[str]]] = []
    if categories:
        encoder = OneHotEncoder(
            categories=[list(f.domain) for f in categories],
            handle_unknown="ignore",  # an accepted unseen value (policy "accept") encodes as all zeros
        )
        steps.append(("categories", encoder, [f.name for f in categories]))
    if numbers:
        steps.append(("numbers", StandardScaler(), numbers))
    return ColumnTransformer(steps, remainder="drop")


def default_pipeline(schema: Schema, seed: int = 0) -> Pipeline:
    """The default unfitted model for ``schema``'s label (see the module docstring)."""
    # alpha=0.01 (sklearn's default is 1e-4): with files of a few hundred rows the default's large
    # steps make two fits on similar data differ by several hundredths of log loss, so the
    # promotion gate would compare noise; measured on synthetic files, 0.01 keeps refits within
    # ~0.005 while a file with shuffled labels still costs ~0.02-0.04. Averaged SGD is as stable
    # for full fits but makes partial_fit updates vanishingly small, so it is not used.
    model: SGDClassifier | SGDRegressor
    if schema.label.task == "regression":
        model = SGDRegressor(alpha=ALPHA, random_state=seed)
    else:
        model = SGDClassifier(loss="log_loss", alpha=ALPHA, random_state=seed)
    return Pipeline([("preprocess", default_preprocessor(schema)), ("model", model)])


def load_estimator_factory(spec: str) -> Callable[[Schema], Any]:
    """The function named by ``ESTIMATOR`` (``module:function``); ``ConfigError`` if it is not one."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"ESTIMATOR={spec!r} must be 'module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"ESTIMATOR={spec!r} cannot be loaded: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"ESTIMATOR={spec!r} is not a function")
    return factory  # type: ignore[no-any-return]


def new_estimator(schema: Schema, settings: Settings) -> Any:
    """An unfitted estimator: the ``ESTIMATOR`` plug-in's, or the default pipeline."""
    if settings.estimator:
        return load_estimator_factory(settings.estimator)(schema)
    return default_pipeline(schema, settings.random_seed)


def labels(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The label column as the model learns it: the schema's class type, or float64."""
    values = frame[schema.label.name]
    if schema.label.task == "regression":
        return values.to_numpy(dtype="float64")
    if all(isinstance(c, str) for c in schema.label.classes):
        return values.astype(str).to_numpy(dtype=object)
    return values.astype("int64").to_numpy()


def features(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The feature columns in schema order (the frame already has the ``to_frame`` dtypes)."""
    return frame[schema.feature_names]


def holdout_mask(rows: int, file_key: str, fraction: float, seed: int) -> np.ndarray:
    """Which rows of a file are held out (True) from training, to compare models on.

    The choice depends only on ``file_key`` (the file's ``bucket/name``) and the seed, so every
    model trained in this system holds out the very same rows of a file, no model is ever compared
    on rows it was trained on, and a rerun on the same files repeats exactly. A file of two rows
    or more keeps at least one row on each side.
    """
    digest = hashlib.sha256(f"{seed}:{file_key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    mask = rng.random(rows) < fraction
    if rows >= 2 and not mask.any():
        mask[int(rng.integers(rows))] = True
    if rows >= 1 and mask.all():
        mask[int(rng.integers(rows))] = False
    return mask


def fit_full(estimator: Any, frame: pd.DataFrame, schema: Schema) -> Any:
    """Fit a fresh clone of ``estimator`` on every row of ``frame``; return the fitted clone.

    ``ValueError`` (e.g. a single class among the labels) is left to the caller to report.
    """
    fresh = clone(estimator)
    return fresh.fit(features(frame, schema), labels(frame, schema))


def _final_step(estimator: Any) -> tuple[Any, Any]:
    """(preprocessing or None, the step that learns), for a Pipeline or a bare estimator."""
    if isinstance(estimator, Pipeline):
        return (estimator[:-1] if len(estimator.steps) > 1 else None), estimator.steps[-1][1]
    return None, estimator


def supports_incremental(estimator: Any) -> bool:
    """Whether ``fit_incremental`` can update this estimator."""
    return hasattr(_final_step(estimator)[1], "partial_fit")


def fit_incremental(estimator: Any, frame: pd.DataFrame, schema: Schema) -> Any:
    """Update a fitted estimator in place with one ``partial_fit`` pass over ``frame``; return it.

    The preprocessing stays as fitted; only the learning step moves. Raises
    ``IncrementalUnsupported`` when the learning step has no ``partial_fit`` or when ``frame``
    holds a class the fitted model does not know (a full retrain can learn it).
    """
    preprocess, learner = _final_step(estimator)
    if not hasattr(learner, "partial_fit"):
        raise IncrementalUnsupported(f"{type(learner).__name__} has no partial_fit")
    x = features(frame, schema)
    if preprocess is not None:
        x = preprocess.transform(x)
    y = labels(frame, schema)
    if schema.label.task == "regression":
        learner.partial_fit(x, y)
        return estimator
    known = getattr(learner, "classes_", None)
    if known is None:
        learner.partial_fit(x, y, classes=np.asarray(schema.label.classes))
        return estimator
    unknown = sorted({str(v) for v in y} - {str(v) for v in known})
    if unknown:
        raise IncrementalUnsupported(f"the model has never seen the classes {unknown}")
    learner.partial_fit(x, y)
    return estimator


def library_versions() -> dict[str, str]:
    """The versions a model was trained with (for its card: reproducing and loading it)."""
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
    }
