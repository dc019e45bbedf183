"""Compiling a version to ONNX: verified only where the compiled form equals scikit-learn's.

Every test compares the two forms of one fitted model (``ModelBundle`` and ``CompiledModel``) on
rows the check never saw, with the tolerance the card records; nothing is compared to a constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
    VotingClassifier,
)
from sklearn.pipeline import Pipeline

import shared.compiled.compile as compile_module
from shared.compiled.compile import TOLERANCE, Compilation, compile_version, convert
from shared.compiled.form import CompiledForm
from shared.compiled.runtime import CompiledModel
from shared.contracts import CompileStatus
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.scoring import Columns
from shared.tables.codec import decode_codes
from shared.tables.keys import key_instance_columns
from shared.training.fitting import default_pipeline, default_preprocessor

BLOB = "models/versions/v1/model.onnx"
MAX_BYTES = 64 * 1024 * 1024
CHECK_SEED, FRESH_SEED = 1, 2  # the check rows and the rows the tests compare on are different draws

FEATURES = [
    {"name": "country", "type": "category", "domain": ["br", "de", "kr", "us"]},
    {"name": "store", "type": "category", "domain": ["3", "7", "11"]},  # digit categories (ints = strings)
    {"name": "hour", "type": "integer", "min": 0, "max": 23},
    {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
]
LABELS = {
    "binary": {"name": "converted", "type": "category", "classes": [0, 1]},
    "multiclass": {"name": "plan", "type": "category", "classes": ["basic", "plus", "pro"]},
    "four": {"name": "plan", "type": "category", "classes": ["basic", "plus", "pro", "max"]},
    "regression": {"name": "spend", "type": "float"},
}


def make_schema(label: str) -> Schema:
    """Country x store x hour (288 keys) and a float with a default, with the given label."""
    return Schema.from_dict(
        {"features": FEATURES, "label": LABELS[label], "key": ["country", "store", "hour"]}
    )


def make_rows(schema: Schema, n: int, seed: int) -> pd.DataFrame:
    """``n`` random rows (``to_frame`` dtypes) with a label that depends on every feature."""
    rng = np.random.default_rng(seed)
    frame = to_frame(
        schema,
        [
            {
                "country": str(rng.choice(schema.feature("country").domain)),
                "store": int(rng.choice([3, 7, 11])),
                "hour": int(rng.integers(0, 24)),
                "bid": float(rng.uniform(0, 10)),
            }
            for _ in range(n)
        ],
    )
    signal = (frame["hour"].to_numpy() - 11.5) / 4 + (frame["country"] == "us").to_numpy() * 1.5
    signal = signal - (frame["store"] == "7").to_numpy() + frame["bid"].to_numpy() / 5 - 1
    signal = signal + rng.normal(0, 0.5, n)
    label = schema.label
    if label.task == "regression":
        y: Any = signal * 10 + 100
    elif label.task == "binary":
        y = np.asarray(label.classes)[(signal > 0).astype(int)]
    else:
        edges = np.quantile(signal, np.linspace(0, 1, len(label.classes) + 1)[1:-1])
        y = np.asarray(label.classes, dtype=object)[np.digitize(signal, edges)]
    return frame.assign(**{label.name: y})


def fit(schema: Schema, estimator: Any, rows: pd.DataFrame) -> ModelBundle:
    """``estimator`` fitted on ``rows`` as version v1."""
    return ModelBundle("v1", estimator.fit(rows[schema.feature_names], rows[schema.label.name]), schema)


def plug_in(schema: Schema, model: Any) -> Pipeline:
    """A plug-in estimator as ``ESTIMATOR`` would build it: the default preprocessing, then ``model``."""
    return Pipeline([("preprocess", default_preprocessor(schema)), ("model", model)])


def columns_of(schema: Schema, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The feature columns of ``rows``, as predict and the table build pass them."""
    return {name: rows[name].to_numpy() for name in schema.feature_names}


def key_columns(schema: Schema) -> Columns:
    """Every key of the schema with the defaults of the other features (the rows of a table)."""
    codes = np.arange(schema.key_cardinality, dtype=np.int64)
    return key_instance_columns(schema, decode_codes(schema, codes))


def compiled_of(compilation: Compilation) -> CompiledModel:
    """The served compiled form, loaded as predict loads it."""
    assert compilation.onnx is not None, compilation.form.reason
    return CompiledModel.from_bytes(compilation.onnx, MAX_BYTES, expected_version="v1")


