"""Every predict body fault is a BadRequest with its code, field and index; good bodies normalize."""

from __future__ import annotations

import json

import pytest
from conftest import serving_schema

from shared.errors import BadRequest
from shared.serving.request_checks import InstanceChecker

CHECKER = InstanceChecker(serving_schema(), max_instances=3)
GOOD = {"country": "us", "hour": 7, "bid": 2.5}


def parse(body, require="all"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CHECKER.parse(raw, require)


def test_good_instances_are_normalized_and_defaults_filled():
    out = parse({"instances": [GOOD, {"country": "br", "hour": 3.0}]})
    assert out == [GOOD, {"country": "br", "hour": 3, "bid": 1.5}]
    assert type(out[1]["hour"]) is int and type(out[1]["bid"]) is float


def test_static_needs_only_the_key_but_still_checks_the_rest():
    assert parse({"instances": [{"country": "kr", "hour": 0}]}, "key") == [{"country": "kr", "hour": 0}]
    with pytest.raises(BadRequest) as caught:
        parse({"instances": [{"country": "kr", "hour": 0, "bid": 99}]}, "key")
    assert caught.value.code == "out_of_range"


@pytest.mark.parametrize(
    ("body", "code", "field", "index"),
    [
        (b"{not json", "invalid_json", None, None),
        (b"\xff\xfe", "invalid_json", None, None),
        (b'{"instances": [{"country": "us", "hour": 1, "bid": NaN}]}', "invalid_json", None, None),
        (b'{"instances": [{"country": "us", "hour": 1, "bid": Infinity}]}', "invalid_json", None, None),
        (b'{"instances": [{"country": "us", "hour": 1, "bid": 1e999}]}', "invalid_json", None, None),
        (b"[" * 100000 + b"]" * 100000, "invalid_json", None, None),
        ([GOOD], "invalid_body", None, None),
        ({"instances": [GOOD], "parameters": {}}, "invalid_body", "parameters", None),
        ({}, "missing_instances", "instances", None),
        ({"instances": {"a": 1}}, "missing_instances", "instances", None),
        ({"instances": []}, "empty_instances", "instances", None),
        ({"instances": [GOOD] * 4}, "too_many_instances", "instances", None),
        ({"instances": [GOOD, 5]}, "instance_not_object", None, 1),
        ({"instances": [{**GOOD, "age": 3}]}, "unknown_feature", "age", 0),
        ({"instances": [GOOD, {"country": "us", "bid": 1.0}]}, "missing_feature", "hour", 1),
        ({"instances": [{**GOOD, "hour": True}]}, "wrong_type", "hour", 0),
        ({"instances": [{**GOOD, "hour": 2.5}]}, "wrong_type", "hour", 0),
        ({"instances": [{**GOOD, "hour": "7"}]}, "wrong_type", "hour", 0),
        ({"instances": [{**GOOD, "bid": None}]}, "wrong_type", "bid", 0),
        ({"instances": [{**GOOD, "bid": False}]}, "wrong_type", "bid", 0),
        ({"instances": [{**GOOD, "country": ["us"]}]}, "wrong_type", "country", 0),
        ({"instances": [{**GOOD, "country": 1.0}]}, "wrong_type", "country", 0),
        ({"instances": [{**GOOD, "hour": 24}]}, "out_of_range", "hour", 0),
        ({"instances": [{**GOOD, "hour": 10**400}]}, "out_of_range", "hour", 0),
        ({"instances": [{**GOOD, "bid": -0.1}]}, "out_of_range", "bid", 0),
        ({"instances": [{**GOOD, "country": "US"}]}, "unknown_category", "country", 0),
    ],
)
def test_each_fault_has_its_code_and_location(body, code, field, index):
    with pytest.raises(BadRequest) as caught:
        parse(body)
    error = caught.value.to_dict()["error"]
    assert (error["code"], error["field"], error["index"]) == (code, field, index)
    assert caught.value.http_status == 400


def test_messages_name_the_bad_value():
    with pytest.raises(BadRequest, match=r"feature 'country' has no category \"fr\""):
        parse({"instances": [{**GOOD, "country": "fr"}]})
    with pytest.raises(BadRequest, match=r"must lie in \[0, 23\], got 40"):
        parse({"instances": [{**GOOD, "hour": 40}]})


def test_ids_are_returned_as_sent_and_absent_ids_are_none():
    checked = CHECKER.check(
        json.dumps({"instances": [GOOD, GOOD], "ids": ["imp-1", "é" * 128]}).encode(), "all"
    )
    assert checked.ids == ["imp-1", "é" * 128] and checked.instances == [GOOD, GOOD]
    assert CHECKER.check(json.dumps({"instances": [GOOD]}).encode(), "all").ids is None


@pytest.mark.parametrize(
    ("ids", "index", "message"),
    [
        ("imp-1", None, "'ids' must be a list of strings, got string"),
        (["a"], None, "'ids' holds 1 ids for 2 instances"),
        (["a", "b", "c"], None, "'ids' holds 3 ids for 2 instances"),
        (["a", 7], 1, "id 1 must be a string, got integer 7"),
        (["a", None], 1, "id 1 must be a string, got null"),
        (["", "b"], 0, "id 0 must be 1 to 128 characters long, got 0"),
        (["a", "x" * 129], 1, "id 1 must be 1 to 128 characters long, got 129"),
        (["a\nb", "c"], 0, "id 0 holds U\\+000A, a control character"),
        (["a", "b\x85"], 1, "id 1 holds U\\+0085, a control character"),
        (["a", "\ud800"], 1, "id 1 holds U\\+D800, a control character or lone surrogate"),
        (["same", "same"], 1, 'id 1 repeats id 0 \\("same"\\); ids must be unique'),
    ],
)
def test_each_bad_ids_is_invalid_ids_naming_the_index(ids, index, message):
    raw = json.dumps({"instances": [GOOD, GOOD], "ids": ids}).encode()
    with pytest.raises(BadRequest, match=message) as caught:
        CHECKER.check(raw, "all")
    error = caught.value.to_dict()["error"]
    assert (error["code"], error["field"], error["index"]) == ("invalid_ids", "ids", index)
    assert caught.value.http_status == 400


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400])
def test_an_integer_beyond_int64_is_out_of_range_even_without_a_max(value):
    from shared.schema import Schema

    schema = Schema.from_dict(
        {
            "features": [{"name": "slot", "type": "integer"}],
            "label": {"name": "y", "type": "category", "classes": [0, 1]},
            "key": [],
        }
    )
    checker = InstanceChecker(schema, max_instances=3)
    assert checker.parse(json.dumps({"instances": [{"slot": 2**63 - 1}]}).encode(), "all") == [
        {"slot": 2**63 - 1}
    ]
    with pytest.raises(BadRequest) as caught:
        checker.parse(json.dumps({"instances": [{"slot": value}]}).encode(), "all")
    assert caught.value.code == "out_of_range" and caught.value.field == "slot"
