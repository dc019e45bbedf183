"""Quarantine: a bad file is moved aside with its reason, once, and never a newer upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import load_settings
from shared.data.quarantine import list_quarantine, quarantine_object
from shared.data.validation import validate_file
from shared.errors import StorageError, ValidationFailed
from shared.schema import Schema
from shared.storage.local import LocalBucket

SCHEMA = Schema.from_dict(
    {
        "features": [{"name": "hour", "type": "integer", "min": 0, "max": 23}],
        "label": {"name": "y", "type": "category", "classes": [0, 1]},
        "key": ["hour"],
    }
)
BAD = b"hour,y\n1,0\n99,1\n"


@pytest.fixture
def data(buckets_root: Path) -> LocalBucket:
    return LocalBucket(buckets_root, "prodml-data")


def failure_of(tmp_path: Path, content: bytes) -> ValidationFailed:
    """The real failure of validating ``content`` (so the record holds what a user would see)."""
    path = tmp_path / "day.csv"
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as info:
        validate_file(path, "incoming/2026/day.csv", SCHEMA, load_settings({}))
    return info.value


def snapshot(bucket: LocalBucket) -> dict[str, bytes]:
    return {info.name: bucket.read(info.name) for info in bucket.list()}


def test_a_bad_file_moves_to_quarantine_with_its_reason(tmp_path: Path, data: LocalBucket) -> None:
    generation = data.write("incoming/2026/day.csv", BAD)
    failure = failure_of(tmp_path, BAD)
    assert quarantine_object(data, "incoming/2026/day.csv", generation, failure) == "quarantine/2026/day.csv"

    assert not data.exists("incoming/2026/day.csv")
    assert data.read("quarantine/2026/day.csv") == BAD
    reason = json.loads(data.read("quarantine/2026/day.csv.reason.json"))
    assert reason["object"] == "incoming/2026/day.csv" and reason["generation"] == generation
    assert reason["rule"] == "out_of_range" and "'hour'" in reason["message"]
    assert reason["details"]["columns"] == ["hour"] and reason["details"]["samples"] == [99]
    assert reason["details"]["rows"] == [2]
    assert reason["quarantined_at"].endswith("Z")
    assert list_quarantine(data) == [reason]


def test_a_second_run_is_a_no_op(tmp_path: Path, data: LocalBucket) -> None:
    generation = data.write("incoming/2026/day.csv", BAD)
    failure = failure_of(tmp_path, BAD)
    quarantine_object(data, "incoming/2026/day.csv", generation, failure)
    before = snapshot(data)
    generations = {i.name: i.generation for i in data.list()}
    assert quarantine_object(data, "incoming/2026/day.csv", generation, failure) == "quarantine/2026/day.csv"
    assert snapshot(data) == before
    assert {i.name: i.generation for i in data.list()} == generations  # nothing rewritten


def test_a_second_bad_upload_of_the_same_name_goes_beside_the_first(
    tmp_path: Path, data: LocalBucket
) -> None:
    first = data.write("incoming/day.csv", BAD)
    quarantine_object(data, "incoming/day.csv", first, failure_of(tmp_path, BAD))
    other = b"hour,y\n1,0\nnoon,1\n"
    second = data.write("incoming/day.csv", other)
    failure = failure_of(tmp_path, other)
    target = quarantine_object(data, "incoming/day.csv", second, failure)

    assert target == f"quarantine/day.csv@{second}"
    assert data.read("quarantine/day.csv") == BAD  # the first copy and its reason are kept
    assert data.read(target) == other
    records = list_quarantine(data)
    assert [(r["generation"], r["quarantined_as"]) for r in records] == [
        (first, "quarantine/day.csv"),
        (second, target),
    ]
    assert records[1]["rule"] == failure.rule
    before = snapshot(data)
    assert quarantine_object(data, "incoming/day.csv", second, failure) == target  # a rerun: no change
    assert snapshot(data) == before


def test_a_newer_upload_of_the_same_name_is_not_deleted(tmp_path: Path, data: LocalBucket) -> None:
    old = data.write("incoming/2026/day.csv", BAD)
    newer = b"hour,y\n1,0\n2,1\n"
    data.write("incoming/2026/day.csv", newer)
    quarantine_object(data, "incoming/2026/day.csv", old, failure_of(tmp_path, BAD))
    assert data.read("incoming/2026/day.csv") == newer
    assert list_quarantine(data) == []
    assert not data.exists("quarantine/2026/day.csv")


def test_a_crash_before_the_delete_is_finished_by_the_next_run(
    tmp_path: Path, data: LocalBucket, mocker
) -> None:
    generation = data.write("incoming/2026/day.csv", BAD)
    failure = failure_of(tmp_path, BAD)
    # Fault injection: the process dies (a transient storage fault) right before the delete.
    mocker.patch.object(data, "delete", side_effect=StorageError("connection reset"))
    with pytest.raises(StorageError):
        quarantine_object(data, "incoming/2026/day.csv", generation, failure)
    first_reason = data.read("quarantine/2026/day.csv.reason.json")
    assert data.exists("incoming/2026/day.csv")
    mocker.stopall()

    quarantine_object(data, "incoming/2026/day.csv", generation, failure)
    assert not data.exists("incoming/2026/day.csv")
    assert data.read("quarantine/2026/day.csv") == BAD
    assert data.read("quarantine/2026/day.csv.reason.json") == first_reason  # same record, same time


def test_a_crash_after_the_copy_is_finished_by_the_next_run(tmp_path: Path, data: LocalBucket) -> None:
    generation = data.write("incoming/2026/day.csv", BAD)
    data.copy("incoming/2026/day.csv", data, "quarantine/2026/day.csv")  # what the crashed run did
    quarantine_object(data, "incoming/2026/day.csv", generation, failure_of(tmp_path, BAD))
    assert sorted(snapshot(data)) == ["quarantine/2026/day.csv", "quarantine/2026/day.csv.reason.json"]
    assert [r["generation"] for r in list_quarantine(data)] == [generation]


def test_names_outside_incoming_keep_their_path(tmp_path: Path, data: LocalBucket) -> None:
    generation = data.write("drops/a.csv", BAD)
    assert (
        quarantine_object(data, "drops/a.csv", generation, failure_of(tmp_path, BAD))
        == "quarantine/drops/a.csv"
    )


def test_list_quarantine_skips_a_corrupt_record(tmp_path: Path, data: LocalBucket) -> None:
    generation = data.write("incoming/a.csv", BAD)
    quarantine_object(data, "incoming/a.csv", generation, failure_of(tmp_path, BAD))
    data.write("quarantine/b.csv.reason.json", b"{not json")
    assert [r["object"] for r in list_quarantine(data)] == ["incoming/a.csv"]


def test_a_reason_over_the_record_cap_is_cut_to_valid_json_that_still_says_why(
    tmp_path: Path, data: LocalBucket
) -> None:
    from shared.record_caps import MAX_RECORD_BYTES

    generation = data.write("incoming/2026/day.csv", BAD)
    huge = "x" * 5_000_000
    failure = ValidationFailed(
        "wrong_type",
        f"column 'hour' must hold numbers, found {huge}",
        {"columns": ["hour"], "samples": [huge]},
    )
    quarantine_object(data, "incoming/2026/day.csv", generation, failure)
    body = data.read("quarantine/2026/day.csv.reason.json")
    assert len(body) <= MAX_RECORD_BYTES
    reason = json.loads(body)
    assert reason["object"] == "incoming/2026/day.csv" and reason["generation"] == generation
    assert reason["rule"] == "wrong_type" and reason["message"].startswith("column 'hour' must hold numbers")
    assert reason["cut"]["bytes"] > 5_000_000
    # A rerun finds its own (cut) record and leaves everything as it was.
    before = snapshot(data)
    quarantine_object(data, "incoming/2026/day.csv", generation, failure)
    assert snapshot(data) == before
