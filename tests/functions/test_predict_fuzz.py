"""Property-based fuzzing of predict request bodies: never a 5xx, and the server keeps serving.

Mostly through Flask's test client (``functions_framework.create_app``, the very app the
framework serves), and a smaller run against a real functions-framework process.
"""

from __future__ import annotations

import json
import math

import pytest
import requests
from conftest import fit_serving_bundle, serving_env, write_serving_table
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.config import get_settings
from shared.contracts import CURRENT_MODEL
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.storage.local import LocalBucket

GOOD = {"instances": [{"country": "us", "hour": 20, "bid": 1.0}]}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
feature_values = {
    "country": st.sampled_from(["br", "de", "kr", "us", "US", "", "fr"]) | st.integers(-2, 2) | json_values,
    "hour": st.integers(-3, 27) | st.floats(-1, 25) | st.sampled_from([True, "7", None]) | json_values,
    "bid": st.floats(-1, 12) | st.integers(-1, 11) | st.sampled_from([float("nan"), float("inf"), 1e308]),
}
valid_instances = st.fixed_dictionaries(
    {"country": st.sampled_from(["br", "de", "kr", "us"]), "hour": st.integers(0, 23)},
    optional={"bid": st.floats(0, 10)},
)
instances = (
    valid_instances
    | st.fixed_dictionaries(
        {},
        optional={name: values for name, values in feature_values.items()} | {"extra": json_values},
    )
    | json_values
)
valid_bodies = st.builds(lambda xs: {"instances": xs}, st.lists(valid_instances, min_size=1, max_size=6))
bodies = st.one_of(
    valid_bodies,
    st.builds(lambda xs: {"instances": xs}, st.lists(instances, max_size=6)),
    st.builds(
        lambda xs, extra: {"instances": xs, **extra},
        st.lists(instances, max_size=3),
        st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    ),
    json_values,
)
raw_bodies = st.builds(lambda v: json.dumps(v).encode(), bodies) | st.binary(max_size=200)
content_types = st.sampled_from(
    ["application/json"] * 4 + ["application/json; charset=utf-8", "text/plain", ""]
)
methods = st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"])
paths = st.sampled_from(["/"] * 8 + ["/health", "/x"])


SOURCES = {"dynamic": {"model"}, "static": {"table", "miss"}, "hybrid": {"table", "model"}}


def check_answer(status: int, body: bytes, sent: bytes, path: str, method: str, mode: str) -> None:
    assert status < 500, body[:500]
    payload = json.loads(body)
    if status != 200:
        error = payload["error"]
        assert isinstance(error["code"], str) and error["message"]
        return
    if path == "/health":
        assert payload["status"] == "ok"
        return
    assert method == "POST" and path == "/"
    n = len(json.loads(sent)["instances"])
    assert len(payload["predictions"]) == n
    for prediction in payload["predictions"]:
        score = prediction["score"]
        assert score is None or (0.0 <= score <= 1.0 and math.isfinite(score))
        assert prediction["source"] in SOURCES[mode]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    bundle = fit_serving_bundle("v1")
    generation = artifacts.write(CURRENT_MODEL, bundle.to_bytes())
    write_serving_table(artifacts, bundle, generation, keep=lambda codes: codes % 3 == 0)
    return root


@pytest.fixture(scope="module", params=["hybrid", "static", "dynamic"])
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def client(mode, published):
    import functions_framework

    patch = pytest.MonkeyPatch()
    for key, value in serving_env(published, SERVING_MODE=mode, MAX_BODY_BYTES="4000").items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    spec = load_declaration().functions["predict"]
    app = functions_framework.create_app(spec.entry_point, str(spec.source / "main.py"), "http")
    yield app.test_client()
    patch.undo()
    get_settings.cache_clear()


# 170 examples in each of the three modes (510 in all, ~2 s): every mode's own path is fuzzed.
@settings(max_examples=170, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=raw_bodies, content_type=content_types, method=methods, path=paths)
def test_no_body_makes_a_5xx(client, mode, body, content_type, method, path):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.open(path, method=method, data=body, headers=headers)
    check_answer(response.status_code, response.get_data(), body, path, method, mode)
    event(f"status {response.status_code}")


def test_still_serving_after_the_fuzz(client):
    response = client.post("/", json=GOOD)
    assert response.status_code == 200 and response.get_json()["model_version"] == "v1"
    health = client.get("/health").get_json()
    assert health["counters"]["server_errors"] == 0


@pytest.mark.slow
def test_a_real_process_survives_fuzzed_bodies(published, tmp_path):
    spec = load_declaration().functions["predict"]
    env = serving_env(published, SERVING_MODE="hybrid", MAX_BODY_BYTES="4000")
    with FunctionProcess(spec, free_port(), env, tmp_path / "predict.log") as fn:
        session = requests.Session()

        @settings(max_examples=60, deadline=None)
        @given(body=raw_bodies, content_type=content_types, method=methods)
        def fuzz(body, content_type, method):
            headers = {"Content-Type": content_type} if content_type else {}
            response = session.request(method, fn.url, data=body, headers=headers, timeout=30)
            check_answer(response.status_code, response.content, body, "/", method, "hybrid")

        fuzz()
        assert session.post(fn.url, json=GOOD, timeout=30).status_code == 200
        health = session.get(f"{fn.url}/health", timeout=30).json()
        assert health["counters"]["server_errors"] == 0
        assert "Traceback" not in fn.log_tail(20000)
