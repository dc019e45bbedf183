"""One behaviour, two backends: every test here runs on a local bucket and on a GCS bucket served
by each of two real GCS-API servers, gcp-storage-emulator and fake-gcs-server (the ``bucket``
fixture in tests/conftest.py).

Preconditions (``if_generation_match``) are checked where a server enforces them: the local store
always; fake-gcs-server (1.54) on single-request uploads only, which is what ``GCSBucket.write``
sends at any size; gcp-storage-emulator never. What neither server enforces is checked against
mocks of the library in test_storage_gcs.py: fake-gcs-server ignores the precondition of a
resumable upload (``GCSBucket.upload`` of a file above google-cloud-storage's 8 MiB threshold), of
a delete and of a rewrite (our copy). Those tests are marked xfail on it, strictly, so they flag
the day a server release starts enforcing them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import new_gcs_bucket

from shared.errors import InvalidMetadata, InvalidObjectName, NotFound, PreconditionFailed
from shared.storage.base import Bucket
from shared.storage.gcs import GCSBucket
from shared.storage.local import LocalBucket

# Above this size google-cloud-storage sends an upload in several requests (a resumable upload)
# unless told otherwise; a model blob can be that big.
RESUMABLE_THRESHOLD = 8 * 1024 * 1024


def _server(request: pytest.FixtureRequest) -> str:
    """Which ``bucket`` parameter this test runs on: "local", "gcs" or "fakegcs"."""
    return str(request.node.callspec.params["bucket"])


@pytest.fixture
def cas_bucket(bucket: Bucket, request: pytest.FixtureRequest) -> Bucket:
    """``bucket``, but only where preconditions are enforced (the emulator's: mocks)."""
    if _server(request) == "gcs":
        pytest.skip("gcp-storage-emulator does not enforce preconditions; see test_storage_gcs.py")
    return bucket


def not_enforced_by_fake_gcs_server(request: pytest.FixtureRequest, what: str) -> None:
    """Mark this test an expected failure on fake-gcs-server, which ignores the precondition of
    ``what`` (GCS enforces it; test_storage_gcs.py checks that we send it)."""
    if _server(request) == "fakegcs":
        reason = f"fake-gcs-server 1.54 ignores ifGenerationMatch on {what}; see test_storage_gcs.py"
        # Narrowly: only a pytest.raises(PreconditionFailed) that saw no error counts as expected.
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=pytest.fail.Exception))


@pytest.fixture
def other_bucket(bucket: Bucket, buckets_root: Path, request: pytest.FixtureRequest) -> Bucket:
    """A second empty bucket on the same backend and server as ``bucket``."""
    if isinstance(bucket, LocalBucket):
        return LocalBucket(buckets_root, "other-bucket")
    assert isinstance(bucket, GCSBucket)
    return new_gcs_bucket(bucket._client)


# --- reading and writing -------------------------------------------------------------------


def test_write_then_read_returns_the_bytes_and_the_written_generation(bucket: Bucket) -> None:
    generation = bucket.write("models/current.skops", b"\x00model bytes\xff")

    data, info = bucket.read_with_info("models/current.skops")

    assert bucket.read("models/current.skops") == data == b"\x00model bytes\xff"
    assert info.generation == generation > 0
    assert (info.bucket, info.name, info.size) == (bucket.name, "models/current.skops", 13)
    assert bucket.stat("models/current.skops") == info


def test_overwrite_replaces_content_and_raises_the_generation(bucket: Bucket) -> None:
    first = bucket.write("schema.json", b'{"v": 1}')
    second = bucket.write("schema.json", b'{"v": 2, "longer": true}')

    data, info = bucket.read_with_info("schema.json")

    assert data == b'{"v": 2, "longer": true}'
    assert info.generation == second > first
    assert info.size == len(data)


def test_empty_object_is_an_object(bucket: Bucket) -> None:
    bucket.write("incoming/empty.csv", b"")

    assert bucket.read("incoming/empty.csv") == b""
    assert bucket.stat("incoming/empty.csv").size == 0
    assert [i.name for i in bucket.list()] == ["incoming/empty.csv"]


def test_unicode_and_punctuated_names_round_trip(bucket: Bucket) -> None:
    name = "incoming/données 2024 (v2)#1 ü.csv"
    bucket.write(name, b"a,b\n")

    assert bucket.read(name) == b"a,b\n"
    assert [i.name for i in bucket.list("incoming/")] == [name]


