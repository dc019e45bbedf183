"""The table format: key codes, the npz blob, the pointer with compare-and-swap."""

from __future__ import annotations

import io
import json
import re
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import bad_model_files
import numpy as np
import pytest

from shared.contracts import TABLE_POINTER
from shared.errors import NotFound, PreconditionFailed, SchemaError, TableError
from shared.schema import Schema
from shared.storage.local import LocalBucket
from shared.tables.codec import decode_codes, encode_keys, key_string, parse_key_string
from shared.tables.format import (
    Table,
    build_blob,
    check_table_name,
    load_current_table,
    new_build_id,
    prune_builds,
    read_pointer,
    read_table,
    read_valid_pointer,
    switch_pointer,
    table_blob,
    write_table,
)

SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "country", "type": "category", "domain": ["br", "de", "kr", "us"]},
            {"name": "hour", "type": "integer", "min": 0, "max": 23},
            {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
        ],
        "label": {"name": "converted", "type": "category", "classes": [0, 1]},
        "key": ["country", "hour"],
    }
)


@pytest.fixture
def artifacts(tmp_path):
    return LocalBucket(tmp_path, "artifacts")


def test_codes_round_trip_every_key_and_sort_lexicographically():
    codes = np.arange(4 * 24)
    columns = decode_codes(SCHEMA, codes)
    assert list(columns["country"][:2]) == ["br", "br"] and list(columns["hour"][:2]) == [0, 1]
    assert list(columns["country"][-1:]) == ["us"] and columns["hour"][-1] == 23
    np.testing.assert_array_equal(encode_keys(SCHEMA, columns), codes)


def test_values_outside_the_domain_encode_to_minus_one():
    codes = encode_keys(
        SCHEMA,
        {"country": ["us", "fr", "de", "kr", "br"], "hour": [7, 7, 24, 2.5, "3"]},
    )
    assert codes[0] == 3 * 24 + 7
    assert list(codes[1:4]) == [-1, -1, -1]
    assert codes[4] == 3  # categories and integers compare by value, not by JSON type


def test_a_few_rows_encode_as_many_rows_do():
    columns = {"country": ["us", "fr", "de", "kr", "br", "us"], "hour": [7, 7, 24, 2.5, "3", np.int64(5)]}
    small = encode_keys(SCHEMA, columns)
    large = encode_keys(SCHEMA, {name: values * 10 for name, values in columns.items()})[: len(small)]
    np.testing.assert_array_equal(small, large)


def test_categories_compare_as_strings():
    schema = Schema.from_dict(
        {
            "features": [{"name": "store", "type": "category", "domain": ["7", "12"]}],
            "label": {"name": "y", "type": "float"},
            "key": ["store"],
        }
    )
    assert list(encode_keys(schema, {"store": [7, "12", 12.5]})) == [0, 1, -1]


def test_a_key_space_past_int64_is_refused():
    schema = Schema.from_dict(
        {
            "features": [{"name": f"f{i}", "type": "integer", "min": 0, "max": 10**6} for i in range(4)],
            "label": {"name": "y", "type": "float"},
            "key": [f"f{i}" for i in range(4)],
        }
    )
    with pytest.raises(SchemaError, match="more than a table can index"):
        encode_keys(schema, {f"f{i}": [1] for i in range(4)})


def test_key_strings_are_unambiguous_for_any_category_text():
    odd = ['a","b', "ü", "", "1"]
    strings = {key_string([v, 1]) for v in odd}
    assert len(strings) == len(odd)
    for v in odd:
        assert parse_key_string(key_string([v, 1])) == [v, 1]
    assert key_string(["us", np.int64(7)]) == '["us",7]'


def _table(codes, scores):
    return Table("t1", "m1", 5, ("country", "hour"), np.asarray(codes, np.int64), np.asarray(scores, float))


def test_lookup_finds_present_codes_and_reports_absent_ones():
    table = _table([3, 10, 42], [0.1, 0.2, 0.3])
    found, rows = table.lookup([10, 11, 42, -1, 99, 0])
    assert list(found) == [True, False, True, False, False, False]
    assert list(rows[found]) == [0.2, 0.3]
    assert table.lookup_one(42) == 0.3
    assert table.lookup_one(41) is None and table.lookup_one(-1) is None and table.lookup_one(100) is None
    assert len(table) == 3


def test_dense_tables_answer_by_position_and_multiclass_rows_come_whole():
    scores = np.arange(12, dtype=float).reshape(4, 3)
    table = _table([0, 1, 2, 3], scores)
    np.testing.assert_array_equal(table.lookup_one(2), [6.0, 7.0, 8.0])
    assert table.lookup_one(4) is None
    empty = _table([], np.zeros((0,)))
    assert empty.lookup_one(0) is None
    found, _ = empty.lookup([0, 1])
    assert not found.any()


