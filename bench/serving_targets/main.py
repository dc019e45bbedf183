"""Baselines for ``bench/bench_serving.py``, served by the same functions-framework server.

- ``empty``: an HTTP function that answers ``{}``: the floor of any request on this server;
- ``plain_predict``: what a plain Flask handler would do: ``request.get_json()``, then the same
  model (``models/current.skops``, loaded once at import) called once per instance, no checks.
"""

from __future__ import annotations

import json

import flask
import functions_framework
import pandas as pd

from shared.config import get_settings
from shared.contracts import CURRENT_MODEL
from shared.model import ModelBundle, to_frame
from shared.storage import artifacts_bucket

_bundle: ModelBundle | None = None


def _model() -> ModelBundle:
    global _bundle
    if _bundle is None:
        _bundle = ModelBundle.from_bytes(artifacts_bucket(get_settings()).read(CURRENT_MODEL))
    return _bundle


@functions_framework.http
def empty(request: flask.Request) -> flask.Response:
    """Answer ``{}`` to anything."""
    return flask.Response("{}", mimetype="application/json")


@functions_framework.http
def plain_predict(request: flask.Request) -> flask.Response:
    """Score each instance with its own model call."""
    bundle = _model()
    scores = []
    for instance in request.get_json()["instances"]:
        frame = to_frame(bundle.schema, pd.DataFrame([instance]))
        scores.append(float(bundle.scores(frame)[0]))
    body = {"predictions": [{"score": s, "source": "model"} for s in scores], "model_version": bundle.version}
    return flask.Response(json.dumps(body), mimetype="application/json")
