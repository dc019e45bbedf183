"""The model bundle: skops round trip, scores per task, refusal of untrusted or broken files."""

from __future__ import annotations

import io
from typing import Any

import bad_model_files
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.errors import ModelNotReady
from shared.model import ModelBundle, to_frame
from shared.schema import Schema


def _schema(label: dict[str, Any]) -> Schema:
    return Schema.from_dict(
        {
            "features": [
                {"name": "color", "type": "category", "domain": ["red", "green", "blue"]},
                {"name": "size", "type": "float", "min": 0, "max": 10},
            ],
            "label": label,
            "key": ["color"],
        }
    )


def _fit(schema: Schema, estimator: Any, n: int = 300) -> tuple[ModelBundle, pd.DataFrame]:
    rng = np.random.default_rng(0)
    rows = [
        {"color": rng.choice(["red", "green", "blue"]), "size": float(rng.uniform(0, 10))} for _ in range(n)
    ]
    frame = to_frame(schema, rows)
    if schema.label.task == "regression":
        y = frame["size"] * 2 + (frame["color"] == "red")
    else:
        classes = list(schema.label.classes)
        y = [classes[int(s) % len(classes)] for s in frame["size"]]
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["color"]), ("num", StandardScaler(), ["size"])]
    )
    pipe = Pipeline([("prep", prep), ("model", estimator)]).fit(frame, y)
    return ModelBundle("v1", pipe, schema), frame


def test_binary_round_trip_scores_the_positive_class() -> None:
    schema = _schema({"name": "y", "type": "category", "classes": ["no", "yes"]})
    bundle, frame = _fit(schema, LogisticRegression())
    loaded = ModelBundle.from_bytes(bundle.to_bytes())
    scores = loaded.scores(frame)
    assert loaded.version == "v1" and loaded.schema == schema
    assert scores.shape == (len(frame),)
    positive = list(bundle.estimator.classes_).index("yes")
    np.testing.assert_array_equal(scores, bundle.estimator.predict_proba(frame)[:, positive])
    assert set(loaded.labels(scores)) <= {"no", "yes"}


def test_multiclass_scores_follow_schema_class_order() -> None:
    schema = _schema({"name": "y", "type": "category", "classes": ["c", "a", "b"]})
    bundle, frame = _fit(schema, LogisticRegression())
    scores = ModelBundle.from_bytes(bundle.to_bytes()).scores(frame)
    assert scores.shape == (len(frame), 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    labels = bundle.labels(scores)
    assert labels[0] == ["a", "b", "c"][int(np.argmax(scores[0]))]


def test_regression_scores_are_predictions() -> None:
    schema = _schema({"name": "y", "type": "float"})
    bundle, frame = _fit(schema, LinearRegression())
    scores = ModelBundle.from_bytes(bundle.to_bytes()).scores(frame)
    np.testing.assert_array_equal(scores, bundle.estimator.predict(frame))
    assert bundle.labels(scores) == [None] * len(frame)


class Sneaky(LogisticRegression):
    """A type skops does not trust by default."""


def test_untrusted_type_is_refused_unless_listed() -> None:
    schema = _schema({"name": "y", "type": "category", "classes": ["no", "yes"]})
    bundle, frame = _fit(schema, Sneaky())
    data = bundle.to_bytes()
    with pytest.raises(ModelNotReady, match="Sneaky"):
        ModelBundle.from_bytes(data)
    trusted = ModelBundle.from_bytes(data, extra_trusted=[f"{__name__}.Sneaky"])
    assert trusted.scores(frame).shape == (len(frame),)


def test_broken_and_unfitted_files_are_refused() -> None:
    schema = _schema({"name": "y", "type": "category", "classes": ["no", "yes"]})
    with pytest.raises(ModelNotReady, match="not a valid skops file"):
        ModelBundle.from_bytes(b"not a zip at all")
    with pytest.raises(ModelNotReady, match="no fitted estimator"):
        ModelBundle.from_bytes(ModelBundle("v0", LogisticRegression(), schema).to_bytes())


def _late_failures() -> dict[str, bytes]:
    """Model files whose zip and schema.json are fine but that fail while skops loads them."""
    import skops.io as sio

    schema = _schema({"name": "y", "type": "category", "classes": ["no", "yes"]})
    bundle = _fit(schema, LogisticRegression())[0]
    good = bundle.to_bytes()
    no_version = sio.dumps(
        {"format": "prodml-model/1", "schema": schema.to_json(), "estimator": bundle.estimator}
    )
    return {
        "object array": bad_model_files.with_object_array(good),
        "short array": bad_model_files.with_short_array(good),
        "no version": no_version,
    }


@pytest.mark.parametrize("fault", ["object array", "short array", "no version"])
def test_every_late_load_failure_is_model_not_ready(fault: str) -> None:
    with pytest.raises(ModelNotReady, match="model file cannot be loaded"):
        ModelBundle.from_bytes(_late_failures()[fault])


def test_loading_is_bounded_by_what_the_members_decompress_to() -> None:
    import zipfile

    import skops.io as sio

    schema = _schema({"name": "y", "type": "category", "classes": ["no", "yes"]})
    bundle, frame = _fit(schema, LogisticRegression())
    raw = {
        "format": "prodml-model/1",
        "version": "v1",
        "schema": schema.to_json(),
        "estimator": bundle.estimator,
    }
    deflated = sio.dumps(raw, compression=zipfile.ZIP_DEFLATED)  # an honest compressed file loads
    assert ModelBundle.from_bytes(deflated).scores(frame).shape == (len(frame),)
    size = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(deflated)).infolist())
    with pytest.raises(
        ModelNotReady, match=f"declare {size} bytes uncompressed, more than MAX_MODEL_BYTES={size - 1}"
    ):
        ModelBundle.from_bytes(deflated, max_bytes=size - 1)
    member = bad_model_files.first_array(deflated)
    lying = bad_model_files.lying_bomb(deflated, member, 8 << 20, 100)
    with pytest.raises(ModelNotReady, match="decompresses to more than the 100 bytes it declares"):
        ModelBundle.from_bytes(lying)


def test_to_frame_orders_columns_and_types_categories_as_text() -> None:
    schema = _schema({"name": "y", "type": "float"})
    frame = to_frame(schema, [{"size": 3, "color": "red", "extra": 1}])
    assert list(frame.columns) == ["color", "size"]
    assert frame["size"].dtype == np.float64
    assert frame.loc[0, "color"] == "red"
