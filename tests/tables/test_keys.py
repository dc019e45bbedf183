"""Key enumeration in chunks, top-K from traffic counts, and scoring keys through the model path."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from shared.model import to_frame
from shared.schema import Feature, Schema
from shared.tables.codec import encode_keys, key_string
from shared.tables.keys import (
    code_chunks,
    default_value,
    full_chunks,
    instance_frame,
    non_key_defaults,
    score_keys,
    top_k,
    valid_key_counts,
)


def test_full_chunks_enumerate_every_key_once_in_code_order(table_bundle) -> None:
    schema: Schema = table_bundle.schema
    chunks = list(full_chunks(schema, chunk_rows=100))
    assert [len(c) for c in chunks] == [100, 100, 100, 60]  # 5 x 24 x 3 = 360 keys
    codes = np.concatenate([c.codes for c in chunks])
    np.testing.assert_array_equal(codes, np.arange(360))
    keys = {
        (str(c), int(h), str(d))
        for chunk in chunks
        for c, h, d in zip(
            chunk.columns["country"], chunk.columns["hour"], chunk.columns["device"], strict=True
        )
    }
    expected = {
        (c, h, d)
        for c in schema.feature("country").domain
        for h in range(24)
        for d in schema.feature("device").domain
    }
    assert keys == expected
    # Each chunk's columns encode back to its own codes.
    for chunk in chunks:
        np.testing.assert_array_equal(encode_keys(schema, chunk.columns), chunk.codes)


def test_code_chunks_decode_given_codes_in_order(table_bundle) -> None:
    schema = table_bundle.schema
    codes = np.array([359, 0, 17, 200, 5], dtype=np.int64)
    chunks = list(code_chunks(schema, codes, chunk_rows=2))
    assert [list(c.codes) for c in chunks] == [[359, 0], [17, 200], [5]]
    last = chunks[0].columns
    assert (last["country"][0], last["hour"][0], last["device"][0]) == ("jp", 23, "tablet")


def test_defaults_of_features_outside_the_key() -> None:
    assert default_value(Feature("bid", "float", min=0.0, max=10.0, default=1.5)) == 1.5
    assert default_value(Feature("seg", "category", domain=("new", "loyal"))) == "new"
    assert default_value(Feature("age", "integer", min=18, max=91)) == 54
    assert default_value(Feature("price", "float", min=2.0, max=3.0)) == 2.5
    assert default_value(Feature("n", "integer", min=5)) == 5
    assert default_value(Feature("x", "float")) == 0.0


def test_instance_frame_holds_keys_and_defaults_as_the_model_expects(table_bundle) -> None:
    schema = table_bundle.schema
    assert non_key_defaults(schema) == {"segment": "new", "bid": 1.5}
    chunk = next(full_chunks(schema, chunk_rows=4))
    frame = instance_frame(schema, chunk.columns)
    records = [
        {"country": c, "hour": int(h), "device": d, "segment": "new", "bid": 1.5}
        for c, h, d in zip(
            chunk.columns["country"], chunk.columns["hour"], chunk.columns["device"], strict=True
        )
    ]
    expected = to_frame(schema, records)
    assert list(frame.columns) == schema.feature_names
    assert frame.dtypes.to_dict() == expected.dtypes.to_dict()
    assert frame.reset_index(drop=True).equals(expected.reset_index(drop=True))


def test_scores_of_random_keys_equal_the_model_on_the_same_instances(table_bundle) -> None:
    schema = table_bundle.schema
    rng = np.random.default_rng(1)
    codes = rng.choice(schema.key_cardinality, size=50, replace=False).astype(np.int64)
    chunk = next(code_chunks(schema, codes, chunk_rows=50))
    scores = score_keys(table_bundle, schema, chunk.columns)
    for i in range(len(codes)):
        instance = {
            "country": chunk.columns["country"][i],
            "hour": int(chunk.columns["hour"][i]),
            "device": chunk.columns["device"][i],
            "segment": "new",
            "bid": 1.5,
        }
        single = table_bundle.scores(to_frame(schema, [instance]))
        assert scores[i] == single[0]


def test_top_k_holds_exactly_the_most_frequent_valid_keys(table_bundle) -> None:
    schema = table_bundle.schema
    counts = Counter(
        {
            key_string(["us", 7, "mobile"]): 50,
            key_string(["kr", 0, "tablet"]): 40,
            key_string(["de", 23, "desktop"]): 30,
            key_string(["br", 12, "mobile"]): 20,
            key_string(["jp", 3, "tablet"]): 10,
            key_string(["xx", 3, "tablet"]): 1000,  # not a country of the schema
            key_string(["us", 24, "mobile"]): 900,  # hour out of range
            key_string(["us", 7]): 800,  # too few values
            "not json": 700,
        }
    )
    top = top_k(schema, counts, k=3)
    expected = encode_keys(
        schema,
        {
            "country": ["us", "kr", "de"],
            "hour": [7, 0, 23],
            "device": ["mobile", "tablet", "desktop"],
        },
    )
    np.testing.assert_array_equal(top.codes, expected)
    assert list(top.counts) == [50, 40, 30]
    assert top.invalid_requests == 3400
    assert top.total_requests == 3550
    assert top.distinct_valid_keys == 5
    assert top.hit_rate == pytest.approx(120 / 3550)


def test_two_spellings_of_a_key_add_up() -> None:
    schema = Schema.from_dict(
        {
            "features": [{"name": "zip", "type": "category", "domain": ["7", "8"]}],
            "label": {"name": "y", "type": "float"},
            "key": ["zip"],
        }
    )
    codes, counts, invalid = valid_key_counts(schema, {'["7"]': 3, "[7]": 2, '["8"]': 4})
    assert list(codes) == [0, 1] and list(counts) == [5, 4] and invalid == 0
    top = top_k(schema, {'["7"]': 3, "[7]": 2, '["8"]': 4}, k=1)
    assert list(top.codes) == [0]


def test_ties_are_broken_by_code_so_top_k_repeats(table_bundle) -> None:
    schema = table_bundle.schema
    counts = {key_string(["jp", 1, "mobile"]): 5, key_string(["br", 1, "mobile"]): 5}
    top = top_k(schema, counts, k=1)
    assert list(top.codes) == list(
        encode_keys(schema, {"country": ["br"], "hour": [1], "device": ["mobile"]})
    )