def excess(task: str, got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """How far each score is from scikit-learn's, in the task's tolerance measure."""
    _, kind = TOLERANCE[task]
    scale = 1.0 if kind == "absolute" else np.maximum(1.0, np.abs(expected))
    return np.abs(got - expected) / scale


def assert_equal_within_tolerance(
    form: CompiledForm, task: str, got: np.ndarray, expected: np.ndarray
) -> None:
    """The two forms agree within the tolerance the record names, score by score."""
    bound, kind = TOLERANCE[task]
    assert form.tolerance == f"{bound:g} {kind}"
    assert got.shape == expected.shape
    assert np.max(excess(task, got, expected)) <= bound


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def default_compiled(request: pytest.FixtureRequest) -> tuple[ModelBundle, pd.DataFrame, Compilation]:
    """The default pipeline of each task, fitted, and its compilation checked on 100 held-out rows."""
    schema = make_schema(request.param)
    bundle = fit(schema, default_pipeline(schema), make_rows(schema, 400, seed=0))
    check_rows = make_rows(schema, 100, CHECK_SEED)
    return bundle, check_rows, compile_version(bundle, check_rows, BLOB)


# --- the default pipeline, each task --------------------------------------------------------------


def test_the_default_pipeline_is_verified_and_scores_fresh_rows_as_scikit_learn(
    default_compiled: tuple[ModelBundle, pd.DataFrame, Compilation],
) -> None:
    bundle, _, compilation = default_compiled
    form = compilation.form
    assert form.status == CompileStatus.VERIFIED, form.reason
    assert form.served and form.blob == BLOB and form.batch_invariant is True
    assert form.precision == "float32"
    fresh = columns_of(bundle.schema, make_rows(bundle.schema, 300, FRESH_SEED))
    compiled = compiled_of(compilation)
    assert_equal_within_tolerance(
        form, bundle.task, compiled.score_columns(fresh), bundle.score_columns(fresh)
    )


def test_the_recorded_difference_is_the_largest_one_on_the_check_rows(
    default_compiled: tuple[ModelBundle, pd.DataFrame, Compilation],
) -> None:
    bundle, check_rows, compilation = default_compiled
    schema = bundle.schema
    keys = key_columns(schema)
    checked = {
        name: np.concatenate(
            [np.asarray(check_rows[name], dtype=object), np.asarray(keys[name], dtype=object)]
        )
        for name in schema.feature_names
    }
    difference = np.abs(compiled_of(compilation).score_columns(checked) - bundle.score_columns(checked))
    assert compilation.form.rows_checked == len(check_rows) + schema.key_cardinality
    assert compilation.form.max_abs_difference == pytest.approx(float(difference.max()), rel=1e-6)
    assert (
        0
        < compilation.form.max_abs_difference
        <= TOLERANCE[bundle.task][0] * max(1.0, float(np.abs(bundle.score_columns(checked)).max()))
    )


def test_a_form_that_misses_the_tolerance_is_not_served(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injected: a tolerance of 0 that float32 arithmetic cannot meet.
    monkeypatch.setitem(compile_module.TOLERANCE, "binary", (0.0, "absolute"))
    schema = make_schema("binary")
    bundle = fit(schema, default_pipeline(schema), make_rows(schema, 400, seed=0))
    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    form = compilation.form
    assert form.status == CompileStatus.DIFFERS and not form.served
    assert compilation.onnx is None and form.blob is None
    assert form.max_abs_difference is not None and form.max_abs_difference > 0
    assert "differ from scikit-learn by more than 0 absolute" in form.reason


# --- plug-in estimators -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=20, random_state=0),
        GradientBoostingClassifier(n_estimators=20, random_state=0),
        # Two forests reading one tensor (the double graph casts it once for both).
        VotingClassifier(
            [
                (f"forest{seed}", RandomForestClassifier(n_estimators=10, random_state=seed))
                for seed in (0, 1)
            ],
            voting="soft",
            flatten_transform=False,  # skl2onnx 1.20 converts only this form of soft voting
        ),
    ],
    ids=["random_forest", "gradient_boosting", "voting_forests"],
)
def test_plug_in_classifiers_are_verified_and_equal(model: Any) -> None:
    schema = make_schema("binary")
    bundle = fit(schema, plug_in(schema, model), make_rows(schema, 400, seed=0))
    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    form = compilation.form
    assert form.status == CompileStatus.VERIFIED, form.reason
    assert form.served and form.batch_invariant is True
    fresh = columns_of(schema, make_rows(schema, 300, FRESH_SEED))
    got = compiled_of(compilation).score_columns(fresh)
    assert_equal_within_tolerance(form, "binary", got, bundle.score_columns(fresh))


