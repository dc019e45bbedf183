"""The train function: a CloudEvent function on the data bucket (docs/design.md sections 1, 4).

Eventarc delivers "object finalized" events for every object of the data bucket; this entry point
parses the event and hands it to ``shared.training.on_event.handle_event``, which validates the file,
quarantines it or trains a challenger, and promotes it if it is not worse. A malformed event is
logged and answered 2xx (it would not get better on retry), also one functions-framework itself
cannot parse (``shared.event_guard``); only transient faults raise, so the platform retries
exactly what a retry can fix.
"""

from __future__ import annotations

import flask
import functions_framework
from cloudevents.http import CloudEvent
from functions_framework import event_conversion

from shared.config import get_settings
from shared.errors import InvalidEvent, InvalidObjectName, ProdMLError, StorageError
from shared.event_guard import guard_event_parsing
from shared.events import parse_storage_event
from shared.logs import get_logger, setup_logging
from shared.training.event_job import record_error
from shared.training.on_event import RetryLater, handle_event

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
    try:
        event = parse_storage_event(cloud_event)
    except InvalidEvent as exc:
        log.error(f"ignoring a malformed event: {exc}")
        return
    try:
        handle_event(event, _settings)
    except InvalidObjectName as exc:
        log.error(f"ignoring an event for an object name this system refuses: {exc}")
    except (StorageError, RetryLater, OSError):
        raise  # transient: a 5xx makes the platform deliver the event again
    except ProdMLError as exc:
        # Not transient (a bad ESTIMATOR setting, ...): retrying cannot help. No "done" marker is
        # written, so `prodml replay` can run the file again after a fix; the record says why.
        log.error(f"could not process {event.name!r}@{event.generation}: {exc}")
        record_error(event, exc, _settings)
    except Exception as exc:
        # A bug or a model the estimator chokes on: retrying forever would not help either
        # (docs/design.md section 4: raise only for transient faults). Answered 2xx, but recorded
        # where `prodml monitor` shows it, and left for `prodml replay`.
        log.exception(f"unexpected error on {event.name!r}@{event.generation}; left for `prodml replay`")
        record_error(event, exc, _settings)
