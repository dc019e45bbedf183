"""predict serving a compiled (ONNX) model: real functions-framework processes on a real local
bucket folder, each started with Python's import tracing so the test reads, from the process's
own log, every module it imported."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import (
    KeyTraffic,
    fit_serving_bundle,
    publish_compiled,
    serving_env,
    wait_for,
    write_serving_table,
)

from shared.contracts import COMPILED_MODEL_FILE, CURRENT_MODEL, PREDICTIONS_PREFIX, VERSIONS_PREFIX
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.storage.local import LocalBucket

pytestmark = pytest.mark.slow

COUNTRIES = ["br", "de", "kr", "us"]
KEYS = [(c, h) for c in COUNTRIES for h in range(24)]
HEAVY = ("sklearn", "pandas", "skops", "matplotlib")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def bundles():
    return {"v1": fit_serving_bundle("v1"), "v2": fit_serving_bundle("v2", flip=True)}


def start(buckets_root: Path, log: Path, **env: str) -> FunctionProcess:
    """A predict process whose log records every module it imports (``-X importtime``)."""
    spec = load_declaration().functions["predict"]
    environment = serving_env(buckets_root, PYTHONPROFILEIMPORTTIME="1", **env)
    return FunctionProcess(spec, free_port(), environment, log).start()


def imported(log: Path) -> set[str]:
    """Top-level packages the process imported, from its import-time trace."""
    return {name.split(".")[0] for name in IMPORTED.findall(log.read_text(errors="replace"))}


def score_of(compiled, country: str, hour: int, bid: float = 1.5) -> float:
    return float(compiled.score_columns({"country": [country], "hour": [hour], "bid": [bid]})[0])


def post(url: str, instances: list[dict], session=requests) -> requests.Response:
    return session.post(url, json={"instances": instances}, timeout=30)


def health(fn: FunctionProcess) -> dict:
    return requests.get(f"{fn.url}/health", timeout=10).json()


def test_each_mode_serves_the_compiled_model_without_importing_sklearn_pandas_or_skops(
    artifacts, buckets_root, tmp_path, bundles
):
    generation, compiled = publish_compiled(artifacts, bundles["v1"])
    write_serving_table(artifacts, compiled, generation, keep=lambda codes: codes % 2 == 0)
    logs = {mode: tmp_path / f"{mode}.log" for mode in ("static", "dynamic", "hybrid")}
    processes = {mode: start(buckets_root, log, SERVING_MODE=mode) for mode, log in logs.items()}
    try:
        instances = [{"country": "us", "hour": 20}, {"country": "de", "hour": 7, "bid": 3.25}]
        answers = {}
        for mode, fn in processes.items():
            response = post(fn.url, instances)
            assert response.status_code == 200, (mode, response.text)
            answers[mode] = response.json()["predictions"]
            state = health(fn)
            model = state["model"]
            assert (model["version"], model["form"]) == ("v1", "onnx"), model
            assert state["prediction_log"]["logged"] == 2, mode  # the log is on: its imports count
    finally:
        for fn in processes.values():
            fn.stop()
    written = LocalBucket(buckets_root, "prodml-predictions").list(PREDICTIONS_PREFIX)
    assert len(list(written)) == 3  # each process's stop wrote its log: the writer's imports too
    for mode, log in logs.items():
        modules = imported(log)
        assert "functions_framework" in modules and "numpy" in modules, mode  # the trace works
        # Static mode answers from the table alone: it never starts ONNX Runtime either.
        assert ("onnxruntime" in modules) == (mode != "static"), mode
        assert not modules & set(HEAVY), (mode, sorted(modules & set(HEAVY)))
    # us/20 is in the table (even code), de/7 is not: static misses it, hybrid asks the model.
    assert [p["source"] for p in answers["static"]] == ["table", "miss"]
    assert [p["source"] for p in answers["hybrid"]] == ["table", "model"]
    assert [p["source"] for p in answers["dynamic"]] == ["model", "model"]
    # The same floats whichever path answered: a table score is the compiled score, bit for bit.
    assert answers["static"][0]["score"] == answers["hybrid"][0]["score"] == answers["dynamic"][0]["score"]
    assert answers["dynamic"][0]["score"] == score_of(compiled, "us", 20)
    miss = score_of(compiled, "de", 7, 3.25)
    assert answers["hybrid"][1]["score"] == answers["dynamic"][1]["score"] == miss


def test_a_version_without_a_compiled_form_is_served_by_sklearn_loaded_then(
    artifacts, buckets_root, tmp_path, bundles
):
    artifacts.write(CURRENT_MODEL, bundles["v1"].to_bytes())  # written before compiled serving
    log = tmp_path / "predict.log"
    with start(buckets_root, log, SERVING_MODE="dynamic") as fn:
        response = post(fn.url, [{"country": "us", "hour": 20}])
        model = health(fn)["model"]
    assert response.status_code == 200, response.text
    assert model["form"] == "sklearn"
    assert "sklearn" in imported(log) and "skops" in imported(log)
    expected = bundles["v1"].score_columns({"country": ["us"], "hour": [20], "bid": [1.5]})[0]
    assert response.json()["predictions"][0]["score"] == float(expected)


def test_a_corrupt_compiled_file_is_refused_and_its_version_served_by_sklearn(
    artifacts, buckets_root, tmp_path, bundles
):
    publish_compiled(artifacts, bundles["v1"])
    blob = f"{VERSIONS_PREFIX}v1/{COMPILED_MODEL_FILE}"
    artifacts.write(blob, artifacts.read(blob)[:200])  # cut short: no longer a whole ONNX file
    with start(buckets_root, tmp_path / "predict.log", SERVING_MODE="dynamic") as fn:
        response = post(fn.url, [{"country": "us", "hour": 20}])
        model = health(fn)["model"]
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "v1"
    assert model["form"] == "sklearn"
    assert "compiled form will not load" in model["form_note"]


def test_a_compiled_model_promoted_under_load_has_zero_failed_requests_and_one_version_per_answer(
    artifacts, buckets_root, tmp_path, bundles
):
    generation, first = publish_compiled(artifacts, bundles["v1"])
    expected = {"v1": {key: score_of(first, *key) for key in KEYS}}

    with start(buckets_root, tmp_path / "predict.log", SERVING_MODE="dynamic", RELOAD_SECONDS="0.2") as fn:
        with KeyTraffic(fn.url, KEYS) as traffic:
            wait_for(lambda: traffic.count("v1"), lambda n: n > 0)
            new_generation, second = publish_compiled(
                artifacts, bundles["v2"], expected_generation=generation
            )
            expected["v2"] = {key: score_of(second, *key) for key in KEYS}
            wait_for(lambda: traffic.count("v2"), lambda n: n >= 50)
        model = health(fn)["model"]
    assert traffic.failures == []
    assert (model["version"], model["generation"], model["form"]) == ("v2", new_generation, "onnx")
    versions = Counter(a[0] for a in traffic.answers)
    assert versions["v1"] > 0 and versions["v2"] >= 50, versions
    for version, key, score, _ in traffic.answers:
        assert score == expected[version][key], (version, key)
    assert not np.isclose(expected["v1"][("us", 20)], expected["v2"][("us", 20)])  # versions differ
