"""Cloud Storage "object finalized" events, both ways (docs/design.md sections 4 and 6).

``parse_storage_event`` turns whatever a function is handed into one ``StorageObjectEvent``:

- a ``cloudevents`` CloudEvent, as functions-framework hands it to a ``@cloud_event`` function
  (from an Eventarc request in binary or structured content mode, or converted by
  functions-framework from a legacy background event);
- a plain dict in CloudEvents structured form (``{"specversion", "type", "source", "subject", "id",
  "data": {...}}``);
- a legacy background event: ``{"data": {...}, "context": {...}}`` (also the flattened form with
  ``eventId``/``eventType``/``resource`` at the top), or ``data`` and ``context`` given apart, the
  context a dict or a ``google.cloud.functions.Context``.

Anything else, or anything inconsistent, raises ``InvalidEvent`` naming the field and its value.

The other direction, ``storage_object_data`` / ``build_cloudevent`` / ``to_cloudevent``, makes the
event Eventarc would send for an object, so the local file-drop router delivers exactly what the
functions get in the cloud.

Nothing here imports flask or functions_framework: ``shared`` stays free of framework code.

The module stays whole at about 390 lines: parsing and building are the two sides of one wire
format, kept side by side (sections marked below) so that what the router sends is what the
functions parse; tests/test_events.py round-trips one through the other.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from cloudevents.abstract import CloudEvent as AnyCloudEvent
from cloudevents.http import CloudEvent, from_http

from shared.errors import InvalidEvent
from shared.storage.base import ObjectInfo

FINALIZED = "google.cloud.storage.object.v1.finalized"
"""The one CloudEvent type the storage-triggered functions take."""

LEGACY_FINALIZE = "google.storage.object.finalize"
"""The same event as a legacy (1st gen) background event; functions-framework maps it to FINALIZED."""

STORAGE_SERVICE = "storage.googleapis.com"

# Eventarc's source names the bucket only; the object goes in the subject. The project is always
# "_" for Cloud Storage (bucket names are global). Bucket names never need escaping.
_SOURCE_RE = re.compile(r"//storage\.googleapis\.com/projects/_/buckets/(?P<bucket>[^/]+)")
_LEGACY_RESOURCE_RE = re.compile(r"projects/_/buckets/(?P<bucket>[^/]+)/objects/(?P<name>.+)", re.DOTALL)
_SUBJECT_PREFIX = "objects/"
# JSON carries int64 as strings ("1587627537231057"); only plain ASCII digits are a number here
# (str.isdigit would also let through "²" or Arabic-Indic digits).
_DIGITS_RE = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class StorageObjectEvent:
    """One "object finalized" event: which object version was written, and the event's identity.

    ``event_type`` is always the CloudEvent type (``FINALIZED``), whichever form the event came
    in, so the same delivery parses to the same value from any form. ``event_id`` is kept as sent:
    a redelivery carries the same id.
    """

    bucket: str
    name: str
    generation: int
    size: int
    content_type: str | None
    time_created: datetime | None
    updated: datetime | None
    event_id: str
    event_type: str
    metageneration: int | None = None
    md5_hash: str | None = None


# --- parsing -----------------------------------------------------------------------------------


def parse_storage_event(event: object, context: object | None = None) -> StorageObjectEvent:
    """Parse an "object finalized" event in any form a function may be handed (see module doc).

    ``context`` is for the legacy call signature ``f(data, context)``: then ``event`` is the data.
    Raises ``InvalidEvent`` for a foreign event type, a malformed event, or one whose envelope
    (source, subject, resource) disagrees with its data.
    """
    if context is not None:
        return _parse_legacy(event, context)
    if isinstance(event, AnyCloudEvent):
        return _parse_cloudevent(dict(event.get_attributes()), event.get_data())
    if isinstance(event, Mapping):
        if "specversion" in event:
            attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
            return _parse_cloudevent(attributes, _structured_data(event))
        if "context" in event:
            return _parse_legacy(event.get("data"), event["context"])
        if "eventType" in event:
            # The flattened legacy form (v1beta1): context fields beside "data" at the top level.
            return _parse_legacy(event.get("data"), event)
        raise InvalidEvent(
            "not a storage event: a dict with neither 'specversion' (CloudEvent) nor 'context' "
            f"(background event); keys were {sorted(map(str, event))}"
        )
    raise InvalidEvent(f"not a storage event: cannot read an event of type {type(event).__name__}")


def _structured_data(event: Mapping[str, Any]) -> Any:
    """The data of a structured-mode CloudEvent dict: ``data``, or ``data_base64`` decoded."""
    if "data_base64" in event:
        try:
            return base64.b64decode(event["data_base64"], validate=True)
        except (ValueError, TypeError) as e:
            raise InvalidEvent(f"data_base64 is not valid base64: {_show(event['data_base64'])}") from e
    return event.get("data")


def _parse_cloudevent(attributes: Mapping[str, Any], raw_data: Any) -> StorageObjectEvent:
    """Check a CloudEvent's attributes against Eventarc's storage event, then read its data."""
    specversion = attributes.get("specversion")
    if specversion != "1.0":
        raise InvalidEvent(f"specversion must be '1.0' (what Eventarc sends), got {_show(specversion)}")
    event_type = attributes.get("type")
    if event_type != FINALIZED:
        raise InvalidEvent(f"type must be {FINALIZED!r}, got {_show(event_type)}")
    event_id = _require_str(attributes.get("id"), "id")

    data = _data_object(raw_data)
    # A legacy "object.change" event that reports a deletion is converted by functions-framework
    # into a CloudEvent of type FINALIZED; only its data tells that the object is gone.
    if data.get("resourceState") == "not_exists":
        raise InvalidEvent("data.resourceState is 'not_exists': this reports a deleted object, not a new one")
    parsed = _parse_data(data, event_id=event_id)

    source = attributes.get("source")
    match = _SOURCE_RE.fullmatch(source) if isinstance(source, str) else None
    if match is None:
        raise InvalidEvent(
            f"source must be '//storage.googleapis.com/projects/_/buckets/<bucket>', got {_show(source)}"
        )
    if match["bucket"] != parsed.bucket:
        raise InvalidEvent(f"source names bucket {match['bucket']!r} but data.bucket is {parsed.bucket!r}")

    # The subject is optional in CloudEvents; Eventarc always sends it. When present it must name
    # the same object. A sender following the CloudEvents HTTP binding percent-encodes header
    # values outside printable ASCII (as build_cloudevent does), and the SDK does not decode them,
    # so both spellings are accepted.
    subject = attributes.get("subject")
    if subject is not None:
        expected = _SUBJECT_PREFIX + parsed.name
        if not isinstance(subject, str) or (subject != expected and unquote(subject) != expected):
            raise InvalidEvent(f"subject must be {expected!r} to match data.name, got {_show(subject)}")
    return parsed


def _parse_legacy(raw_data: Any, context: object) -> StorageObjectEvent:
    """Check a legacy background event's context, then read its data."""
    if isinstance(context, Mapping):
        event_type = context.get("eventType")
        event_id = context.get("eventId")
        resource = context.get("resource")
    elif hasattr(context, "event_type"):
        # google.cloud.functions.Context, as functions-framework passes it to f(data, context).
        event_type = getattr(context, "event_type", None)
        event_id = getattr(context, "event_id", None)
        resource = getattr(context, "resource", None)
    else:
        raise InvalidEvent(f"context must be a dict or a Context object, got {type(context).__name__}")

    if event_type != LEGACY_FINALIZE:
        raise InvalidEvent(
            f"context.eventType must be {LEGACY_FINALIZE!r} (or the CloudEvent type {FINALIZED!r}), "
            f"got {_show(event_type)}"
        )
    event_id = _require_str(event_id, "context.eventId")
    parsed = _parse_data(_data_object(raw_data), event_id=event_id)

    if isinstance(resource, Mapping):
        service = resource.get("service")
        if service is not None and service != STORAGE_SERVICE:
            raise InvalidEvent(f"context.resource.service must be {STORAGE_SERVICE!r}, got {_show(service)}")
        resource_name = resource.get("name")
    else:
        resource_name = resource
    match = _LEGACY_RESOURCE_RE.fullmatch(resource_name) if isinstance(resource_name, str) else None
    if match is None:
        raise InvalidEvent(
            "context.resource name must be 'projects/_/buckets/<bucket>/objects/<name>', "
            f"got {_show(resource_name)}"
        )
    if (match["bucket"], match["name"]) != (parsed.bucket, parsed.name):
        raise InvalidEvent(
            f"context.resource names {match['bucket']}/{match['name']} "
            f"but data names {parsed.bucket}/{parsed.name}"
        )
    return parsed


