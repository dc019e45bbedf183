"""GCS-only behaviour no local server shows: some preconditions, server faults, and an object
overwritten between stat and download. The library call is mocked at its edge (``Blob``), so our
arguments and our error mapping are what is checked.

Preconditions: fake-gcs-server enforces ``ifGenerationMatch`` on single-request uploads, so the
compare-and-swap of ``write`` (and of ``upload`` below 8 MiB) is checked against it for real in
test_storage_conformance.py and test_storage_fake_gcs.py. It ignores the precondition of a
resumable upload (``upload`` of a bigger file), of a delete and of a rewrite (``copy``), and
gcp-storage-emulator ignores them all: for those, these mocks are the check that we send it and
map the 412 that GCS answers.

Custom metadata: the HTTP requests the library sends to fake-gcs-server are recorded (a spy on
the client's session, nothing replaced), to show that it travels in the request that carries the
content, so the two are one generation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage import Blob, Client
from google.cloud.storage.retry import DEFAULT_RETRY
from google.resumable_media import common as media
from pytest_mock import MockerFixture

from shared.errors import InvalidMetadata, NotFound, PreconditionFailed, StorageError
from shared.storage.gcs import GCSBucket


def _precondition_failed() -> gexc.PreconditionFailed:
    return gexc.PreconditionFailed("At least one of the pre-conditions you specified did not hold.")


def test_write_passes_the_precondition_and_maps_412(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    upload = mocker.patch.object(
        Blob, "upload_from_string", autospec=True, side_effect=_precondition_failed()
    )

    with pytest.raises(PreconditionFailed, match=r"'models/current.skops'.*if_generation_match=42"):
        gcs_bucket.write("models/current.skops", b"challenger", if_generation_match=42)

    (blob, data), kwargs = upload.call_args
    assert (blob.name, data) == ("models/current.skops", b"challenger")
    assert kwargs["if_generation_match"] == 42
    assert kwargs["retry"] is DEFAULT_RETRY


def test_only_if_absent_is_generation_match_zero(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    upload = mocker.patch.object(
        Blob, "upload_from_string", autospec=True, side_effect=_precondition_failed()
    )

    with pytest.raises(PreconditionFailed):
        gcs_bucket.write("registry/processed/b/x@1.json", b"{}", if_generation_match=0)

    assert upload.call_args.kwargs["if_generation_match"] == 0


def test_unconditional_write_sends_no_precondition(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    upload = mocker.spy(Blob, "upload_from_string")

    generation = gcs_bucket.write("a.csv", b"x")

    assert upload.call_args.kwargs["if_generation_match"] is None
    assert gcs_bucket.stat("a.csv").generation == generation


def test_upload_passes_the_precondition_and_maps_412(
    gcs_bucket: GCSBucket, mocker: MockerFixture, tmp_path: Path
) -> None:
    source = tmp_path / "model.skops"
    source.write_bytes(b"m")
    upload = mocker.patch.object(
        Blob, "upload_from_filename", autospec=True, side_effect=_precondition_failed()
    )

    with pytest.raises(PreconditionFailed):
        gcs_bucket.upload("models/current.skops", source, if_generation_match=7)

    (blob, filename), kwargs = upload.call_args
    assert (blob.name, filename, kwargs["if_generation_match"]) == ("models/current.skops", str(source), 7)


def test_delete_passes_the_precondition_and_maps_412(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    gcs_bucket.write("tables/current.json", b"{}")
    delete = mocker.patch.object(Blob, "delete", autospec=True, side_effect=_precondition_failed())

    with pytest.raises(PreconditionFailed):
        gcs_bucket.delete("tables/current.json", if_generation_match=3)

    assert delete.call_args.kwargs["if_generation_match"] == 3
    mocker.stopall()
    assert gcs_bucket.exists("tables/current.json")


def test_copy_puts_the_precondition_on_the_destination(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    gcs_bucket.write("models/versions/3/model.skops", b"m3")
    rewrite = mocker.patch.object(Blob, "rewrite", autospec=True, side_effect=_precondition_failed())

    with pytest.raises(PreconditionFailed):
        gcs_bucket.copy(
            "models/versions/3/model.skops", gcs_bucket, "models/current.skops", if_generation_match=9
        )

    (target, source), kwargs = rewrite.call_args
    assert (target.name, source.name) == ("models/current.skops", "models/versions/3/model.skops")
    assert kwargs["if_generation_match"] == 9
    assert kwargs["retry"] is DEFAULT_RETRY  # rewrite would not retry an unconditional copy by default


def test_server_faults_become_storage_errors(gcs_bucket: GCSBucket, mocker: MockerFixture) -> None:
    mocker.patch.object(
        Blob, "upload_from_string", autospec=True, side_effect=gexc.ServiceUnavailable("backend down")
    )

    with pytest.raises(StorageError, match="ServiceUnavailable.*backend down") as caught:
        gcs_bucket.write("a.csv", b"x")

    assert type(caught.value) is StorageError
    assert caught.value.http_status == 503


def _transient_faults() -> list[BaseException]:
    response = requests.Response()
    response.status_code = 200
    return [
        auth_exc.TransportError("metadata server unreachable"),
        auth_exc.RefreshError("token refresh failed"),
        media.DataCorruption(response, "checksum mismatch"),
        media.InvalidResponse(response, "unexpected status"),
        requests.ConnectionError("connection reset"),
        requests.Timeout("read timed out"),
        ConnectionResetError("connection reset by peer"),
    ]


@pytest.mark.parametrize("fault", _transient_faults(), ids=lambda f: type(f).__name__)
def test_transient_transport_faults_become_storage_errors(
    gcs_bucket: GCSBucket, mocker: MockerFixture, fault: BaseException
) -> None:
    """Raised as StorageError, the train function answers 5xx and the event is delivered again."""
    mocker.patch.object(Blob, "download_as_bytes", autospec=True, side_effect=fault)
    mocker.patch.object(Blob, "upload_from_string", autospec=True, side_effect=fault)

    with pytest.raises(StorageError, match=type(fault).__name__):
        gcs_bucket.read("a.csv")
    with pytest.raises(StorageError, match=type(fault).__name__):
        gcs_bucket.write("a.csv", b"x")


def test_read_with_info_starts_over_when_the_version_vanishes(
    gcs_bucket: GCSBucket, mocker: MockerFixture
) -> None:
    # GCS answers 404 when the pinned generation was overwritten between stat and download.
    gcs_bucket.write("models/current.skops", b"v2")
    real = Blob.download_as_bytes
    calls: list[int | None] = []

    def overwritten_once(blob: Blob, *args: object, **kwargs: object) -> bytes:
        calls.append(blob.generation)
        if len(calls) == 1:
            raise gexc.NotFound("No such object generation")
        return real(blob, *args, **kwargs)

    mocker.patch.object(Blob, "download_as_bytes", autospec=True, side_effect=overwritten_once)

    data, info = gcs_bucket.read_with_info("models/current.skops")

    assert data == b"v2"
    assert calls == [info.generation, info.generation]  # each download pinned to a stat'ed generation


def test_missing_bucket_is_not_found(gcs_client: Client) -> None:
    missing = GCSBucket(gcs_client, "no-such-bucket")

    with pytest.raises(NotFound, match="no-such-bucket"):
        missing.write("a", b"x")
    with pytest.raises(NotFound):
        list(missing.list())


# --- custom metadata travels with the content ------------------------------------------------

SERVED = {"prodml-version": "20261125T130109Z-132790", "prodml-compiled": "onnx"}


def _sent(spy: Any) -> list[tuple[str, str, bytes]]:
    """(method, url, body) of each request a spy on ``Client._http.request`` recorded."""
    sent = []
    for call in spy.call_args_list:
        method, url = call.args[:2]
        body = call.kwargs.get("data") or b""
        sent.append((method, url, body if isinstance(body, bytes) else str(body).encode()))
    return sent


def test_write_sends_metadata_in_the_one_request_that_carries_the_bytes(
    fakegcs_bucket: GCSBucket, mocker: MockerFixture
) -> None:
    big = os.urandom(8 * 1024 * 1024 + 1)  # above the library's resumable threshold
    spy = mocker.spy(fakegcs_bucket._client._http, "request")

    generation = fakegcs_bucket.write("models/current.skops", big, metadata=SERVED, if_generation_match=0)

    [(method, url, body)] = _sent(spy)
    assert method == "POST" and "uploadType=multipart" in url and "ifGenerationMatch=0" in url
    resource = json.loads(body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])  # the JSON part
    assert resource["metadata"] == SERVED
    mocker.stopall()
    info = fakegcs_bucket.stat("models/current.skops")
    assert (info.generation, dict(info.metadata)) == (generation, SERVED)


def test_a_resumable_upload_sends_metadata_when_it_starts(
    fakegcs_bucket: GCSBucket, mocker: MockerFixture, tmp_path: Path
) -> None:
    source = tmp_path / "day.parquet"
    source.write_bytes(os.urandom(8 * 1024 * 1024 + 1))
    spy = mocker.spy(fakegcs_bucket._client._http, "request")

    fakegcs_bucket.upload("incoming/day.parquet", source, metadata=SERVED)

    (method, url, body), *rest = _sent(spy)
    assert method == "POST" and "uploadType=resumable" in url
    assert json.loads(body)["metadata"] == SERVED
    assert rest and all(method == "PUT" for method, _url, _body in rest)  # the bytes, in that session


def test_refused_metadata_sends_no_request(
    fakegcs_bucket: GCSBucket, mocker: MockerFixture, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    spy = mocker.spy(fakegcs_bucket._client._http, "request")

    with pytest.raises(InvalidMetadata):
        fakegcs_bucket.write("a", b"x", metadata={"k": "\x00"})
    with pytest.raises(InvalidMetadata):
        fakegcs_bucket.upload("a", source, metadata={"": "v"})

    assert _sent(spy) == []
