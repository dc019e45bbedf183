"""The shadow pointer (``models/shadow.json``): compare-and-swap, its history, and what a reader
sees of a pointer that is not one. On the local backend and against fake-gcs-server, which
enforces ``ifGenerationMatch`` (gcp-storage-emulator does not, so it cannot race)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.contracts import SHADOW_HISTORY_PREFIX, SHADOW_POINTER, ModelForm, ShadowChange
from shared.errors import PreconditionFailed, ShadowError
from shared.storage.base import Bucket
from shared.training import shadow


@pytest.fixture(params=["local", "fakegcs"])
def cas_bucket(request: pytest.FixtureRequest) -> Bucket:
    """An empty bucket on a backend that enforces preconditions."""
    return request.getfixturevalue(f"{request.param}_bucket")


def _start(bucket: Bucket, version: str, expected: int, previous: shadow.ShadowPointer | None = None):
    new = shadow.started(
        version, champion="champ", form=ModelForm.ONNX, by="test", reason="why", previous=previous
    )
    return shadow.swap_pointer(bucket, new, expected)


def test_of_two_writers_of_one_generation_one_wins_and_the_other_writes_nothing(cas_bucket: Bucket) -> None:
    first = _start(cas_bucket, "v1", 0)
    read = shadow.read_pointer(cas_bucket)
    assert read is not None and read.generation == first.generation

    winner = _start(cas_bucket, "v2", read.generation, previous=read)
    with pytest.raises(PreconditionFailed):
        _start(cas_bucket, "v3", read.generation, previous=read)  # read the same pointer: too late

    now = shadow.read_pointer(cas_bucket)
    assert now is not None and now.version == "v2" and now.generation == winner.generation
    assert now.change == ShadowChange.REPLACED and now.previous == "v1"
    history = shadow.list_history(cas_bucket)
    assert [(r["version"], r["change"]) for r in history] == [("v1", "started"), ("v2", "replaced")]
    assert [r["generation"] for r in history] == [first.generation, winner.generation]


def test_the_first_pointer_is_written_only_if_none_is_there(cas_bucket: Bucket) -> None:
    _start(cas_bucket, "v1", 0)
    with pytest.raises(PreconditionFailed):
        _start(cas_bucket, "v2", 0)
    assert shadow.running_version(cas_bucket) == "v1"


def test_a_record_lost_to_a_crash_between_the_two_writes_is_recovered_from_the_pointer(
    cas_bucket: Bucket,
) -> None:
    started = _start(cas_bucket, "v1", 0)
    ended = shadow.ended(started, ShadowChange.REJECTED, by="test", reason="worse", numbers={"rows": 250})
    # The crash: the pointer is swapped, its history record never written.
    generation = cas_bucket.write(
        SHADOW_POINTER, json.dumps(ended.to_dict()).encode(), if_generation_match=started.generation
    )

    history = shadow.list_history(cas_bucket)

    assert [r["change"] for r in history] == ["started", "rejected"]
    assert history[-1]["generation"] == generation and history[-1]["previous"] == "v1"
    assert history[-1]["numbers"] == {"rows": 250} and history[-1]["version"] is None
    assert [i.name for i in cas_bucket.list(SHADOW_HISTORY_PREFIX)] == [
        shadow.history_name(started.generation)
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"format": "other", "version": "v1"}).encode(),
        json.dumps({"format": shadow.POINTER_FORMAT, "version": "v1", "change": "exploded"}).encode(),
        json.dumps({"format": shadow.POINTER_FORMAT, "version": 7, "change": "started"}).encode(),
        json.dumps({"format": shadow.POINTER_FORMAT, "version": "v1"}).encode(),  # no change
        json.dumps(
            {"format": shadow.POINTER_FORMAT, "version": "v1", "change": "started", "numbers": [1]}
        ).encode(),
    ],
    ids=[
        "not_json",
        "not_object",
        "other_format",
        "unknown_change",
        "version_not_text",
        "no_change",
        "numbers",
    ],
)
def test_a_malformed_pointer_is_a_shadow_error_naming_the_blob(local_bucket: Bucket, body: bytes) -> None:
    local_bucket.write(SHADOW_POINTER, body)
    with pytest.raises(ShadowError, match="models/shadow.json"):
        shadow.read_pointer(local_bucket)
    assert shadow.list_history(local_bucket) == []  # the history stays readable without it


def test_no_pointer_reads_as_none_and_an_ended_one_as_no_shadow_running(local_bucket: Bucket) -> None:
    assert shadow.read_pointer(local_bucket) is None and shadow.running_version(local_bucket) is None
    started = _start(local_bucket, "v1", 0)
    stopped = shadow.swap_pointer(
        local_bucket,
        shadow.ended(started, ShadowChange.STOPPED, by="me", reason="by hand"),
        started.generation,
    )
    read = shadow.read_pointer(local_bucket)
    assert (
        read is not None
        and not read.running
        and read.previous == "v1"
        and read.generation == stopped.generation
    )
    assert read.started == started.started  # kept: how long the run lasted stays visible
    assert shadow.age_seconds(read) is None


def test_age_counts_from_the_start_of_the_run() -> None:
    began = datetime(2026, 1, 1, tzinfo=UTC)
    pointer = shadow.ShadowPointer(
        version="v1", change=ShadowChange.STARTED, time="", by="", started=began.isoformat()
    )
    assert shadow.age_seconds(pointer, began + timedelta(hours=2)) == 7200.0
