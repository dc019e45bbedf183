"""build_table: (re)build the static prediction table, on model promotion or on request.

Two entry points on one builder (``shared.tables.build.build_table``), routed by
``shared.pipelines.launch.build_table_routed``: in-process when the key space fits the measured
budget, else a Beam pipeline (DirectRunner locally, Dataflow on GCP); the log and the answer's
``path`` say which and why (docs/scale-out.md).

- ``on_model_promoted``: a CloudEvent function on the artifacts bucket. Eventarc cannot filter by
  object name, so every finalized object arrives; all but ``models/current.skops`` are ignored
  (answered 2xx), and so is an event of an older generation than the live one (its newer
  generation's own event builds the table). A transient storage fault (``shared.errors.is_transient``)
  raises, so the platform redelivers, and so does an unexpected error (a bug); every other error
  is logged and answered 2xx. The build is idempotent per model generation, so a redelivery
  builds nothing new.
  A delivery functions-framework itself cannot parse is answered 2xx with a log line too
  (``shared.event_guard``).
- ``build_table_http``: ``POST {"strategy": "full"|"top_k"|"auto", "k": N, "force": bool}`` for
  a scheduler or a person; answers a JSON summary, or an error with the shape of docs/design.md
  section 5 and the error's own status: 4xx for a bad body, 409 for a model or setting no retry
  can fix (``unusable_model``, ``misconfigured``), 500 for a failed pipeline (``pipeline_failed``).
"""

from __future__ import annotations

import json
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from functions_framework import event_conversion

from shared.config import get_settings
from shared.contracts import CURRENT_MODEL, TableStrategy
from shared.errors import (
    BadRequest,
    ConfigError,
    InvalidObjectName,
    PipelineFailed,
    ProdMLError,
    SchemaError,
    TableError,
    UnusableModel,
    is_transient,
)
from shared.event_guard import guard_event_parsing, read_storage_event
from shared.logs import get_logger, setup_logging
from shared.pipelines.launch import build_table_routed
from shared.storage import artifacts_bucket
from shared.tables.plan import BuildRequest, parse_build_request
from shared.tables.switch import superseded_by

MAX_BODY_BYTES = 4096  # a build request is a few short fields

_settings = get_settings()
setup_logging(_settings.log_format, _settings.log_level)
log = get_logger("functions.build_table")

if flask.has_app_context():  # functions-framework is building its app around this module
    guard_event_parsing(
        flask.current_app,
        flask.request,
        event_conversion.background_event_to_cloud_event,
        "build_table_event",
    )


@functions_framework.cloud_event
def on_model_promoted(cloud_event: CloudEvent) -> None:
    """Rebuild the table when ``models/current.skops`` is finalized; ignore every other object."""
    event = read_storage_event(cloud_event, log)
    if event is None:
        return
    if event.bucket != _settings.artifacts_bucket or event.name != CURRENT_MODEL:
        log.debug(f"ignored gs://{event.bucket}/{event.name}: not {CURRENT_MODEL}")
        return
    artifacts = artifacts_bucket(_settings)
    newer = superseded_by(artifacts, event.generation)
    if newer is not None:  # a stale event (burst of promotions, rollbacks): 2xx, nothing to build
        log.info(
            f"build_table for model generation {event.generation}: superseded by generation {newer}, "
            "whose own event builds it",
            extra={"fields": {"event_id": event.event_id, "generation": event.generation, "live": newer}},
        )
        return
    try:
        # In-process when the key space fits the budget, else a Beam pipeline (shared.pipelines).
        result = build_table_routed(artifacts, _settings, BuildRequest(strategy=TableStrategy.AUTO)).to_dict()
    except ProdMLError as exc:
        if is_transient(exc):
            raise  # a storage fault: the platform redelivers, and the build is idempotent
        # A redelivery would meet the same model and fail the same way: answer 2xx, say why.
        log.error(f"table not built for model generation {event.generation}: {exc}")
        return
    log.info(
        f"build_table for model generation {event.generation}: {result['status']}: {result['message']}",
        extra={"fields": {"event_id": event.event_id, **result}},
    )


@functions_framework.http
def build_table_http(request: flask.Request) -> tuple[dict[str, Any], int]:
    """Build the table as the JSON body asks (see the module docstring); answer a summary."""
    try:
        build = _parse(request)
        result = build_table_routed(artifacts_bucket(_settings), _settings, build).to_dict()
    except BadRequest as exc:
        return _refusal(exc)
    except (SchemaError, TableError, InvalidObjectName) as exc:
        # The stored model (its schema, its version as a table name) is unusable: say what to fix.
        return _refusal(UnusableModel(str(exc)))
    except (ConfigError, PipelineFailed) as exc:
        # Misconfigured (no Beam interpreter, Dataflow settings missing), or the scale-out pipeline
        # ran and failed (docs/scale-out.md): the operator's to fix, so logged too.
        log.error(f"build_table: {exc}")
        return _refusal(exc)
    log.info(f"build_table: {result['status']}: {result['message']}", extra={"fields": result})
    return result, 200


def _refusal(exc: ProdMLError) -> tuple[dict[str, Any], int]:
    """The answer to ``exc``: its error body and its own status."""
    return exc.to_dict(), exc.http_status


def _parse(request: flask.Request) -> BuildRequest:
    """The build request of an HTTP request; ``BadRequest`` for anything malformed."""
    if request.method != "POST":
        raise BadRequest(
            f"method {request.method} not allowed: POST a JSON body", code="method_not_allowed", status=405
        )
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BadRequest(
            f"body of {request.content_length} bytes is over {MAX_BODY_BYTES}",
            code="body_too_large",
            status=413,
        )
    raw = request.get_data(cache=False)[: MAX_BODY_BYTES + 1]
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"body is over {MAX_BODY_BYTES} bytes", code="body_too_large", status=413)
    if not raw.strip():
        return parse_build_request(None, _settings.table_max_rows)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="malformed_json") from None
    return parse_build_request(body, _settings.table_max_rows)
