"""The train function: a CloudEvent function on the data bucket (docs/design.md sections 1, 4).

Eventarc delivers "object finalized" events for every object of the data bucket; this entry point
parses the event and hands it to ``shared.training.on_event.handle_event``, which validates the file,
quarantines it or trains a challenger, and promotes it if it is not worse. A malformed event is
logged and answered 2xx (it would not get better on retry), also one functions-framework itself
cannot parse (``shared.event_guard``); only transient faults raise (``shared.errors.is_transient``),
so the platform retries exactly what a retry can fix.
"""

from __future__ import annotations

import flask
import functions_framework
from cloudevents.http import CloudEvent
from functions_framework import event_conversion

from shared.config import get_settings
from shared.errors import InvalidObjectName, ProdMLError, is_transient
from shared.event_guard import guard_event_parsing, read_storage_event
from shared.events import StorageObjectEvent
from shared.logs import get_logger, setup_logging
from shared.training.event_job import record_error
from shared.training.on_event import handle_event

_settings = get_settings()
setup_logging(_settings.log_format, _settings.log_level)
log = get_logger("functions.train")

if flask.has_app_context():  # functions-framework is building its app around this module
    guard_event_parsing(
        flask.current_app, flask.request, event_conversion.background_event_to_cloud_event, "train"
    )


@functions_framework.cloud_event
def on_data_file(cloud_event: CloudEvent) -> None:
    """Process one data file event; return normally (2xx) unless a retry can help."""
    event = read_storage_event(cloud_event, log)
    if event is None:
        return
    try:
        handle_event(event, _settings)
    except InvalidObjectName as exc:
        log.error(f"ignoring an event for an object name this system refuses: {exc}")
    except Exception as exc:
        if is_transient(exc):
            raise  # a 5xx makes the platform deliver the event again
        _record_failure(event, exc)


def _record_failure(event: StorageObjectEvent, exc: Exception) -> None:
    """Answer a non-transient fault 2xx, but record it where `prodml monitor` shows it.

    Retrying cannot help (docs/design.md section 4: raise only for transient faults). No "done"
    marker is written, so `prodml replay` runs the file again after a fix; the record says why.
    """
    if isinstance(exc, ProdMLError):  # a bad ESTIMATOR setting, ...: the message says what to fix
        log.error(f"could not process {event.name!r}@{event.generation}: {exc}")
    else:  # a bug, or a model the estimator chokes on: the traceback says where
        log.exception(f"unexpected error on {event.name!r}@{event.generation}; left for `prodml replay`")
    record_error(event, exc, _settings)