def test_a_deep_forest_regressor_needs_and_gets_the_double_precision_graph() -> None:
    schema = make_schema("regression")
    bundle = fit(
        schema,
        plug_in(schema, RandomForestRegressor(n_estimators=20, random_state=0)),
        make_rows(schema, 400, 0),
    )
    fresh = columns_of(schema, make_rows(schema, 300, FRESH_SEED))
    expected = bundle.score_columns(fresh)
    # The float32 graph alone: the scaler's float32 arithmetic moves values across tree thresholds.
    float32_graph, _ = convert(bundle, np.float32)
    single = CompiledModel.from_bytes(float32_graph, MAX_BYTES).score_columns(fresh)
    assert np.max(excess("regression", single, expected)) > TOLERANCE["regression"][0]

    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    form = compilation.form
    assert form.status == CompileStatus.VERIFIED, form.reason
    assert form.precision == "float64" and form.served
    assert_equal_within_tolerance(form, "regression", compiled_of(compilation).score_columns(fresh), expected)


def test_hist_gradient_boosting_is_unconvertible_and_served_by_scikit_learn() -> None:
    schema = make_schema("binary")
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0)
    bundle = fit(schema, plug_in(schema, model), make_rows(schema, 400, seed=0))
    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    form = compilation.form
    assert form.status == CompileStatus.UNCONVERTIBLE and not form.served
    assert compilation.onnx is None and form.blob is None
    assert form.reason.startswith("skl2onnx cannot convert it: ")
    assert len(form.reason) < 400  # skl2onnx's message dumps whole arrays: the card keeps one line
    assert "skl2onnx" in form.libraries and "onnxruntime" in form.libraries


# --- classes, batches, category values ------------------------------------------------------------


@pytest.mark.parametrize("label, missing", [("multiclass", "plus"), ("four", "pro")])
def test_a_class_never_seen_in_training_scores_zero_in_both_forms(label: str, missing: str) -> None:
    schema = make_schema(label)
    rows = make_rows(schema, 600, seed=0)
    rows = rows[rows[schema.label.name] != missing]
    bundle = fit(schema, default_pipeline(schema), rows)
    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    assert compilation.form.status == CompileStatus.VERIFIED, compilation.form.reason
    fresh = columns_of(schema, make_rows(schema, 300, FRESH_SEED))
    got, expected = compiled_of(compilation).score_columns(fresh), bundle.score_columns(fresh)
    column = schema.label.classes.index(missing)
    assert np.all(got[:, column] == 0) and np.all(expected[:, column] == 0)
    assert_equal_within_tolerance(compilation.form, "multiclass", got, expected)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-6)  # the seen classes still share all of it


@pytest.mark.parametrize("label", ["binary", "regression"])
def test_a_row_alone_scores_the_same_bits_as_in_a_batch_of_500(label: str) -> None:
    schema = make_schema(label)
    bundle = fit(schema, default_pipeline(schema), make_rows(schema, 400, seed=0))
    # The float32 graph itself, the one the default pipeline is served by: were a lone row fed to
    # ONNX Runtime as is, its linear kernel's one-row path would round differently (a regression
    # then fails the check below and the compile falls back to float64).
    compiled = CompiledModel.from_bytes(convert(bundle, np.float32)[0], MAX_BYTES)
    batch = columns_of(schema, make_rows(schema, 500, FRESH_SEED))
    together = compiled.score_columns(batch)
    alone = np.concatenate(
        [
            compiled.score_columns({name: values[i : i + 1] for name, values in batch.items()})
            for i in range(500)
        ]
    )
    assert np.array_equal(alone, together)


def test_category_values_given_as_ints_or_strings_score_alike() -> None:
    schema = make_schema("binary")
    bundle = fit(schema, default_pipeline(schema), make_rows(schema, 400, seed=0))
    compilation = compile_version(bundle, make_rows(schema, 100, CHECK_SEED), BLOB)
    compiled = compiled_of(compilation)
    rows = {"country": ["us", "br", "de"], "hour": [9, 14, 20], "bid": [1.0, 5.5, 9.0]}
    as_ints = {**rows, "store": [7, 3, 11]}
    as_strings = {**rows, "store": ["7", "3", "11"]}
    scores = compiled.score_columns(as_strings)
    assert np.array_equal(compiled.score_columns(as_ints), scores)
    assert np.array_equal(bundle.score_columns(as_ints), bundle.score_columns(as_strings))
    assert_equal_within_tolerance(compilation.form, "binary", scores, bundle.score_columns(as_strings))
    # The store matters to the model, so a value lost in the conversion would show.
    assert not np.array_equal(compiled.score_columns({**rows, "store": ["3", "3", "3"]}), scores)
