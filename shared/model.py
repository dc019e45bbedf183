"""The serving model: a fitted scikit-learn estimator with its version and schema.

``models/current.skops`` and ``models/versions/<v>/model.skops`` hold a ``ModelBundle`` saved
with skops (a dict of plain values and scikit-learn objects; never a pickle). Loading refuses
any type that is neither trusted by skops by default nor listed in ``extra_trusted``.

One scoring function serves both paths of the system: the table build and the predict
function both call ``ModelBundle.score_columns`` (``scores`` on frames made by ``to_frame``) when
a version is served by scikit-learn, so a table score and a model score for the same instance are
the same float. (A version with a verified compiled form is served by
``shared.compiled.runtime.CompiledModel`` instead, in both paths.)

pandas and scikit-learn are imported when first used, not with this module: a predict process
that serves a compiled model or a table never loads them (it imports this module's names only
through the registry of forms).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.config import get_settings
from shared.contracts import ModelForm
from shared.errors import ModelNotReady, SchemaError, ScikitLearnMissing, ZipTooLarge
from shared.schema import Scalar, Schema
from shared.scoring import Columns, predicted_labels
from shared.zip_limits import check_zip

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "prodml-model/1"


def to_frame(schema: Schema, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Columns of the schema's features, in schema order, with the dtypes the model expects.

    Categories become strings (a category ``7`` and ``"7"`` are the same value), integers int64,
    floats float64. Values are assumed already validated (see the validation module).
    """
    import pandas as pd
    from pandas.api.types import infer_dtype

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    columns: dict[str, Any] = {}
    for feature in schema.features:
        values = frame[feature.name]
        if feature.type == "category":
            # Already Python strings (the table build's decoded keys, parsed requests): keep them;
            # the conversion costs milliseconds per 50k-row chunk.
            if values.dtype != object or infer_dtype(values, skipna=False) != "string":
                values = values.astype(str).astype(object)
            columns[feature.name] = values
        elif feature.type == "integer":
            columns[feature.name] = values.astype("int64")
        else:
            columns[feature.name] = values.astype("float64")
    return pd.DataFrame(columns, index=frame.index)


def frame_from_columns(schema: Schema, columns: Columns) -> pd.DataFrame:
    """``to_frame`` of rows given by column (a table build's keys, a request's instances)."""
    import pandas as pd

    raw: dict[str, Any] = {}
    for f in schema.features:
        values: Any = columns[f.name]
        if f.type == "category" and not isinstance(values, pd.api.extensions.ExtensionArray):
            # Explicitly object: left to infer, pandas 3 would first convert the strings to its
            # pyarrow "str" dtype, only for to_frame to convert them back (2x slower per chunk).
            values = pd.Series(np.asarray(values, dtype=object), dtype=object, copy=False)
        raw[f.name] = values
    return to_frame(schema, pd.DataFrame(raw))