BLOB = "tables/v1/full-20260101T000000000000Z-00000000.npz"


def test_write_then_read_gives_the_same_table(artifacts):
    meta = {"model_version": "m1", "model_generation": 17, "key": ["country", "hour"], "strategy": "full"}
    generation = write_table(artifacts, BLOB, np.array([1, 5, 9]), np.array([0.5, 0.25, 1.0]), meta)
    assert generation == artifacts.stat(BLOB).generation
    table = read_table(artifacts, BLOB)
    assert (table.version, table.model_version, table.model_generation) == ("v1", "m1", 17)
    assert table.blob == BLOB and table.meta["blob"] == BLOB
    assert table.key == ("country", "hour") and table.meta["strategy"] == "full"
    assert table.lookup_one(5) == 0.25 and table.lookup_one(6) is None


def test_writing_a_table_holds_no_serialized_copy_of_it_in_memory(artifacts):
    """The npz streams to a temporary file and is uploaded from there: the Python heap never holds
    the serialized table (before: a BytesIO buffer and its getvalue() copy, 2 x 16 bytes a row)."""
    n = 1_000_000
    codes, scores = np.arange(n, dtype=np.int64), np.linspace(0.0, 1.0, n)
    meta = {"model_version": "m1", "model_generation": 1, "key": ["country", "hour"]}
    tracemalloc.start()
    try:
        write_table(artifacts, BLOB, codes, scores, meta)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (codes.nbytes + scores.nbytes) // 2, f"peak {peak} bytes while writing"
    table = read_table(artifacts, BLOB)
    assert len(table) == n and table.lookup_one(n - 1) == 1.0
    assert not [p for p in Path(tempfile.gettempdir()).glob("prodml-table-*")]  # the temp file is gone
    write_table(artifacts, BLOB, np.zeros(0, np.int64), np.zeros((0, 3)), meta)  # empty, multiclass
    assert read_table(artifacts, BLOB).scores.shape == (0, 3)


@pytest.mark.parametrize(
    ("codes", "scores", "message"),
    [
        ([3, 1], [0.1, 0.2], "sorted and unique"),
        ([1, 1], [0.1, 0.2], "sorted and unique"),
        ([1, 2], [0.1], "shape"),
        ([1, 2], [0.1, float("nan")], "NaN"),
    ],
)
def test_bad_arrays_are_refused_before_anything_is_written(artifacts, codes, scores, message):
    meta = {"model_version": "m1", "model_generation": 1, "key": ["country", "hour"]}
    with pytest.raises(TableError, match=message):
        write_table(artifacts, BLOB, np.array(codes), np.array(scores), meta)
    assert not artifacts.exists(BLOB)


def test_version_names_cannot_escape_the_tables_folder():
    for bad in ["../x", "a/b", "", ".."]:
        with pytest.raises(TableError):
            table_blob(bad)
        with pytest.raises(TableError):
            build_blob(bad, "full", new_build_id())
    for bad in ["tables/../x.npz", "tables/v1/../../x.npz", "models/v1/full.npz", "tables/v1/a b.npz", "v1"]:
        with pytest.raises(TableError, match="table (object|version)"):
            check_table_name(bad)


def test_build_ids_are_unique_and_sort_by_time():
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 25, 13, 0, 0, tzinfo=UTC)
    ids = [new_build_id(t0 + timedelta(microseconds=i)) for i in range(3)] + [new_build_id(t0)]
    assert ids[:3] == sorted(ids[:3]) and len(set(ids)) == 4  # the same instant twice: still two ids
    assert build_blob("v1", "top_k", ids[0]).startswith("tables/v1/top_k-20261125T130000000000Z-")


def test_pruning_keeps_the_newest_builds_the_pointers_object_and_old_layout_tables(artifacts):
    meta = {"model_version": "v1", "model_generation": 1, "key": ["country", "hour"]}
    names = [build_blob("v1", "full", f"2026010{d}T000000000000Z-00000000") for d in range(1, 6)]
    for name in [*names, table_blob("v1")]:
        write_table(artifacts, name, np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3]), meta)
    switch_pointer(artifacts, {**_pointer("v1"), "blob": names[0]}, if_generation_match=0)  # the oldest

    assert prune_builds(artifacts, "v1", keep=2) == [names[2], names[1]]
    left = {i.name for i in artifacts.list("tables/v1/")}
    assert left == {names[0], names[3], names[4], table_blob("v1")}
    assert prune_builds(artifacts, "v1", keep=2) == []


