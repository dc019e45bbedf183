"""Storage events: what a function is handed parses to the object that was written, and what the
local router builds is what Eventarc sends (it reaches a real functions-framework app intact)."""

from __future__ import annotations

import base64
import copy
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from conftest import UNREADABLE_DELIVERIES
from flask.testing import FlaskClient
from functions_framework import create_app
from google.cloud.functions.context import Context

from shared.errors import InvalidEvent
from shared.events import (
    FINALIZED,
    StorageObjectEvent,
    build_cloudevent,
    parse_storage_event,
    storage_object_data,
    to_cloudevent,
)
from shared.storage.base import ObjectInfo

PAYLOADS = Path(__file__).parent / "payloads"

# What every form of the sample event in tests/payloads must parse to.
SAMPLE = StorageObjectEvent(
    bucket="prodml-data",
    name="incoming/batch-0001.csv",
    generation=1714557600123456,
    size=48213,
    content_type="text/csv",
    time_created=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
    updated=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
    event_id="10452355432411847",
    event_type=FINALIZED,
    metageneration=1,
    md5_hash="S/qA2NGpir4o7+zYL4TJLQ==",
)


def load(name: str) -> dict[str, Any]:
    """A fresh copy of a sample payload (tests mutate them)."""
    return json.loads((PAYLOADS / name).read_text())


# --- a real functions-framework app that records what its @cloud_event function is handed -------

RECORDER = """
import flask
import functions_framework
from functions_framework import event_conversion

from shared.event_guard import guard_event_parsing

RECEIVED = []

# As the event entry points do: every request below passes the guard before the framework's view.
guard_event_parsing(
    flask.current_app, flask.request, event_conversion.background_event_to_cloud_event, "record"
)


@functions_framework.cloud_event
def record(event):
    RECEIVED.append(event)
"""


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, list[CloudEvent]]]:
    """A test client of ``create_app`` serving a cloud_event function, and the list it appends to.

    The app is guarded as the event entry points are (``shared.event_guard``), so every delivery
    below also shows that the guard lets a readable event through unchanged."""
    source = tmp_path_factory.mktemp("fn") / "events_recorder.py"
    source.write_text(textwrap.dedent(RECORDER))
    app = create_app(target="record", source=str(source))
    # create_app registers the loaded module under its file stem; its list is what the function saw.
    received: list[CloudEvent] = sys.modules["events_recorder"].RECEIVED
    yield app.test_client(), received
    sys.modules.pop("events_recorder", None)
    sys.path.remove(str(source.parent))  # create_app appended it