@dataclass
class ModelBundle:
    """A fitted estimator, the schema it was trained on, and its version."""

    version: str
    estimator: Any
    schema: Schema

    form = ModelForm.SKLEARN

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` or ``regression``, from the schema's label."""
        return self.schema.label.task

    @property
    def classes(self) -> tuple[Scalar, ...]:
        """The label's classes in schema order (empty for regression)."""
        return self.schema.label.classes

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores for a frame made by ``to_frame``.

        Binary: the positive class's probability, shape ``(n,)``. Multiclass: one probability per
        class in ``classes`` order, shape ``(n, k)``. Regression: the prediction, shape ``(n,)``.
        """
        if self.task == "regression":
            return np.asarray(self.estimator.predict(frame), dtype="float64")
        proba = np.asarray(self.estimator.predict_proba(frame), dtype="float64")
        fitted = list(self.estimator.classes_)
        if self.task == "binary":
            return proba[:, fitted.index(self.schema.label.positive_class)]
        # Reorder columns to the schema's class order; a class the model never saw scores 0.
        out = np.zeros((len(frame), len(self.classes)))
        for j, cls in enumerate(self.classes):
            if cls in fitted:
                out[:, j] = proba[:, fitted.index(cls)]
        return out

    def score_columns(self, columns: Columns) -> np.ndarray:
        """Scores for rows given by column (``shared.scoring.Scorer``): ``scores`` of their frame."""
        return self.scores(frame_from_columns(self.schema, columns))

    def labels(self, scores: np.ndarray) -> list[Scalar | None]:
        """The predicted label for each row of ``scores`` (None for regression)."""
        return predicted_labels(self.schema, scores)

    def to_bytes(self) -> bytes:
        """The skops form stored in the bucket."""
        import skops.io as sio

        data: bytes = sio.dumps(  # skops is untyped: the annotation says what dumps returns
            {
                "format": FORMAT,
                "version": self.version,
                "schema": self.schema.to_json(),
                "estimator": self.estimator,
            }
        )
        return data

    @classmethod
    def from_bytes(
        cls, data: bytes, extra_trusted: Iterable[str] = (), max_bytes: int | None = None
    ) -> ModelBundle:
        """Load a bundle, refusing untrusted types; ``ModelNotReady`` if it is not a fitted model.

        The one function that loads a model: every way the bytes can fail to load is a
        ``ModelNotReady`` (never another exception), so every caller (serving, rollback, the
        registry listing, the table build, the trainer) handles a bad model in one place. A file
        whose members would decompress to more than ``max_bytes`` (default: the process's
        ``MAX_MODEL_BYTES``) is refused before any of it is read.
        """
        limit = get_settings().max_model_bytes if max_bytes is None else max_bytes
        try:
            check_zip(data, limit, "MAX_MODEL_BYTES")
            return cls._load(data, extra_trusted)
        except ZipTooLarge as exc:
            raise ModelNotReady(f"model file is refused unread: {exc}") from None
        except ModelNotReady:
            raise
        except Exception as exc:
            # skops checks the zip and its schema.json up front, but a member that fails late,
            # while skops reads it (numpy's ValueError for an object array or a short member,
            # zipfile's BadZipFile for a bad CRC, KeyError, TypeError, EOFError, ...), surfaces
            # as whatever the library beneath raised: content, not a fault a retry could fix.
            raise ModelNotReady(f"model file cannot be loaded: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _load(cls, data: bytes, extra_trusted: Iterable[str]) -> ModelBundle:
        sio = _skops_io()
        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as exc:  # skops raises several types for a corrupt file
            raise ModelNotReady(f"model file is not a valid skops file: {exc}") from None
        refused = sorted(set(untrusted) - set(extra_trusted))
        if refused:
            raise ModelNotReady(
                f"model file holds untrusted types {refused}: add them to MODEL_TRUSTED_TYPES"
            )
        raw = sio.loads(data, trusted=list(untrusted))
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelNotReady(f"model file is not a {FORMAT} bundle")
        try:
            schema = Schema.from_json(raw["schema"])
        except SchemaError as exc:
            raise ModelNotReady(f"model file's schema is invalid: {exc}") from None
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        estimator = raw["estimator"]
        try:
            check_is_fitted(estimator)
        except (NotFittedError, TypeError) as exc:
            raise ModelNotReady(f"model {raw['version']!r} holds no fitted estimator: {exc}") from None
        return cls(version=str(raw["version"]), estimator=estimator, schema=schema)


def _skops_io() -> Any:
    """``skops.io``, with scikit-learn; ``ScikitLearnMissing`` where either cannot be imported.

    predict is deployed without them by default (functions/predict/requirements.txt): a version
    with no compiled form then cannot be served, and the error says so (``shared.compiled.current``
    adds which version and what to do) instead of a bare ModuleNotFoundError. Only these imports
    are wrapped: a plug-in estimator's own module missing while skops loads it is another fault.
    """
    try:
        import sklearn  # noqa: F401  (first: skops needs it, and the error then names it)
        import skops.io as sio
    except ImportError as exc:
        raise ScikitLearnMissing(f"scikit-learn or skops cannot be imported here ({exc})") from None
    return sio
