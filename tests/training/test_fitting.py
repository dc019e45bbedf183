"""The default pipeline, full and incremental fits, held-out rows, the estimator plug-in."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from conftest import training_rows, training_schema
from sklearn.pipeline import Pipeline

from shared.config import load_settings
from shared.data import monitoring
from shared.errors import ConfigError
from shared.model import ModelBundle
from shared.schema import Schema
from shared.training import fitting


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_default_pipeline_learns_each_task_and_saves_with_default_trusted_types(task: str) -> None:
    schema = training_schema(task)
    model = fitting.fit_full(fitting.default_pipeline(schema), training_rows(400, 1, task), schema)
    data = ModelBundle("v1", model, schema).to_bytes()

    assert sio.get_untrusted_types(data=data) == []
    bundle = ModelBundle.from_bytes(data)
    test = training_rows(1000, 2, task)
    quality = monitoring.evaluate(bundle, test)
    if task == "regression":
        assert quality["rmse"] < 0.5 * float(test[schema.label.name].std())
    else:
        assert quality["roc_auc"] > 0.8
        assert list(bundle.estimator.classes_) == list(schema.label.classes)


def test_category_columns_come_from_the_schema_not_the_first_file() -> None:
    schema = training_schema()
    rows = training_rows(300, 1)
    without_us = rows[rows["country"] != "us"]
    model = fitting.fit_full(fitting.default_pipeline(schema), without_us, schema)
    encoder = model.named_steps["preprocess"].named_transformers_["categories"]
    assert [list(c) for c in encoder.categories_] == [["br", "de", "kr", "us"]]
    assert model.named_steps["preprocess"].transform(rows[schema.feature_names]).shape[1] == 4 + 2


def test_an_incremental_update_moves_only_the_learner_and_needs_no_custom_types() -> None:
    schema = training_schema()
    model = fitting.fit_full(fitting.default_pipeline(schema), training_rows(300, 1), schema)
    scaler = model.named_steps["preprocess"].named_transformers_["numbers"]
    mean_before, coef_before = scaler.mean_.copy(), model[-1].coef_.copy()

    same = fitting.fit_incremental(model, training_rows(300, 2), schema)

    assert same is model and isinstance(model, Pipeline)
    np.testing.assert_array_equal(scaler.mean_, mean_before)  # preprocessing frozen
    assert not np.allclose(model[-1].coef_, coef_before)
    assert sio.get_untrusted_types(data=ModelBundle("v2", model, schema).to_bytes()) == []


def test_incremental_refuses_what_partial_fit_cannot_do() -> None:
    schema = training_schema("multiclass")
    rows = training_rows(300, 1, "multiclass")
    two_classes = rows[rows["plan"] != "pro"]
    model = fitting.fit_full(fitting.default_pipeline(schema), two_classes, schema)
    with pytest.raises(fitting.IncrementalUnsupported, match=r"never seen the classes \['pro'\]"):
        fitting.fit_incremental(model, rows, schema)

    from sklearn.ensemble import RandomForestRegressor

    assert not fitting.supports_incremental(RandomForestRegressor())
    with pytest.raises(fitting.IncrementalUnsupported, match="RandomForestRegressor has no partial_fit"):
        fitting.fit_incremental(RandomForestRegressor(), rows, schema)


def test_held_out_rows_are_fixed_per_file_and_both_sides_are_kept() -> None:
    a = fitting.holdout_mask(1000, "prodml-data/incoming/a.csv", 0.2, 0)
    assert np.array_equal(a, fitting.holdout_mask(1000, "prodml-data/incoming/a.csv", 0.2, 0))
    assert not np.array_equal(a, fitting.holdout_mask(1000, "prodml-data/incoming/b.csv", 0.2, 0))
    assert not np.array_equal(a, fitting.holdout_mask(1000, "prodml-data/incoming/a.csv", 0.2, 1))
    assert 150 < a.sum() < 250
    for rows in (2, 3):
        small = fitting.holdout_mask(rows, "k", 0.01, 0)
        assert small.any() and not small.all()
    assert not fitting.holdout_mask(1, "k", 0.9, 0).any()  # a single row trains


def test_the_label_is_typed_like_the_schema_classes() -> None:
    rows = training_rows(10, 1, "multiclass")
    assert fitting.labels(rows, training_schema("multiclass")).dtype == object
    assert fitting.labels(training_rows(10, 1), training_schema()).dtype == np.int64
    assert (
        fitting.labels(training_rows(10, 1, "regression"), training_schema("regression")).dtype == np.float64
    )


def make_tree(schema: Schema) -> Pipeline:
    """An ESTIMATOR plug-in, as a user would write one: the default preprocessing and a tree."""
    from sklearn.tree import DecisionTreeClassifier

    return Pipeline(
        [("preprocess", fitting.default_preprocessor(schema)), ("model", DecisionTreeClassifier())]
    )


def test_estimator_plug_in_by_module_and_function() -> None:
    schema = training_schema()
    settings = load_settings({"ESTIMATOR": "test_fitting:make_tree"})
    estimator = fitting.new_estimator(schema, settings)
    assert type(estimator[-1]).__name__ == "DecisionTreeClassifier"
    assert type(fitting.new_estimator(schema, load_settings({}))[-1]).__name__ == "SGDClassifier"
    for spec, why in [
        ("no_colon", "must be 'module:function'"),
        ("no_such_module_xyz:f", "cannot be loaded"),
        ("test_fitting:nothing_here", "cannot be loaded"),
    ]:
        with pytest.raises(ConfigError, match=f"ESTIMATOR='{spec}' {why}"):
            fitting.load_estimator_factory(spec)