def _data_object(raw: Any) -> dict[str, Any]:
    """The event data as a dict. The SDK leaves a body it could not decode as JSON as bytes or str
    (say, sent without a JSON content type), so those are decoded here."""
    if isinstance(raw, bytes | bytearray | str):
        try:
            raw = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidEvent(f"data is not JSON: {_show(raw)}") from e
    if not isinstance(raw, dict):
        raise InvalidEvent(f"data must be a JSON object (the storage object resource), got {_show(raw)}")
    return raw


def _parse_data(data: Mapping[str, Any], *, event_id: str) -> StorageObjectEvent:
    """Read the storage object JSON resource (https://cloud.google.com/storage/docs/json_api)."""
    kind = data.get("kind")
    if kind is not None and kind != "storage#object":
        raise InvalidEvent(f"data.kind must be 'storage#object', got {_show(kind)}")
    return StorageObjectEvent(
        bucket=_require_str(data.get("bucket"), "data.bucket"),
        name=_require_str(data.get("name"), "data.name"),
        generation=_require_int(data, "generation", minimum=1),
        size=_require_int(data, "size", minimum=0),
        content_type=_optional_str(data, "contentType"),
        time_created=_optional_time(data, "timeCreated"),
        updated=_optional_time(data, "updated"),
        event_id=event_id,
        event_type=FINALIZED,
        metageneration=_optional_int(data, "metageneration", minimum=1),
        md5_hash=_optional_str(data, "md5Hash"),
    )