def test_a_corrupt_blob_reads_as_a_table_error(artifacts):
    artifacts.write(BLOB, b"not a zip file")
    with pytest.raises(TableError, match="not a table npz"):
        read_table(artifacts, BLOB)


def test_a_blob_that_would_decompress_past_its_limit_is_refused_unread(artifacts):
    meta = {"model_version": "m1", "model_generation": 1, "key": ["country", "hour"]}
    write_table(artifacts, BLOB, np.arange(1000, dtype=np.int64), np.zeros(1000), meta)
    size = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(artifacts.read(BLOB))).infolist())
    assert len(read_table(artifacts, BLOB, max_bytes=size)) == 1000
    with pytest.raises(TableError, match=f"declare {size} bytes uncompressed, more than MAX_TABLE_BYTES"):
        read_table(artifacts, BLOB, max_bytes=size - 1)
    artifacts.write(BLOB, bad_model_files.lying_bomb(artifacts.read(BLOB), "codes.npy", 8 << 20, 128))
    with pytest.raises(TableError, match="'codes.npy' decompresses to more than the 128 bytes it declares"):
        read_table(artifacts, BLOB)


def _blob(version):
    return f"tables/{version}/full-20260101T000000000000Z-00000000.npz"


def _pointer(version, model_version="m1"):
    return {
        "blob": _blob(version),
        "version": version,
        "model_version": model_version,
        "model_generation": 1,
        "rows": 3,
        "strategy": "full",
        "built_at": "2026-01-01T00:00:00+00:00",
        "key": ["country", "hour"],
    }


def test_pointer_switches_only_from_the_generation_read(artifacts):
    assert read_pointer(artifacts) == (None, 0)
    assert load_current_table(artifacts) is None
    meta = {"model_version": "m1", "model_generation": 1, "key": ["country", "hour"]}
    write_table(artifacts, _blob("v1"), np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3]), meta)
    first = switch_pointer(artifacts, _pointer("v1"), if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        switch_pointer(artifacts, _pointer("v2"), if_generation_match=0)
    pointer, generation = read_pointer(artifacts)
    assert pointer is not None and pointer["version"] == "v1" and generation == first
    assert load_current_table(artifacts).lookup_one(2) == 0.2


def test_a_pointer_to_a_missing_or_mismatched_table_raises(artifacts):
    switch_pointer(artifacts, _pointer("gone"), if_generation_match=0)
    with pytest.raises(NotFound):
        load_current_table(artifacts)
    meta = {"model_version": "other", "model_generation": 1, "key": ["country", "hour"]}
    write_table(artifacts, _blob("gone"), np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3]), meta)
    with pytest.raises(TableError, match="built from 'other'"):
        load_current_table(artifacts)
    meta["model_version"] = "m1"  # the right model, but not the rows the pointer describes
    write_table(artifacts, _blob("gone"), np.array([1]), np.array([0.1]), meta)
    with pytest.raises(TableError, match="says 3 rows but .* holds 1"):
        load_current_table(artifacts)


def test_a_pointer_written_before_build_ids_names_the_old_location(artifacts):
    meta = {"model_version": "m1", "model_generation": 1, "key": ["country", "hour"]}
    write_table(artifacts, table_blob("v0"), np.array([1, 2, 3]), np.array([0.1, 0.2, 0.3]), meta)
    old = {k: v for k, v in _pointer("v0").items() if k != "blob"}
    artifacts.write(TABLE_POINTER, json.dumps(old).encode())
    table = load_current_table(artifacts)
    assert table is not None and table.blob == "tables/v0/table.npz" and table.lookup_one(3) == 0.3


def test_a_malformed_pointer_reads_as_none_with_its_generation(artifacts):
    generation = artifacts.write(TABLE_POINTER, b"{broken")
    assert read_pointer(artifacts) == (None, generation)
    switch_pointer(artifacts, _pointer("v1"), if_generation_match=generation)
    assert read_pointer(artifacts)[0]["version"] == "v1"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{broken", "the table pointer is not JSON"),
        (b"null", "must be an object with a 'version' string, got None"),
        (b"{}", "must be an object with a 'version' string, got {}"),
        (b'{"version": 3}', "must be an object with a 'version' string"),
    ],
)
def test_a_reader_that_must_tell_a_malformed_pointer_from_none_gets_the_reason(artifacts, content, reason):
    assert read_valid_pointer(artifacts) == (None, 0)  # no pointer at all
    artifacts.write(TABLE_POINTER, content)
    with pytest.raises(TableError, match=re.escape(reason)):
        read_valid_pointer(artifacts)
