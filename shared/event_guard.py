"""Deliveries an event function cannot read: answered 2xx with a log line, never a 5xx.

functions-framework (3.10) turns the request of a ``@cloud_event`` function into a CloudEvent in
its own view, before the function runs: ``cloudevents.http.from_http``, and, when that finds no
CloudEvent (``MissingRequiredFields`` / ``InvalidRequiredFields``), a conversion of a legacy
background event (``event_conversion.background_event_to_cloud_event``). Anything else those two
raise escapes as a 500: a body nested 100,000 levels deep (``RecursionError`` in ``json``), a
structured-mode event whose ``data_base64`` is not base64 (``DataUnmarshallerError``), a legacy
event whose context is not an object (``TypeError``). What the conversion does catch becomes a
400, a body that is not JSON a 400 or 415. The platform redelivers every non-2xx answer for a
day, and none of these would ever parse.

The workaround at our boundary: ``guard_event_parsing`` registers a hook on the framework's app
that runs before its view and applies the framework's own two parsing steps to the request. When
they fail, the hook answers 200 with a log line saying why, and the view never runs. A delivery
they can read goes on to the view unchanged (it is parsed again there, a ~1 kB JSON body), where
a transient fault of our function still answers 5xx.

``read_storage_event`` does the same one step later, for the functions' own parse: a delivery
the framework could read but that is no storage event (a foreign type, a malformed envelope) is
logged and answered 2xx too.

Framework objects are passed in, not imported: ``shared`` stays free of flask and
functions_framework.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from cloudevents.exceptions import InvalidRequiredFields, MissingRequiredFields
from cloudevents.http import from_http

from shared.errors import InvalidEvent
from shared.events import StorageObjectEvent, cut_short, parse_storage_event
from shared.logs import get_logger

log = get_logger(__name__)

CLOUDEVENT_ENDPOINT = "cloudevent"
"""The Flask endpoint functions-framework (3.x) serves a ``@cloud_event`` function under (it is
named after the signature type). Only its requests are guarded: a module holding an HTTP entry
point too (build_table) is loaded for that target as well, and its requests are no events."""

IGNORED_STATUS = 200
"""The answer to a delivery that cannot be parsed: 2xx, since a redelivery would not parse either."""

_REASON_CHARS = 300  # a reason quotes the error, and a hostile body must not flood the log


class Request(Protocol):
    """What the hook reads of an incoming request (a ``flask.Request`` has it)."""

    @property
    def endpoint(self) -> str | None:
        """The endpoint the request was routed to (None when no route matched)."""
        ...

    @property
    def headers(self) -> Any:
        """The request headers (a mapping of names to values)."""
        ...

    def get_data(self) -> bytes:
        """The raw body."""
        ...


class App(Protocol):
    """The one thing the hook needs of the framework's app (a ``flask.Flask`` has it)."""

    def before_request(self, f: Callable[[], tuple[str, int] | None]) -> Any:
        """Run ``f`` before each request's view; a value it returns is the answer."""
        ...


def unreadable_reason(headers: Any, body: bytes, convert_legacy: Callable[[], object]) -> str | None:
    """Why functions-framework cannot make a CloudEvent of this delivery, or None if it can.

    ``convert_legacy`` is the framework's conversion of the same request as a legacy background
    event, tried (as the framework tries it) only when the request is no CloudEvent at all.
    ``headers`` is passed to the SDK as the framework passes it (a case-insensitive mapping).
    """
    try:
        from_http(headers, body)
        return None
    except (MissingRequiredFields, InvalidRequiredFields) as exc:
        not_cloudevent = exc
    except Exception as exc:  # any failure here is the body's fault: the SDK raises many kinds
        return cut_short(f"not a readable CloudEvent: {type(exc).__name__}: {exc}", _REASON_CHARS)
    try:
        convert_legacy()
    except Exception as exc:  # TypeError, KeyError, werkzeug's BadRequest ...: all the body's fault
        return cut_short(
            f"neither a CloudEvent ({type(not_cloudevent).__name__}: {not_cloudevent}) nor a legacy "
            f"background event ({type(exc).__name__}: {exc})",
            _REASON_CHARS,
        )
    return None


def guard_event_parsing(
    app: App, request: Request, convert_legacy: Callable[[Request], object], function: str
) -> None:
    """Register, on ``app``, the hook that answers unreadable deliveries of ``function`` (see module doc).

    ``request`` is the framework's proxy of the current request, ``convert_legacy`` its legacy
    background event conversion (``functions_framework.event_conversion``).
    """

    def refuse_unreadable() -> tuple[str, int] | None:
        if request.endpoint != CLOUDEVENT_ENDPOINT:
            return None  # an HTTP entry point's request, or no route (a GET: the framework's 405)
        body = request.get_data()
        reason = unreadable_reason(request.headers, body, lambda: convert_legacy(request))
        if reason is None:
            return None
        log.error(
            f"{function}: ignoring a delivery that cannot be parsed (a redelivery would not parse "
            f"either): {reason}",
            extra={
                "fields": {
                    "function": function,
                    "event_id": request.headers.get("ce-id"),
                    "content_type": request.headers.get("Content-Type"),
                    "body_bytes": len(body),
                }
            },
        )
        return f"ignored: the delivery cannot be parsed: {reason}\n", IGNORED_STATUS

    app.before_request(refuse_unreadable)


def read_storage_event(cloud_event: object, function_log: logging.Logger) -> StorageObjectEvent | None:
    """The storage event ``cloud_event`` carries, or None (logged on ``function_log``) when it is
    malformed or of a foreign type: the function then returns, answering 2xx, since a
    redelivery would carry the same event."""
    try:
        return parse_storage_event(cloud_event)
    except InvalidEvent as exc:
        function_log.error(f"ignoring a malformed event (a redelivery would not parse either): {exc}")
        return None
