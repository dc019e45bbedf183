"""Labels from scores, as every form of a model answers them (``shared.scoring``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.schema import Schema
from shared.scoring import predicted_labels, rows_to_columns

FEATURES = [
    {"name": "country", "type": "category", "domain": ["br", "us"]},
    {"name": "bid", "type": "float", "min": 0.0, "max": 10.0},
]


def schema_with(label: dict[str, Any]) -> Schema:
    """The two features above with ``label``."""
    return Schema.from_dict({"features": FEATURES, "label": label, "key": ["country"]})


def test_a_binary_label_is_the_positive_class_from_one_half_up() -> None:
    schema = schema_with({"name": "y", "type": "category", "classes": ["no", "yes"]})
    scores = np.array([0.0, 0.4999999, 0.5, 0.73, 1.0])
    assert predicted_labels(schema, scores) == ["no", "no", "yes", "yes", "yes"]


def test_binary_labels_keep_the_schema_class_type() -> None:
    schema = schema_with({"name": "y", "type": "category", "classes": [0, 1]})
    labels = predicted_labels(schema, np.array([0.2, 0.9]))
    assert labels == [0, 1] and all(type(label) is int for label in labels)


def test_a_multiclass_label_is_the_class_of_the_largest_probability() -> None:
    schema = schema_with({"name": "plan", "type": "category", "classes": ["basic", "plus", "pro"]})
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    assert predicted_labels(schema, scores) == ["basic", "pro", "plus"]


def test_a_multiclass_tie_takes_the_first_class_in_schema_order() -> None:
    schema = schema_with({"name": "plan", "type": "category", "classes": ["basic", "plus", "pro"]})
    scores = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0]])
    assert predicted_labels(schema, scores) == ["basic", "plus", "basic", "basic"]


def test_regression_has_no_label() -> None:
    schema = schema_with({"name": "spend", "type": "float"})
    assert predicted_labels(schema, np.array([1.5, -2.0, 0.0])) == [None, None, None]
    assert predicted_labels(schema, np.array([])) == []


def test_rows_become_columns_in_schema_order() -> None:
    schema = schema_with({"name": "spend", "type": "float"})
    rows = [{"bid": 1.0, "country": "us"}, {"country": "br", "bid": 2.5}]
    columns = rows_to_columns(schema, rows)
    assert list(columns) == ["country", "bid"]
    assert columns == {"country": ["us", "br"], "bid": [1.0, 2.5]}