def _require_str(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field} must be a non-empty string, got {_show(value)}")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"data.{key} must be a string, got {_show(value)}")
    return value


def _require_int(data: Mapping[str, Any], key: str, *, minimum: int) -> int:
    value = _optional_int(data, key, minimum=minimum)
    if value is None:
        raise InvalidEvent(f"data.{key} is missing")
    return value


def _optional_int(data: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    """An int64 field: a JSON string of digits (what GCS sends) or a JSON integer (what some samples
    and hand-written events send). Not a float, not a bool (bool is an int in Python)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value):
        number = int(value)
    else:
        raise InvalidEvent(f"data.{key} must be a whole number (or a string of digits), got {_show(value)}")
    if number < minimum:
        raise InvalidEvent(f"data.{key} must be >= {minimum}, got {_show(value)}")
    return number


def _optional_time(data: Mapping[str, Any], key: str) -> datetime | None:
    """An RFC 3339 timestamp, as an aware UTC datetime. Nanosecond fractions are cut to microseconds."""
    value = data.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    # RFC 3339 requires a time and an offset; a naive result means one of them was missing.
    if parsed is None or parsed.tzinfo is None:
        raise InvalidEvent(f"data.{key} must be an RFC 3339 timestamp, got {_show(value)}")
    return parsed.astimezone(UTC)


def _show(value: Any, limit: int = 200) -> str:
    """``repr`` of a bad value for an error message, cut short so a huge body cannot flood a log."""
    return cut_short(repr(value), limit)


def cut_short(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how long it was: a message about a
    delivery quotes it, and a hostile body must not flood the log."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --- building ----------------------------------------------------------------------------------


def storage_object_data(info: ObjectInfo) -> dict[str, str]:
    """The storage object JSON resource GCS puts in a finalized event's data, for ``info``.

    int64 fields are strings, as GCS sends them. ``timeCreated`` is ``updated``: a finalize event
    is about a new generation, and each generation is created when it is written. Fields that need
    the object's bytes (``md5Hash``, ``crc32c``) are left out, as GCS leaves ``md5Hash`` out of
    composite objects; ``contentType`` is left out when the object has none, as GCS does.
    """
    quoted = quote(info.name, safe="")
    when = _rfc3339(info.updated)
    data = {
        "kind": "storage#object",
        "id": f"{info.bucket}/{info.name}/{info.generation}",
        "selfLink": f"https://www.googleapis.com/storage/v1/b/{info.bucket}/o/{quoted}",
        "mediaLink": (
            f"https://storage.googleapis.com/download/storage/v1/b/{info.bucket}/o/{quoted}"
            f"?generation={info.generation}&alt=media"
        ),
        "name": info.name,
        "bucket": info.bucket,
        "generation": str(info.generation),
        "metageneration": "1",  # a freshly written generation has had no metadata updates
        "contentType": info.content_type,
        "storageClass": "STANDARD",
        "size": str(info.size),
        "etag": _etag(info.generation, 1),
        "timeCreated": when,
        "updated": when,
        "timeStorageClassUpdated": when,
    }
    return {key: value for key, value in data.items() if value is not None}


def build_cloudevent(info: ObjectInfo, event_id: str | None = None) -> tuple[dict[str, str], bytes]:
    """The HTTP headers and body Eventarc POSTs for ``info`` being finalized, in binary content mode.

    ``event_id`` defaults to a fresh unique id; pass the same id again for a redelivery (Eventarc
    keeps the id when it retries). Header values outside printable ASCII (and space, ``"``, ``%``)
    are percent-encoded as the CloudEvents HTTP binding requires, so any object name can travel in
    ``ce-subject``; ``parse_storage_event`` accepts the subject either way.
    """
    headers = {
        "ce-specversion": "1.0",
        "ce-type": FINALIZED,
        "ce-source": _header_value(f"//{STORAGE_SERVICE}/projects/_/buckets/{info.bucket}"),
        "ce-subject": _header_value(_SUBJECT_PREFIX + info.name),
        "ce-id": event_id if event_id is not None else str(uuid.uuid4()),
        "ce-time": _rfc3339(info.updated),
        "Content-Type": "application/json",
    }
    body = json.dumps(storage_object_data(info)).encode("utf-8")
    return headers, body


def to_cloudevent(info: ObjectInfo, event_id: str | None = None) -> CloudEvent:
    """The CloudEvent a ``@cloud_event`` function is handed for ``info`` (for tests and tools).

    Made by reading ``build_cloudevent``'s request back with the same SDK call functions-framework
    uses, so it is exactly what the function would get.
    """
    headers, body = build_cloudevent(info, event_id)
    return from_http(headers, body)


def _rfc3339(moment: datetime) -> str:
    """UTC with a ``Z``, milliseconds like GCS; microseconds only when there are some to keep, so a
    local store's finer mtimes survive the round trip. A naive time is taken to be UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _etag(generation: int, metageneration: int) -> str:
    """GCS's object etag: base64 of a tiny protobuf (field 1 generation, field 2 metageneration),
    e.g. "CNHZkbuF/ugCEAE=" for generation 1587627537231057, metageneration 1."""
    return base64.b64encode(b"\x08" + _varint(generation) + b"\x10" + _varint(metageneration)).decode()


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _header_value(text: str) -> str:
    """Percent-encode what the CloudEvents HTTP binding says must be: anything outside printable
    ASCII, plus space, '"' and '%' (UTF-8 first, so any name survives)."""
    return "".join(char if "!" <= char <= "~" and char not in '"%' else quote(char, safe="") for char in text)