@pytest.fixture
def deliver(recorder: tuple[FlaskClient, list[CloudEvent]]) -> Callable[..., CloudEvent]:
    """POST a request to the app; return the one CloudEvent its function was handed."""
    client, received = recorder

    def post(headers: dict[str, str], body: bytes) -> CloudEvent:
        received.clear()
        response = client.post("/", headers=headers, data=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert len(received) == 1
        return received[0]

    return post


def binary_request(payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return payload["headers"], json.dumps(payload["body"]).encode()


# --- the real shapes, through functions-framework ----------------------------------------------


def test_binary_content_mode_as_eventarc_sends_it(deliver: Callable[..., CloudEvent]) -> None:
    event = deliver(*binary_request(load("storage-finalized-binary.json")))
    assert isinstance(event.data, dict)  # the SDK decoded the JSON body
    assert parse_storage_event(event) == SAMPLE


def test_structured_content_mode(deliver: Callable[..., CloudEvent]) -> None:
    body = json.dumps(load("storage-finalized-structured.json")).encode()
    event = deliver({"Content-Type": "application/cloudevents+json"}, body)
    assert parse_storage_event(event) == SAMPLE


def test_double_encoded_body_reaches_the_function_as_a_string(deliver: Callable[..., CloudEvent]) -> None:
    headers, body = binary_request(load("storage-finalized-binary.json"))
    event = deliver(headers, json.dumps(body.decode()).encode())
    assert isinstance(event.data, str)  # the SDK decoded one JSON layer only
    assert parse_storage_event(event) == SAMPLE


def test_body_that_is_not_json_reaches_the_function_as_bytes(deliver: Callable[..., CloudEvent]) -> None:
    headers, _ = binary_request(load("storage-finalized-binary.json"))
    event = deliver(headers, b"bucket=prodml-data")
    assert isinstance(event.data, bytes)
    with pytest.raises(InvalidEvent, match=r"data is not JSON: b'bucket=prodml-data'"):
        parse_storage_event(event)


def test_structured_mode_with_data_base64(deliver: Callable[..., CloudEvent]) -> None:
    structured = load("storage-finalized-structured.json")
    structured["data_base64"] = base64.b64encode(json.dumps(structured.pop("data")).encode()).decode()
    event = deliver({"Content-Type": "application/cloudevents+json"}, json.dumps(structured).encode())
    assert parse_storage_event(event) == SAMPLE
    # The same dict handed over directly: the bytes are decoded here.
    assert parse_storage_event(structured) == SAMPLE


def test_legacy_event_converted_by_functions_framework(deliver: Callable[..., CloudEvent]) -> None:
    body = json.dumps(load("storage-finalize-legacy.json")).encode()
    event = deliver({"Content-Type": "application/json"}, body)
    # functions-framework turned it into the CloudEvent Eventarc would have sent.
    assert event["type"] == FINALIZED
    assert event["source"] == "//storage.googleapis.com/projects/_/buckets/prodml-data"
    assert event["subject"] == "objects/incoming/batch-0001.csv"
    assert parse_storage_event(event) == SAMPLE


@pytest.mark.parametrize("name", list(UNREADABLE_DELIVERIES))
def test_a_delivery_the_framework_cannot_parse_is_answered_2xx_and_never_reaches_the_function(
    recorder: tuple[FlaskClient, list[CloudEvent]], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, received = recorder
    received.clear()
    headers, body = UNREADABLE_DELIVERIES[name]

    response = client.post("/", headers=headers, data=body)

    assert response.status_code == 200 and "cannot be parsed" in response.get_data(as_text=True)
    assert received == []
    (said,) = [r.getMessage() for r in caplog.records if "cannot be parsed" in r.getMessage()]
    assert said.startswith("record: ignoring a delivery that cannot be parsed")
    assert len(said) < 1000  # the reason is cut short, whatever the body


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Type": "application/json"}, b"{not json"),  # the framework's own 400
        ({"Content-Type": "text/plain"}, b"hello"),  # the framework's own 415
        ({"Content-Type": "application/json"}, b"[1, 2]"),  # a 500 in the framework
    ],
    ids=["not-json", "not-a-json-type", "a-json-list"],
)
def test_other_bodies_that_are_no_event_are_answered_2xx_too(
    recorder: tuple[FlaskClient, list[CloudEvent]], headers: dict[str, str], body: bytes
) -> None:
    client, received = recorder
    received.clear()
    assert client.post("/", headers=headers, data=body).status_code == 200  # a retry would not help
    assert received == []
    assert client.get("/").status_code == 405  # not a delivery: the framework answers as before


# --- the other forms, handed over directly ----------------------------------------------------


def test_structured_dict() -> None:
    assert parse_storage_event(load("storage-finalized-structured.json")) == SAMPLE


def test_legacy_dict_with_context() -> None:
    assert parse_storage_event(load("storage-finalize-legacy.json")) == SAMPLE


def test_legacy_data_and_context_object_as_a_background_function_gets_them() -> None:
    legacy = load("storage-finalize-legacy.json")
    context = Context(**legacy["context"])  # what functions-framework passes to f(data, context)
    assert parse_storage_event(legacy["data"], context) == SAMPLE


def test_legacy_flattened_form_with_string_resource() -> None:
    legacy = load("storage-finalize-legacy.json")
    context = legacy["context"]
    flat = {**context, "resource": context["resource"]["name"], "data": legacy["data"]}
    assert parse_storage_event(flat) == SAMPLE


def test_cloudevent_whose_data_is_a_json_string() -> None:
    structured = load("storage-finalized-structured.json")
    data = json.dumps(structured.pop("data"))
    assert parse_storage_event(CloudEvent(structured, data)) == SAMPLE


@pytest.mark.parametrize("as_numbers", [True, False], ids=["numbers", "strings"])
def test_int64_fields_as_strings_or_numbers(as_numbers: bool) -> None:
    structured = load("storage-finalized-structured.json")
    for key in ("generation", "metageneration", "size"):
        value = structured["data"][key]
        structured["data"][key] = int(value) if as_numbers else str(value)
    assert parse_storage_event(structured) == SAMPLE


def test_optional_fields_may_be_absent() -> None:
    structured = load("storage-finalized-structured.json")
    for key in ("contentType", "timeCreated", "updated", "metageneration", "md5Hash", "kind"):
        del structured["data"][key]
    del structured["subject"]  # optional in CloudEvents, though Eventarc always sends it
    parsed = parse_storage_event(structured)
    assert (parsed.content_type, parsed.time_created, parsed.updated) == (None, None, None)
    assert (parsed.metageneration, parsed.md5_hash) == (None, None)
    assert (parsed.bucket, parsed.name, parsed.generation, parsed.size) == (
        "prodml-data",
        "incoming/batch-0001.csv",
        1714557600123456,
        48213,
    )


def test_timestamps_become_utc_and_nanoseconds_are_cut() -> None:
    structured = load("storage-finalized-structured.json")
    structured["data"]["timeCreated"] = "2024-05-01T12:00:00.123456789+02:00"
    parsed = parse_storage_event(structured)
    assert parsed.time_created == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert parsed.time_created is not None and parsed.time_created.tzinfo == UTC


# --- foreign and malformed events --------------------------------------------------------------


def test_pubsub_message_is_rejected(deliver: Callable[..., CloudEvent]) -> None:
    body = json.dumps(load("pubsub-message-published.json")).encode()
    event = deliver({"Content-Type": "application/cloudevents+json"}, body)
    with pytest.raises(
        InvalidEvent, match=r"type must be .*got 'google\.cloud\.pubsub\.topic\.v1\.messagePublished'"
    ):
        parse_storage_event(event)


def test_deleted_object_event_is_rejected(deliver: Callable[..., CloudEvent]) -> None:
    event = deliver(*binary_request(load("storage-deleted-binary.json")))
    with pytest.raises(InvalidEvent, match=r"got 'google\.cloud\.storage\.object\.v1\.deleted'"):
        parse_storage_event(event)


def test_legacy_object_change_deletion_is_rejected_though_converted_to_finalized(
    deliver: Callable[..., CloudEvent],
) -> None:
    body = json.dumps(load("storage-change-legacy-deletion.json")).encode()
    event = deliver({"Content-Type": "application/json"}, body)
    assert event["type"] == FINALIZED  # functions-framework maps object.change to finalized
    with pytest.raises(InvalidEvent, match=r"data\.resourceState is 'not_exists'"):
        parse_storage_event(event)
    # Handed over raw, its legacy type is refused.
    with pytest.raises(InvalidEvent, match=r"got 'providers/cloud\.storage/eventTypes/object\.change'"):
        parse_storage_event(load("storage-change-legacy-deletion.json"))


@pytest.mark.parametrize(
    "legacy_type",
    ["google.storage.object.delete", "google.storage.object.metadataUpdate", "google.pubsub.topic.publish"],
)
def test_other_legacy_types_are_rejected(legacy_type: str) -> None:
    legacy = load("storage-finalize-legacy.json")
    legacy["context"]["eventType"] = legacy_type
    with pytest.raises(InvalidEvent, match=rf"context\.eventType must be .*got '{legacy_type}'"):
        parse_storage_event(legacy)


def test_metadata_updated_cloudevent_is_rejected() -> None:
    structured = load("storage-finalized-structured.json")
    structured["type"] = "google.cloud.storage.object.v1.metadataUpdated"
    with pytest.raises(InvalidEvent, match=r"got 'google\.cloud\.storage\.object\.v1\.metadataUpdated'"):
        parse_storage_event(structured)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of the structured sample: set (or, for ``...``, delete) ``a.b``."""

    def mutate(event: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        target = event
        for parent in parents:
            target = target[parent]
        if value is ...:
            del target[key]
        else:
            target[key] = value

    return mutate


# (mutation of the structured sample, what the message must say: the field and the bad value)
MALFORMED = {
    "no bucket": (_set("data.bucket", ...), "data.bucket must be a non-empty string, got None"),
    "empty name": (_set("data.name", ""), "data.name must be a non-empty string, got ''"),
    "no name": (_set("data.name", ...), "data.name must be a non-empty string, got None"),
    "no generation": (_set("data.generation", ...), "data.generation is missing"),
    "generation not a number": (_set("data.generation", "12a"), "data.generation must be a whole number"),
    "generation a float": (_set("data.generation", 1.5), "got 1.5"),
    "generation a bool": (_set("data.generation", True), "data.generation must be a whole number"),
    "generation zero": (_set("data.generation", "0"), "data.generation must be >= 1, got '0'"),
    "generation unicode digits": (_set("data.generation", "١٢"), "data.generation must be a whole number"),
    "no size": (_set("data.size", ...), "data.size is missing"),
    "negative size": (_set("data.size", "-5"), "data.size must be >= 0, got '-5'"),
    "negative size number": (_set("data.size", -5), "data.size must be >= 0, got -5"),
    "bad metageneration": (_set("data.metageneration", "x"), "data.metageneration must be a whole number"),
    "content type not a string": (_set("data.contentType", 5), "data.contentType must be a string, got 5"),
    "bad timestamp": (
        _set("data.timeCreated", "yesterday"),
        "data.timeCreated must be an RFC 3339 timestamp",
    ),
    "date without time": (_set("data.updated", "2024-05-01"), "data.updated must be an RFC 3339 timestamp"),
    "time without offset": (_set("data.updated", "2024-05-01T10:00:00"), "got '2024-05-01T10:00:00'"),
    "foreign kind": (
        _set("data.kind", "storage#bucket"),
        "data.kind must be 'storage#object', got 'storage#bucket'",
    ),
    "data a list": (
        _set("data", [1, 2]),
        "data must be a JSON object (the storage object resource), got [1, 2]",
    ),
    "data not JSON": (_set("data", "not json"), "data is not JSON: 'not json'"),
    "data missing": (_set("data", ...), "data must be a JSON object"),
    "data_base64 not base64": (_set("data_base64", "%%%"), "data_base64 is not valid base64: '%%%'"),
    "no id": (_set("id", ...), "id must be a non-empty string, got None"),
    "old specversion": (_set("specversion", "0.3"), "specversion must be '1.0'"),
    "subject of another object": (
        _set("subject", "objects/incoming/other.csv"),
        "subject must be 'objects/incoming/batch-0001.csv' to match data.name, "
        "got 'objects/incoming/other.csv'",
    ),
    "subject without prefix": (_set("subject", "incoming/batch-0001.csv"), "got 'incoming/batch-0001.csv'"),
    "source of another bucket": (
        _set("source", "//storage.googleapis.com/projects/_/buckets/other"),
        "source names bucket 'other' but data.bucket is 'prodml-data'",
    ),
    "source with the object in it": (
        _set(
            "source",
            "//storage.googleapis.com/projects/_/buckets/prodml-data/objects/incoming/batch-0001.csv",
        ),
        "source must be '//storage.googleapis.com/projects/_/buckets/<bucket>'",
    ),
    "source of another service": (
        _set("source", "//pubsub.googleapis.com/projects/_/buckets/prodml-data"),
        "got '//pubsub.googleapis.com/projects/_/buckets/prodml-data'",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_events_are_rejected_naming_field_and_value(case: str) -> None:
    mutate, message = MALFORMED[case]
    event = load("storage-finalized-structured.json")
    mutate(event)
    with pytest.raises(InvalidEvent) as caught:
        parse_storage_event(event)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _set("context.resource.name", "projects/_/buckets/prodml-data/objects/other.csv"),
            "context.resource names prodml-data/other.csv but data names prodml-data/incoming/batch-0001.csv",
        ),
        (_set("context.resource.name", "buckets/prodml-data"), "got 'buckets/prodml-data'"),
        (_set("context.resource.service", "pubsub.googleapis.com"), "got 'pubsub.googleapis.com'"),
        (_set("context.eventId", ""), "context.eventId must be a non-empty string, got ''"),
        (_set("context", "finalize"), "context must be a dict or a Context object, got str"),
        (_set("data", None), "data must be a JSON object (the storage object resource), got None"),
    ],
)
def test_malformed_legacy_events_are_rejected(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    legacy = load("storage-finalize-legacy.json")
    mutate(legacy)
    with pytest.raises(InvalidEvent) as caught:
        parse_storage_event(legacy)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"bucket": "prodml-data", "name": "x"}, "keys were ['bucket', 'name']"),
        (42, "cannot read an event of type int"),
        (b"{}", "cannot read an event of type bytes"),
    ],
)
def test_things_that_are_not_events(event: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_storage_event(event)


def test_huge_bad_values_are_cut_short_in_the_message() -> None:
    structured = load("storage-finalized-structured.json")
    structured["data"]["generation"] = "9" * 10_000 + "x"
    with pytest.raises(InvalidEvent) as caught:
        parse_storage_event(structured)
    assert len(str(caught.value)) < 400
    assert "(10003 chars)" in str(caught.value)


# --- building what Eventarc sends, and the round trip ------------------------------------------

INFO = ObjectInfo(
    bucket="prodml-data",
    name="incoming/batch-0001.csv",
    size=48213,
    generation=1714557600123456,
    content_type="text/csv",
    updated=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
)


def expected_from(info: ObjectInfo, event_id: str) -> StorageObjectEvent:
    """What a function must see for ``info``: md5 is unknown to the builder, so absent."""
    updated = info.updated if info.updated.tzinfo else info.updated.replace(tzinfo=UTC)
    return StorageObjectEvent(
        bucket=info.bucket,
        name=info.name,
        generation=info.generation,
        size=info.size,
        content_type=info.content_type,
        time_created=updated,
        updated=updated,
        event_id=event_id,
        event_type=FINALIZED,
        metageneration=1,
        md5_hash=None,
    )


def test_build_cloudevent_matches_the_real_request_shape() -> None:
    sample = load("storage-finalized-binary.json")
    headers, body = build_cloudevent(INFO, event_id="10452355432411847")
    # Same headers and values as the sample, except the time: Eventarc stamps its own, shortly after.
    assert {k: v for k, v in headers.items() if k != "ce-time"} == {
        k: v for k, v in sample["headers"].items() if k != "ce-time"
    }
    assert headers["ce-time"] == "2024-05-01T10:00:00.123Z"
    # The body is the sample's object resource, minus the hashes that need the object's bytes.
    expected_body = {k: v for k, v in sample["body"].items() if k not in ("md5Hash", "crc32c")}
    assert json.loads(body) == expected_body
    assert storage_object_data(INFO) == expected_body


def test_etag_is_the_real_gcs_encoding() -> None:
    # From the functions-framework conformance sample: generation 1587627537231057, metageneration 1.
    info = ObjectInfo("some-bucket", "folder/Test.cs", 352, 1587627537231057, "text/plain", INFO.updated)
    assert storage_object_data(info)["etag"] == "CNHZkbuF/ugCEAE="


def test_event_ids_are_fresh_unless_given() -> None:
    ids = {build_cloudevent(INFO)[0]["ce-id"] for _ in range(100)}
    assert len(ids) == 100
    # A redelivery passes the same id and gets the very same request.
    assert build_cloudevent(INFO, event_id="retry-me") == build_cloudevent(INFO, event_id="retry-me")


@pytest.mark.parametrize(
    "info",
    [
        INFO,
        # Spaces, non-ASCII and '%' in the name travel percent-encoded in ce-subject.
        ObjectInfo("prodml-data", "incoming/données 2024 100%.csv", 0, 1, None, INFO.updated),
        # A local store's microsecond mtime survives; a naive time is taken as UTC.
        ObjectInfo(
            "prodml-artifacts",
            "models/current.skops",
            7,
            42,
            "application/octet-stream",
            datetime(2024, 5, 1, 10, 0, 0, 123456),
        ),
        # Another zone is told in UTC.
        ObjectInfo(
            "prodml-data",
            "incoming/a.jsonl",
            12,
            3,
            "application/jsonl",
            datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
    ids=["plain", "unicode-space-percent", "naive-microseconds", "other-zone"],
)
def test_round_trip_through_a_real_functions_framework_app(
    info: ObjectInfo, deliver: Callable[..., CloudEvent]
) -> None:
    headers, body = build_cloudevent(info, event_id="evt-1")
    assert all(value.isascii() for value in headers.values())  # HTTP headers must be
    event = deliver(headers, body)
    parsed = parse_storage_event(event)
    assert parsed == expected_from(info, "evt-1")


def test_subject_header_is_percent_encoded_and_parses_either_way() -> None:
    info = ObjectInfo("prodml-data", "incoming/données 2024 100%.csv", 0, 1, None, INFO.updated)
    headers, _ = build_cloudevent(info)
    assert headers["ce-subject"] == "objects/incoming/donn%C3%A9es%202024%20100%25.csv"
    # A sender that puts the raw name in the subject (curl examples do) is accepted too.
    structured = load("storage-finalized-structured.json")
    structured["data"]["name"] = "incoming/a b.csv"
    structured["subject"] = "objects/incoming/a b.csv"
    assert parse_storage_event(structured).name == "incoming/a b.csv"


def test_content_type_absent_when_the_object_has_none() -> None:
    info = ObjectInfo("prodml-data", "incoming/raw", 3, 5, None, INFO.updated)
    assert "contentType" not in storage_object_data(info)
    assert parse_storage_event(to_cloudevent(info)).content_type is None


def test_to_cloudevent_is_what_the_function_would_be_handed(deliver: Callable[..., CloudEvent]) -> None:
    made = to_cloudevent(INFO, event_id="evt-2")
    handed = deliver(*build_cloudevent(INFO, event_id="evt-2"))
    assert made.get_attributes() == handed.get_attributes()
    assert made.data == handed.data
    assert parse_storage_event(made) == expected_from(INFO, "evt-2")


def test_samples_are_not_modified_by_parsing() -> None:
    structured = load("storage-finalized-structured.json")
    before = copy.deepcopy(structured)
    parse_storage_event(structured)
    assert structured == before
