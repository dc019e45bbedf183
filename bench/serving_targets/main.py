"""Baselines for ``bench/bench_serving.py``, served by the same functions-framework server.

- ``empty``: an HTTP function that answers ``{}``: the floor of any request on this server;
- ``plain_predict``: what a plain Flask handler would do: ``request.get_json()``, then the same
  model (``models/current.skops``, loaded on the first request) called once per instance with
  scikit-learn, no checks.

Both entry points live in this one module, and functions-framework imports the whole module for
either: so everything the plain handler needs (pandas, scikit-learn through ``shared.model``, the
storage client) is imported on its first call, not here, and the floor's process stays a bare
server (its cold start and memory are the floor the bench compares with). The plain handler's
cold start to first answer still pays those imports, as a user's handler would.
"""

from __future__ import annotations

import json
from typing import Any

import flask
import functions_framework

_bundle: Any = None  # the plain handler's ModelBundle, loaded on its first call


def _model() -> Any:
    global _bundle
    if _bundle is None:
        from shared.config import get_settings
        from shared.contracts import CURRENT_MODEL
        from shared.model import ModelBundle
        from shared.storage import artifacts_bucket

        _bundle = ModelBundle.from_bytes(artifacts_bucket(get_settings()).read(CURRENT_MODEL))
    return _bundle


@functions_framework.http
def empty(request: flask.Request) -> flask.Response:
    """Answer ``{}`` to anything."""
    return flask.Response("{}", mimetype="application/json")


@functions_framework.http
def plain_predict(request: flask.Request) -> flask.Response:
    """Score each instance with its own model call."""
    import pandas as pd

    from shared.model import to_frame

    bundle = _model()
    scores = []
    for instance in request.get_json()["instances"]:
        frame = to_frame(bundle.schema, pd.DataFrame([instance]))
        scores.append(float(bundle.scores(frame)[0]))
    body = {"predictions": [{"score": s, "source": "model"} for s in scores], "model_version": bundle.version}
    return flask.Response(json.dumps(body), mimetype="application/json")
