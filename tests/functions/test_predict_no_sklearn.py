"""predict deployed without its scikit-learn fallback (the default package: onnxruntime, no
scikit-learn, pandas or skops), in a real functions-framework process.

The process's environment hides the three libraries behind a PYTHONPATH folder whose packages of
those names raise ImportError when imported: a fault injection standing in for a deployment that
never installed them (tests/test_packaging.py checks the real package in a venv of its own)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import fit_serving_bundle, promote_version, publish_compiled, serving_env

from shared.compiled.compile import Compilation
from shared.compiled.form import CompiledForm
from shared.contracts import CURRENT_MODEL, CompileStatus
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.storage.local import LocalBucket
from shared.training import registry

pytestmark = pytest.mark.slow

HIDDEN = ("sklearn", "skops", "pandas")


def hiding_folder(root: Path) -> Path:
    """A PYTHONPATH folder whose sklearn, skops and pandas packages refuse to import."""
    for name in HIDDEN:
        package = root / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed in this predict deployment (test shim)')\n"
        )
    return root


def start_without_sklearn(buckets_root: Path, tmp_path: Path) -> FunctionProcess:
    """A predict process (dynamic mode) in which scikit-learn, skops and pandas cannot be imported."""
    spec = load_declaration().functions["predict"]
    env = serving_env(
        buckets_root,
        SERVING_MODE="dynamic",
        RELOAD_SECONDS="0.2",
        PYTHONPATH=str(hiding_folder(tmp_path / "hide")),
    )
    return FunctionProcess(spec, free_port(), env, tmp_path / "predict.log").start()


def promote_uncompiled(artifacts: LocalBucket, bundle, reason: str) -> int:
    """Make ``bundle`` current as a promotion of a version that did not compile does."""
    failed = Compilation(None, CompiledForm(CompileStatus.UNCONVERTIBLE, reason))
    return promote_version(artifacts, bundle, failed)


def health(fn: FunctionProcess) -> dict:
    return requests.get(f"{fn.url}/health", timeout=10).json()


def wait_for_health(fn: FunctionProcess, done, what: str, seconds: float = 30) -> dict:
    """Poll /health until ``done(body)``; the last body (the test fails, naming ``what``, if never)."""
    deadline = time.monotonic() + seconds
    body = health(fn)
    while not done(body) and time.monotonic() < deadline:
        time.sleep(0.1)
        body = health(fn)
    assert done(body), (what, body)
    return body


def test_a_version_without_a_compiled_form_says_the_fallback_is_not_deployed(
    artifacts, buckets_root, tmp_path
):
    promote_uncompiled(artifacts, fit_serving_bundle("v1"), "skl2onnx has no converter for MyEstimator")
    instance = {"country": "us", "hour": 20}
    with start_without_sklearn(buckets_root, tmp_path) as fn:
        first = requests.post(fn.url, json={"instances": [instance]}, timeout=30)
        # Several reload checks later the version is still skipped, not retried on every check.
        body = wait_for_health(fn, lambda b: b["counters"]["reload_checks"] >= 5, "five reload checks")
        second = requests.post(fn.url, json={"instances": [instance]}, timeout=30)
        # A compiled version promoted next is served by the same process, no restart.
        generation, compiled = publish_compiled(artifacts, fit_serving_bundle("v2", flip=True))
        recovered = wait_for_health(fn, lambda b: (b["model"] or {}).get("version") == "v2", "v2 served")
        answer = requests.post(fn.url, json={"instances": [instance]}, timeout=30)
    error = body["last_reload_error"]
    assert body["status"] == "no_model"
    assert error.startswith(f"{CURRENT_MODEL}@")
    assert "this predict deployment has no scikit-learn fallback" in error
    assert "version 'v1' has no compiled form" in error
    assert "models/versions/v1/card.json says why" in error
    assert "deploy predict with PREDICT_SKLEARN_FALLBACK=1 or fix the estimator" in error
    assert body["counters"]["reload_failures"] == 1
    for response in (first, second):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "not_ready"
        assert "this predict deployment has no scikit-learn fallback" in response.json()["error"]["message"]
    assert recovered["counters"]["server_errors"] == 0
    assert (recovered["model"]["form"], recovered["model"]["generation"]) == ("onnx", generation)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["score"] == float(
        compiled.score_columns({"country": ["us"], "hour": [20], "bid": [1.5]})[0]
    )


def test_a_compiled_form_that_will_not_load_says_so_when_there_is_no_fallback(
    artifacts, buckets_root, tmp_path
):
    publish_compiled(artifacts, fit_serving_bundle("v1"))
    blob = registry.compiled_name("v1")
    artifacts.write(blob, artifacts.read(blob)[:200])  # cut short: no longer a whole ONNX file
    with start_without_sklearn(buckets_root, tmp_path) as fn:
        response = requests.post(fn.url, json={"instances": [{"country": "us", "hour": 20}]}, timeout=30)
        body = health(fn)
    assert response.status_code == 503, response.text
    error = body["last_reload_error"]
    assert "this predict deployment has no scikit-learn fallback" in error
    assert "version 'v1' has no compiled form that loads (compiled model is not a valid ONNX file" in error
