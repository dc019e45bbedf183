"""dashboard: the read-only HTTP function with the dashboard's pages (docs/design.md section 5).

``GET /`` overview, ``/versions``, ``/versions/<version>``, ``/monitoring``, ``/live``,
``/quarantine``, ``/table``, ``/style.css``. All the logic lives in ``shared.dashboard``: this
file only reads the request (method, path, query) and shapes the answer.
"""

from __future__ import annotations

import threading

import flask
import functions_framework

from shared.config import get_settings
from shared.dashboard.routes import handle
from shared.dashboard.sources import Sources
from shared.logs import setup_logging

_settings = get_settings()
setup_logging(_settings.log_format, _settings.log_level)

_sources: Sources | None = None
_sources_lock = threading.Lock()


def _get_sources() -> Sources:
    """The instance's one Sources (its caches outlive a request; opening touches no storage)."""
    global _sources
    if _sources is None:
        with _sources_lock:
            if _sources is None:
                _sources = Sources.open(_settings)
    return _sources


@functions_framework.http
def dashboard(request: flask.Request) -> flask.Response:
    """Answer one page request (``shared.dashboard.routes.handle``)."""
    query = {key: request.args.getlist(key) for key in request.args}
    answer = handle(_get_sources(), request.method, request.path, query)
    response = flask.Response(answer.body, status=answer.status)
    for name, value in answer.all_headers().items():
        response.headers[name] = value
    return response
