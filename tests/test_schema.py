"""The dataset contract: parsing, errors that name the bad field, key cardinality."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.errors import SchemaError
from shared.schema import Schema

RAW: dict[str, Any] = {
    "features": [
        {"name": "country", "type": "category", "domain": ["us", "kr", "de"]},
        {"name": "hour", "type": "integer", "min": 0, "max": 23},
        {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
    ],
    "label": {"name": "converted", "type": "category", "classes": [1, 0]},
    "key": ["country", "hour"],
}


def test_round_trip_keeps_everything() -> None:
    schema = Schema.from_dict(RAW)
    again = Schema.from_json(schema.to_json())
    assert again == schema
    assert again.feature_names == ["country", "hour", "bid"]
    assert again.label.task == "binary"
    assert again.label.classes == (0, 1)  # sorted, so the positive class is the second
    assert again.label.positive_class == 1


def test_key_cardinality_is_the_product_of_domains() -> None:
    schema = Schema.from_dict(RAW)
    assert schema.key_cardinality == 3 * 24
    assert schema.feature("hour").values()[:3] == [0, 1, 2]


def test_tasks() -> None:
    multi = copy.deepcopy(RAW)
    multi["label"] = {"name": "y", "type": "category", "classes": ["a", "b", "c"]}
    assert Schema.from_dict(multi).label.task == "multiclass"
    reg = copy.deepcopy(RAW)
    reg["label"] = {"name": "y", "type": "float", "min": 0, "max": 1}
    assert Schema.from_dict(reg).label.task == "regression"


def _broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    target: Any = raw
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (_broken(("key",), ["bid"]), "'bid'"),
        (_broken(("key",), ["nope"]), "'nope'"),
        (_broken(("features", 0, "type"), "text"), "'text'"),
        (_broken(("features", 1, "min"), 30), "30"),
        (_broken(("features", 2, "max"), float("inf")), "inf"),
        (_broken(("label", "classes"), [1]), "[1]"),
        (_broken(("label", "classes"), [1, "a"]), "[1, 'a']"),
        (_broken(("features",), []), "'features'"),
        ([1, 2], "list"),
    ],
)
def test_bad_schema_names_the_bad_value(raw: Any, names: str) -> None:
    with pytest.raises(SchemaError) as info:
        Schema.from_dict(raw)
    assert names in str(info.value)


def test_not_json() -> None:
    with pytest.raises(SchemaError, match="not valid JSON"):
        Schema.from_json(b"{nope")
