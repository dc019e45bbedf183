"""Label leakage: a feature that alone predicts the label is named; ordinary data is not flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import training_rows, training_schema

from shared.config import load_settings
from shared.contracts import LEAKAGE_RULE
from shared.data.validation import validate_frame
from shared.feedback.leakage import ABS_SPEARMAN, ROC_AUC, check_leakage, leakage_failure
from shared.schema import Schema

THRESHOLD = 0.99


def _validated(rows: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    return validate_frame(rows, "incoming/x.csv", schema, load_settings({})).frame


def _leaky_rows(task: str, rows: int = 2000, seed: int = 3) -> pd.DataFrame:
    """``training_rows`` whose ``bid`` is a disguised copy of the label (within the schema's range)."""
    frame = training_rows(rows, seed, task)
    rng = np.random.default_rng(seed)
    label = frame[training_schema(task).label.name]
    if task == "binary":
        frame["bid"] = np.round(label * 5.0 + rng.uniform(0.0, 4.9, rows), 3)
    elif task == "multiclass":
        frame["bid"] = label.map({"basic": 1.0, "plus": 5.0, "pro": 9.0}) + rng.uniform(-0.5, 0.5, rows)
    else:
        frame["bid"] = ((label - label.min()) / (label.max() - label.min()) * 10.0).clip(0.0, 10.0)
    return frame


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_the_default_pipeline_data_has_no_leaking_feature(task: str) -> None:
    schema = training_schema(task)
    check = check_leakage(_validated(training_rows(3000, 7, task), schema), schema, THRESHOLD, 100_000, 0)
    assert check.leaking == ()
    assert set(check.scores) == {"country", "hour", "bid"}
    assert check.measure == (ABS_SPEARMAN if task == "regression" else ROC_AUC)
    assert max(check.scores.values()) < 0.95  # bid is informative, far from a copy of the label


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_number_that_copies_the_label_is_named_alone(task: str) -> None:
    schema = training_schema(task)
    check = check_leakage(_validated(_leaky_rows(task), schema), schema, THRESHOLD, 100_000, 0)
    assert check.leaking == ("bid",)
    assert check.scores["bid"] >= THRESHOLD


def test_a_reversed_copy_leaks_too() -> None:
    schema = training_schema("binary")
    rows = _leaky_rows("binary")
    rows["bid"] = 10.0 - rows["bid"]
    check = check_leakage(_validated(rows, schema), schema, THRESHOLD, 100_000, 0)
    assert check.leaking == ("bid",)


def test_a_category_that_decides_the_class_leaks_in_multiclass() -> None:
    schema = training_schema("multiclass")
    rows = training_rows(2000, 4, "multiclass")
    rows["country"] = rows["plan"].map({"basic": "br", "plus": "de", "pro": "us"})
    check = check_leakage(_validated(rows, schema), schema, THRESHOLD, 100_000, 0)
    assert check.leaking == ("country",)


def test_a_category_whose_values_each_occur_once_is_chance_not_a_leak() -> None:
    # In-sample per-value label rates would score a unique value per row as a perfect predictor;
    # cross-fitted rates see no value twice and score it as chance.
    schema = Schema.from_dict(
        {
            "features": [{"name": "ref", "type": "category", "domain": [f"r{i}" for i in range(1000)]}],
            "label": {"name": "y", "type": "category", "classes": [0, 1]},
        }
    )
    rows = pd.DataFrame({"ref": [f"r{i}" for i in range(1000)], "y": np.arange(1000) % 2})
    check = check_leakage(_validated(rows, schema), schema, THRESHOLD, 100_000, 0)
    assert check.leaking == ()
    assert check.scores["ref"] == pytest.approx(0.5)


def test_a_big_file_is_measured_on_a_bounded_sample() -> None:
    schema = training_schema("binary")
    frame = _validated(_leaky_rows("binary", rows=5000), schema)
    check = check_leakage(frame, schema, THRESHOLD, 1000, 0)
    assert (check.rows, check.sampled) == (1000, True)
    assert check.leaking == ("bid",)


def test_the_quarantine_reason_names_the_feature_and_its_auc() -> None:
    schema = training_schema("binary")
    check = check_leakage(_validated(_leaky_rows("binary"), schema), schema, THRESHOLD, 100_000, 0)
    failure = leakage_failure(check)
    assert failure.rule == LEAKAGE_RULE
    assert "'bid' (ROC AUC 1.0000)" in failure.message
    assert failure.details["columns"] == ["bid"]
    assert failure.details["leakage"]["leaking"] == ["bid"]