def test_content_type_is_stored_or_guessed_from_the_extension(bucket: Bucket) -> None:
    bucket.write("a.csv", b"x")
    bucket.write("b.skops", b"x")
    bucket.write("c.json", b"{}", content_type="application/x-custom")

    assert bucket.stat("a.csv").content_type == "text/csv"
    assert bucket.stat("b.skops").content_type == "application/octet-stream"
    assert bucket.stat("c.json").content_type == "application/x-custom"


def test_missing_object_is_not_found_everywhere(bucket: Bucket, tmp_path: Path) -> None:
    bucket.write("there", b"x")

    for call in (
        lambda: bucket.read("missing"),
        lambda: bucket.read_with_info("missing"),
        lambda: bucket.stat("missing"),
        lambda: bucket.delete("missing"),
        lambda: bucket.download("missing", tmp_path / "out"),
    ):
        with pytest.raises(NotFound, match="missing"):
            call()
    assert bucket.exists("there") and not bucket.exists("missing")
    assert not (tmp_path / "out").exists()  # a failed download leaves no empty file behind


def test_upload_and_download_stream_files(bucket: Bucket, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MB chunks
    source = tmp_path / "source.parquet"
    source.write_bytes(payload)

    generation = bucket.upload("incoming/day1.parquet", source)
    info = bucket.download("incoming/day1.parquet", tmp_path / "copy.parquet")

    assert (tmp_path / "copy.parquet").read_bytes() == payload
    assert info.generation == generation
    assert info.size == len(payload)


def test_delete_removes_the_object(bucket: Bucket) -> None:
    bucket.write("incoming/a.csv", b"1")
    bucket.write("incoming/b.csv", b"2")

    bucket.delete("incoming/a.csv")

    assert not bucket.exists("incoming/a.csv")
    assert [i.name for i in bucket.list()] == ["incoming/b.csv"]


# --- listing -------------------------------------------------------------------------------


def test_list_is_in_name_order_and_filters_by_prefix(bucket: Bucket) -> None:
    for name in ["models/versions/2/model.skops", "models/current.skops", "schema.json", "models-old", "m"]:
        bucket.write(name, name.encode())

    every = list(bucket.list())

    assert [i.name for i in every] == [
        "m",
        "models-old",
        "models/current.skops",
        "models/versions/2/model.skops",
        "schema.json",
    ]
    assert [i.name for i in bucket.list("models/")] == [
        "models/current.skops",
        "models/versions/2/model.skops",
    ]
    assert [i.name for i in bucket.list("models")] == [i.name for i in every[1:4]]
    assert [i.name for i in bucket.list("models/versions/2/mod")] == ["models/versions/2/model.skops"]
    assert list(bucket.list("nothing/")) == []
    for info in every:
        assert info == bucket.stat(info.name)


# --- copy ----------------------------------------------------------------------------------


def test_copy_to_another_bucket_carries_bytes_and_content_type(bucket: Bucket, other_bucket: Bucket) -> None:
    bucket.write("models/versions/7/model.skops", b"model-7", content_type="application/x-skops")

    generation = bucket.copy("models/versions/7/model.skops", other_bucket, "models/current.skops")

    data, info = other_bucket.read_with_info("models/current.skops")
    assert data == b"model-7"
    assert info.generation == generation
    assert info.content_type == "application/x-skops"
    assert bucket.read("models/versions/7/model.skops") == b"model-7"  # the source stays


def test_copy_of_missing_source_is_not_found(bucket: Bucket, other_bucket: Bucket) -> None:
    with pytest.raises(NotFound):
        bucket.copy("missing", other_bucket, "x")
    assert not other_bucket.exists("x")


# --- custom metadata -----------------------------------------------------------------------

SERVED = {"prodml-version": "20261125T130109Z-132790", "prodml-compiled": "onnx"}


def test_metadata_is_stored_with_the_content_and_read_back_everywhere(bucket: Bucket, tmp_path: Path) -> None:
    generation = bucket.write("models/current.skops", b"model", metadata=SERVED)

    data, info = bucket.read_with_info("models/current.skops")

    assert (data, info.generation, dict(info.metadata)) == (b"model", generation, SERVED)
    assert bucket.stat("models/current.skops") == info
    assert [(i.name, dict(i.metadata)) for i in bucket.list("models/")] == [("models/current.skops", SERVED)]
    assert dict(bucket.download("models/current.skops", tmp_path / "copy").metadata) == SERVED


def test_an_object_written_without_metadata_has_none(bucket: Bucket) -> None:
    bucket.write("schema.json", b"{}")

    assert dict(bucket.stat("schema.json").metadata) == {}
    assert [dict(i.metadata) for i in bucket.list()] == [{}]


@pytest.mark.parametrize(
    "size", [14, RESUMABLE_THRESHOLD + 1], ids=["small", "above the resumable threshold"]
)
def test_upload_stores_metadata_with_the_file(bucket: Bucket, tmp_path: Path, size: int) -> None:
    payload = os.urandom(size)
    source = tmp_path / "model.skops"
    source.write_bytes(payload)

    generation = bucket.upload("models/versions/7/model.skops", source, metadata={"prodml-version": "7"})

    data, info = bucket.read_with_info("models/versions/7/model.skops")
    assert (data, info.generation, dict(info.metadata)) == (payload, generation, {"prodml-version": "7"})


def test_metadata_belongs_to_one_generation(bucket: Bucket) -> None:
    bucket.write("models/current.skops", b"one", metadata=SERVED)
    bucket.write("models/current.skops", b"two", metadata={"prodml-version": "two"})
    assert dict(bucket.stat("models/current.skops").metadata) == {
        "prodml-version": "two"
    }  # replaced, not merged

    bucket.write("models/current.skops", b"three")

    data, info = bucket.read_with_info("models/current.skops")
    assert (data, dict(info.metadata)) == (b"three", {})


def test_compare_and_swap_writes_metadata_in_the_same_request(cas_bucket: Bucket) -> None:
    first = cas_bucket.write(
        "models/current.skops", b"champion", metadata={"prodml-version": "1"}, if_generation_match=0
    )

    with pytest.raises(PreconditionFailed):
        cas_bucket.write(
            "models/current.skops", b"late", metadata={"prodml-version": "late"}, if_generation_match=0
        )
    second = cas_bucket.write(
        "models/current.skops", b"challenger", metadata=SERVED, if_generation_match=first
    )

    data, info = cas_bucket.read_with_info("models/current.skops")
    assert (data, info.generation, dict(info.metadata)) == (b"challenger", second, SERVED)


def test_copy_keeps_the_source_metadata(bucket: Bucket, other_bucket: Bucket) -> None:
    bucket.write("models/versions/7/model.skops", b"model-7", metadata=SERVED)
    bucket.write("plain", b"x")

    generation = bucket.copy("models/versions/7/model.skops", other_bucket, "models/current.skops")
    bucket.copy("plain", other_bucket, "plain")

    info = other_bucket.stat("models/current.skops")
    assert (info.generation, dict(info.metadata)) == (generation, SERVED)
    assert dict(other_bucket.stat("plain").metadata) == {}


BAD_METADATA = {
    "empty key": ({"": "x"}, "key must not be empty"),
    "key not str": ({1: "x"}, "key must be a str"),
    "value not str": ({"prodml-version": 7}, "value must be a str"),
    "value None": ({"prodml-version": None}, "value must be a str"),
    "control character in a value": ({"k": "a\nb"}, "printable ASCII"),
    "control character in a key": ({"k\x1b": "v"}, "printable ASCII"),
    "non-ASCII value": ({"k": "donn\u00e9es"}, "printable ASCII"),
    "non-ASCII key": ({"cl\u00e9": "v"}, "printable ASCII"),
    "key over 1 KiB": ({"k" * 1025: "v"}, "at most 1024 bytes"),
    "value over 4 KiB": ({"k": "v" * 4097}, "at most 4096 bytes"),
    "over 8 KiB in all": ({f"k{i}": "v" * 4000 for i in range(3)}, "at most 8192 bytes"),
    "not a mapping": ([("k", "v")], "must be a mapping"),
}


@pytest.mark.parametrize(("metadata", "rule"), BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_refused_metadata_writes_nothing(bucket: Bucket, metadata: object, rule: str, tmp_path: Path) -> None:
    kept = bucket.write("models/current.skops", b"champion", metadata={"prodml-version": "1"})
    source = tmp_path / "f"
    source.write_bytes(b"x")

    for call in (
        lambda: bucket.write("models/current.skops", b"challenger", metadata=metadata),  # type: ignore[arg-type]
        lambda: bucket.upload("models/current.skops", source, metadata=metadata),  # type: ignore[arg-type]
        lambda: bucket.write("new.skops", b"x", metadata=metadata),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidMetadata, match=rule) as caught:
            call()
        assert caught.value.http_status == 400

    data, info = bucket.read_with_info("models/current.skops")
    assert (data, info.generation, dict(info.metadata)) == (b"champion", kept, {"prodml-version": "1"})
    assert [i.name for i in bucket.list()] == ["models/current.skops"]


def test_metadata_at_the_limits_is_accepted(bucket: Bucket) -> None:
    at_limits = {"k" * 1024: "v" * 4096, "w": "x" * (8192 - 1024 - 4096 - 1)}  # 8,192 bytes in all
    printable = {"prodml-note": "".join(chr(c) for c in range(0x20, 0x7F))}

    bucket.write("a", b"x", metadata=at_limits)
    bucket.write("b", b"x", metadata=printable)

    assert dict(bucket.stat("a").metadata) == at_limits
    assert dict(bucket.stat("b").metadata) == printable


# --- names ---------------------------------------------------------------------------------

BAD_NAMES = {
    "empty": ("", "must not be empty"),
    "1025 bytes": ("a" * 1025, "at most 1024 bytes"),
    "1025 bytes of UTF-8": ("é" * 512 + "a", "at most 1024 bytes"),
    "NUL": ("a\x00b", "NUL"),
    "CR": ("a\rb", "carriage return"),
    "LF": ("a\nb", "line feed"),
    "lone surrogate": ("bad\udcff.csv", "valid UTF-8"),
    "dot": (".", "'.' or '..'"),
    "dot dot": ("..", "'.' or '..'"),
}


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_malformed_names_are_refused_with_the_rule(
    bucket: Bucket, name: str, rule: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    for call in (
        lambda: bucket.write(name, b"x"),
        lambda: bucket.upload(name, source),
        lambda: bucket.read(name),
        lambda: bucket.read_with_info(name),
        lambda: bucket.stat(name),
        lambda: bucket.exists(name),
        lambda: bucket.delete(name),
        lambda: bucket.download(name, tmp_path / "out"),
    ):
        with pytest.raises(InvalidObjectName) as caught:
            call()
        assert repr(name)[:60] in str(caught.value)
        assert rule in str(caught.value)
    assert list(bucket.list()) == []
    assert not (tmp_path / "out").exists()


def test_longest_valid_name_is_accepted(bucket: Bucket) -> None:
    name = "a" * 200 + "/" + "b" * 200 + "/" + "c" * 200 + "/" + "d" * 200 + "/" + "e" * 220  # 1024 bytes
    assert len(name.encode()) == 1024

    bucket.write(name, b"x")

    assert bucket.read(name) == b"x"


# Names GCS takes whose components are longer than a file name may be (255 bytes): a data file
# named with 300 bytes, 100 CJK characters (300 bytes), a 1,015-byte component, and a folder
# component over the limit.
LONG_NAMES = {
    "300 bytes": "incoming/" + "d" * 296 + ".csv",
    "100 CJK characters": "incoming/" + "売上データ" * 20 + ".csv",
    "1015-byte component": "incoming/" + "e" * 1011 + ".csv",
    "long folder": "incoming/" + "f" * 300 + "/day.csv",
}


def test_names_longer_than_a_file_name_work_like_any_name(bucket: Bucket, other_bucket: Bucket) -> None:
    generations = {name: bucket.write(name, name.encode()) for name in LONG_NAMES.values()}
    bucket.write("incoming/short.csv", b"s")

    assert [i.name for i in bucket.list("incoming/")] == sorted([*LONG_NAMES.values(), "incoming/short.csv"])
    for name, generation in generations.items():
        assert bucket.read_with_info(name) == (name.encode(), bucket.stat(name))
        assert bucket.stat(name).generation == generation
        assert bucket.stat(name).content_type == "text/csv"
        assert [i.name for i in bucket.list(name[:-3])] == [name]
        bucket.copy(name, other_bucket, name)
        assert other_bucket.read(name) == name.encode()
    folder = LONG_NAMES["long folder"].rpartition("/")[0] + "/"
    assert [i.name for i in bucket.list(folder)] == [LONG_NAMES["long folder"]]

    for name in LONG_NAMES.values():
        bucket.delete(name)
    assert [i.name for i in bucket.list()] == ["incoming/short.csv"]


# --- preconditions (enforced by the local store, GCS and mostly fake-gcs-server; see the top) --


def test_generation_match_zero_creates_only_if_absent(cas_bucket: Bucket) -> None:
    first = cas_bucket.write("registry/processed/x@1.json", b"mine", if_generation_match=0)

    with pytest.raises(PreconditionFailed, match="registry/processed/x@1.json"):
        cas_bucket.write("registry/processed/x@1.json", b"theirs", if_generation_match=0)

    assert cas_bucket.read_with_info("registry/processed/x@1.json") == (
        b"mine",
        cas_bucket.stat("registry/processed/x@1.json"),
    )
    assert cas_bucket.stat("registry/processed/x@1.json").generation == first


def test_generation_match_swaps_only_the_version_read(cas_bucket: Bucket) -> None:
    cas_bucket.write("models/current.skops", b"champion")
    _, seen = cas_bucket.read_with_info("models/current.skops")
    cas_bucket.write("models/current.skops", b"other trainer", if_generation_match=seen.generation)

    with pytest.raises(PreconditionFailed, match=str(seen.generation)):
        cas_bucket.write("models/current.skops", b"me", if_generation_match=seen.generation)

    assert cas_bucket.read("models/current.skops") == b"other trainer"


def test_generation_match_on_a_missing_object_fails(cas_bucket: Bucket, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(PreconditionFailed):
        cas_bucket.write("absent", b"x", if_generation_match=12345)
    with pytest.raises(PreconditionFailed):
        cas_bucket.upload("absent", source, if_generation_match=12345)
    assert not cas_bucket.exists("absent")


def test_upload_honours_preconditions(cas_bucket: Bucket, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"new")
    generation = cas_bucket.write("obj", b"old")

    with pytest.raises(PreconditionFailed):
        cas_bucket.upload("obj", source, if_generation_match=0)
    assert cas_bucket.upload("obj", source, if_generation_match=generation) > generation
    assert cas_bucket.read("obj") == b"new"


def test_delete_with_a_stale_generation_keeps_the_object(
    cas_bucket: Bucket, request: pytest.FixtureRequest
) -> None:
    not_enforced_by_fake_gcs_server(request, "deletes")
    old = cas_bucket.write("tables/current.json", b"1")
    new = cas_bucket.write("tables/current.json", b"2")

    with pytest.raises(PreconditionFailed):
        cas_bucket.delete("tables/current.json", if_generation_match=old)
    assert cas_bucket.read("tables/current.json") == b"2"

    cas_bucket.delete("tables/current.json", if_generation_match=new)
    assert not cas_bucket.exists("tables/current.json")


def test_copy_precondition_is_on_the_destination(
    cas_bucket: Bucket, other_bucket: Bucket, request: pytest.FixtureRequest
) -> None:
    not_enforced_by_fake_gcs_server(request, "rewrites (copies)")
    dest = other_bucket
    cas_bucket.write("src", b"new")
    kept = dest.write("dst", b"old")

    with pytest.raises(PreconditionFailed):
        cas_bucket.copy("src", dest, "dst", if_generation_match=0)
    assert dest.read("dst") == b"old"

    assert cas_bucket.copy("src", dest, "dst", if_generation_match=kept) > kept
    assert dest.read("dst") == b"new"


def test_compare_and_swap_of_a_blob_above_the_resumable_threshold(cas_bucket: Bucket) -> None:
    big = os.urandom(RESUMABLE_THRESHOLD + 1)
    first = cas_bucket.write("models/current.skops", big, if_generation_match=0)

    with pytest.raises(PreconditionFailed):
        cas_bucket.write("models/current.skops", big[::-1], if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        cas_bucket.write("models/current.skops", big[::-1], if_generation_match=first - 1)

    data, info = cas_bucket.read_with_info("models/current.skops")
    assert (data, info.generation) == (big, first)
    assert cas_bucket.write("models/current.skops", b"next", if_generation_match=first) > first


def test_upload_of_a_file_above_the_resumable_threshold_honours_preconditions(
    cas_bucket: Bucket, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    not_enforced_by_fake_gcs_server(request, "resumable uploads")
    source = tmp_path / "day.parquet"
    source.write_bytes(os.urandom(RESUMABLE_THRESHOLD + 1))
    kept = cas_bucket.write("incoming/day.parquet", b"first")

    with pytest.raises(PreconditionFailed):
        cas_bucket.upload("incoming/day.parquet", source, if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        cas_bucket.upload("incoming/day.parquet", source, if_generation_match=kept - 1)

    assert cas_bucket.read("incoming/day.parquet") == b"first"
