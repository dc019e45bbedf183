"""predict: the online serving HTTP function (static, dynamic or hybrid by ``SERVING_MODE``).

- ``POST /`` with ``{"instances": [{feature: value, ...}, ...], "ids": [...]}`` (``ids``
  optional, one string per instance; ``application/json``) answers ``{"predictions": [{"id",
  "score", "source", "label"}, ...], "model_version": ...}`` (plus ``"classes"`` for a
  multiclass model: each score is then a list in that order); each served prediction also goes
  to the prediction log (``shared.feedback.prediction_log``);
- ``GET /health`` reports the mode, model, table and counters.

Bad input is a 4xx with the error body of docs/design.md section 5; no model (or, in static mode, no
table) yet is a 503 with ``Retry-After``: the client should retry, the platform should not. A
500 means a real server fault and is logged with its traceback. All the logic lives in
``shared.serving.predictor``; this file only reads the request and shapes the answer.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import flask
import functions_framework

from shared.config import get_settings
from shared.errors import BadRequest, ModelNotReady, ProdMLError
from shared.logs import get_logger, setup_logging
from shared.serving.predictor import Predictor
from shared.storage import artifacts_bucket, predictions_bucket

_settings = get_settings()
setup_logging(_settings.log_format, _settings.log_level)
log = get_logger("functions.predict")

_predictor: Predictor | None = None
_predictor_lock = threading.Lock()

_ROUTES = {"/": "POST", "/health": "GET"}


def _get_predictor() -> Predictor:
    """The instance's one Predictor, made on first use (opening a bucket touches no storage)."""
    global _predictor
    if _predictor is None:
        with _predictor_lock:
            if _predictor is None:
                # The prediction log goes to its own bucket, which has no trigger (docs/design.md
                # section 5); PREDICTION_LOG_RATE=0 keeps it off.
                _predictor = Predictor(
                    artifacts_bucket(_settings), _settings, predictions=predictions_bucket(_settings)
                )
    return _predictor


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> flask.Response:
    """Every answer's body, encoded here and only here, so that any text it echoes encodes.

    JSON text may hold a lone surrogate (``"\\ud800"`` parses to one), and an error message or
    ``field`` that echoes it cannot be UTF-8 encoded: Werkzeug's encode of the Response would
    raise, and the client would get functions-framework's bare HTML 500. ``backslashreplace``
    writes such a code point as ``\\udXXX``, a JSON escape (it can only occur inside a JSON
    string), so the answer stays valid UTF-8 JSON that parses back to the text received.
    """
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return flask.Response(
        text.encode("utf-8", "backslashreplace"),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def _error(exc: ProdMLError, headers: dict[str, str] | None = None) -> flask.Response:
    """The answer to ``exc``: its error body (docs/design.md section 5) with its own status."""
    response = _json(exc.http_status, exc.to_dict(), headers)
    if exc.http_status == 413:
        # Flask would otherwise read the rest of an oversized body into memory after we answer
        # (functions-framework's read_request hook); a streamed response skips that hook.
        payload = response.get_data()
        response = flask.Response(iter([payload]), status=413, mimetype="application/json", headers=headers)
    return response


def _read_body(request: flask.Request, limit: int) -> bytes:
    """The body, read at most ``limit`` bytes whatever Content-Length says (or if it is absent)."""
    too_big = BadRequest(
        f"body is larger than MAX_BODY_BYTES={limit} bytes", code="body_too_large", status=413
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_big
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise too_big
    return body


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    """Route ``POST /`` to prediction and ``GET /health`` to the health report."""
    predictor = _get_predictor()
    try:
        body = _read_body(request, _settings.max_body_bytes)  # first, so no answer leaves it unread
        allowed = _ROUTES.get(request.path)
        if allowed is None:
            raise BadRequest(
                f"no such path {request.path[:100]!r}; use POST / or GET /health",
                code="not_found",
                status=404,
            )
        if request.method != allowed:
            exc = BadRequest(
                f"method {request.method} is not allowed on {request.path}; use {allowed}",
                code="method_not_allowed",
                status=405,
            )
            predictor.counters.add(client_errors=1)
            return _error(exc, {"Allow": allowed})
        if allowed == "GET":
            return _json(200, predictor.health())
        if request.mimetype != "application/json":
            raise BadRequest(
                f"content type {request.content_type!r} is not supported; send application/json",
                code="unsupported_media_type",
                status=415,
            )
        return _json(200, predictor.predict(body))
    except BadRequest as exc:
        predictor.counters.add(client_errors=1)
        return _error(exc)
    except ModelNotReady as exc:
        predictor.counters.add(not_ready=1)
        # The client should retry (the platform should not): by the next reload a model may be in.
        return _error(exc, {"Retry-After": str(max(1, math.ceil(_settings.reload_seconds)))})
    except Exception:  # a real server fault: input never gets here (every check is a BadRequest)
        predictor.counters.add(server_errors=1)
        log.exception("predict failed", extra={"fields": {"path": request.path[:100]}})
        # The base error: a 500 with code "internal", and no detail a client could misuse.
        return _error(ProdMLError("internal error; see the function's logs"))
