"""predict's ids and prediction log through real functions-framework processes on real local
bucket folders: what is answered is what is logged, a SIGTERM loses no row, a kill -9 at most
what came after the last flush, and a full buffer drops and counts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import fit_serving_bundle, publish_compiled, serving_env, write_serving_table

from shared.contracts import PREDICTIONS_PREFIX
from shared.feedback.log_format import read_log
from shared.feedback.prediction_log import sampled_in
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.storage.local import LocalBucket

pytestmark = pytest.mark.slow

QUIET = {"PREDICTION_LOG_FLUSH_SECONDS": "3600", "PREDICTION_LOG_BATCH_ROWS": "100000"}  # only close()


@pytest.fixture(scope="module")
def bundle():
    return fit_serving_bundle("v1")


@pytest.fixture
def predictions(buckets_root: Path) -> LocalBucket:
    return LocalBucket(buckets_root, "prodml-predictions")


@pytest.fixture
def published(buckets_root: Path, bundle):
    """The compiled v1 as current, and a table of the even key codes built from it."""
    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    generation, compiled = publish_compiled(artifacts, bundle)
    write_serving_table(artifacts, compiled, generation, keep=lambda codes: codes % 2 == 0)
    return artifacts


def start(buckets_root: Path, tmp_path: Path, **env: str) -> FunctionProcess:
    spec = load_declaration().functions["predict"]
    environment = serving_env(buckets_root, **{"SERVING_MODE": "hybrid", **env})
    return FunctionProcess(spec, free_port(), environment, tmp_path / "predict.log").start()


def post(fn: FunctionProcess, body: dict) -> requests.Response:
    return requests.post(fn.url, json=body, timeout=30)


def health(fn: FunctionProcess) -> dict:
    return requests.get(f"{fn.url}/health", timeout=10).json()


def logged(predictions: LocalBucket) -> list[dict]:
    """Every row of every log object, in the order the instance wrote them."""
    rows = []
    for info in sorted(predictions.list(PREDICTIONS_PREFIX), key=lambda i: i.name.rsplit("-", 1)[-1]):
        file = read_log(predictions, info.name, 10**8)
        c = file.columns
        for k in range(len(file)):
            rows.append(
                {
                    "id": str(c["id"][k]),
                    "score": float(c["score"][k]),
                    "source": str(c["source"][k]),
                    "label": int(c["label"][k]),
                    "model_version": str(c["model_version"][k]),
                    "table_build": str(c["table_build"][k]),
                    "features": {f: file.feature(f)[k].item() for f in ("country", "hour", "bid")},
                }
            )
    return rows


def instance(n: int) -> dict:
    return {"country": ["br", "de", "kr", "us"][n % 4], "hour": n % 24, "bid": round(0.5 + n % 7, 2)}


def test_ids_are_echoed_made_when_absent_and_bad_ids_are_400(buckets_root, tmp_path, published):
    with start(buckets_root, tmp_path) as fn:
        sent = post(fn, {"instances": [instance(0), instance(1)], "ids": ["imp-1", "imp-2"]})
        made = post(fn, {"instances": [instance(n) for n in range(50)]})
        made_again = post(fn, {"instances": [instance(0)]})
        bad = {
            "not a list": post(fn, {"instances": [instance(0)], "ids": "imp-1"}),
            "too few": post(fn, {"instances": [instance(0), instance(1)], "ids": ["a"]}),
            "not a string": post(fn, {"instances": [instance(0)], "ids": [3]}),
            "too long": post(fn, {"instances": [instance(0)], "ids": ["x" * 129]}),
            "control": post(fn, {"instances": [instance(0)], "ids": ["a\x1bb"]}),
            "repeated": post(fn, {"instances": [instance(0), instance(1)], "ids": ["a", "a"]}),
        }
    assert sent.status_code == 200, sent.text
    assert [p["id"] for p in sent.json()["predictions"]] == ["imp-1", "imp-2"]
    ids = [p["id"] for p in made.json()["predictions"]] + [made_again.json()["predictions"][0]["id"]]
    assert len(set(ids)) == 51 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # uuid4 hex
    for what, response in bad.items():
        assert response.status_code == 400, what
        assert response.json()["error"]["code"] == "invalid_ids", what
    assert bad["repeated"].json()["error"]["index"] == 1
    assert "id 1 repeats id 0" in bad["repeated"].json()["error"]["message"]


def test_a_graceful_stop_writes_every_answered_prediction_as_answered(
    buckets_root, tmp_path, published, predictions
):
    answered = []
    with start(buckets_root, tmp_path, **QUIET) as fn:
        for n in range(30):
            body = {"instances": [instance(n), instance(n + 100)], "ids": [f"r{n}-0", f"r{n}-1"]}
            response = post(fn, body)
            assert response.status_code == 200, response.text
            for sent, prediction in zip(body["instances"], response.json()["predictions"], strict=True):
                answered.append((prediction, sent, response.json()["model_version"]))
        before = health(fn)["prediction_log"]
    # FunctionProcess.stop: SIGTERM to the process group, as the platform stops an instance.
    assert before["logged"] == 60 and before["flushed_rows"] == 0  # all waited for the stop
    rows = logged(predictions)
    assert len(rows) == 60  # no row lost, none doubled
    table_blob = LocalBucket(buckets_root, "prodml-artifacts").read("tables/current.json")
    sources = set()
    for row, (prediction, sent, version) in zip(rows, answered, strict=True):
        assert row["id"] == prediction["id"] and row["score"] == prediction["score"]
        assert (row["source"], row["label"], row["model_version"]) == (
            prediction["source"],
            prediction["label"],
            version,
        )
        assert row["features"] == sent
        assert bool(row["table_build"]) == (row["source"] == "table")
        assert row["table_build"] == "" or row["table_build"].encode() in table_blob
        sources.add(row["source"])
    assert sources == {"table", "model"}  # both paths were logged


def test_a_kill_9_loses_only_what_came_after_the_last_flush(buckets_root, tmp_path, published, predictions):
    fn = start(buckets_root, tmp_path, PREDICTION_LOG_FLUSH_SECONDS="3600", PREDICTION_LOG_BATCH_ROWS="10")
    try:
        ids = [f"k{n}" for n in range(25)]
        for prediction_id in ids:
            assert post(fn, {"instances": [instance(1)], "ids": [prediction_id]}).status_code == 200
        deadline = time.monotonic() + 60  # only stops a hung test: polls the flush's own counter
        while health(fn)["prediction_log"]["flushed_rows"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fn.process is not None
        os.killpg(fn.process.pid, signal.SIGKILL)
        fn.process.wait(10)
    finally:
        fn.stop()
    kept = [row["id"] for row in logged(predictions)]
    assert kept == ids[:20]  # the two batches written before the kill, in order
    lost = len(ids) - len(kept)
    assert lost == 5 and lost < 10  # under one batch (PREDICTION_LOG_BATCH_ROWS)


def test_a_small_max_drops_and_counts_and_keeps_the_first(buckets_root, tmp_path, published, predictions):
    with start(buckets_root, tmp_path, PREDICTION_LOG_MAX_ROWS="5", **QUIET) as fn:
        for n in range(8):
            assert post(fn, {"instances": [instance(n)], "ids": [f"m{n}"]}).status_code == 200
        state = health(fn)["prediction_log"]
    assert (state["logged"], state["dropped"], state["waiting"], state["max_rows"]) == (5, 3, 5, 5)
    assert [row["id"] for row in logged(predictions)] == [f"m{n}" for n in range(5)]


def test_rate_one_half_logs_the_same_ids_on_two_runs(buckets_root, tmp_path, published, predictions):
    ids = [f"s{n}" for n in range(120)]
    runs = []
    for _ in range(2):
        with start(buckets_root, tmp_path, PREDICTION_LOG_RATE="0.5", **QUIET) as fn:
            for start_at in range(0, 120, 12):
                body = {"instances": [instance(n) for n in range(12)], "ids": ids[start_at : start_at + 12]}
                assert post(fn, body).status_code == 200
            sampled_out = health(fn)["prediction_log"]["sampled_out"]
        runs.append({row["id"] for row in logged(predictions)})
        assert sampled_out == 120 - len(runs[-1])
        for info in list(predictions.list(PREDICTIONS_PREFIX)):
            predictions.delete(info.name)
    assert runs[0] == runs[1] == {i for i in ids if sampled_in(i, 0.5)}
    assert 0 < len(runs[0]) < 120


def test_rate_zero_turns_the_log_off(buckets_root, tmp_path, published, predictions):
    with start(buckets_root, tmp_path, PREDICTION_LOG_RATE="0", **QUIET) as fn:
        assert post(fn, {"instances": [instance(0)]}).status_code == 200
        state = health(fn)["prediction_log"]
    assert state["enabled"] is False and state["logged"] == 0
    assert list(predictions.list(PREDICTIONS_PREFIX)) == []


def test_static_mode_logs_the_features_the_client_sent_not_the_tables_defaults(
    buckets_root, tmp_path, published, predictions
):
    sent = [
        {"country": "us", "hour": 20, "bid": 9.75},  # bid given: the table answers by key alone
        {"country": "br", "hour": 4},  # bid left out: its schema default (1.5) is what was served
    ]
    with start(buckets_root, tmp_path, **{**QUIET, "SERVING_MODE": "static"}) as fn:
        response = post(fn, {"instances": sent, "ids": ["given", "left-out"]})
        assert response.status_code == 200, response.text
        assert [p["source"] for p in response.json()["predictions"]] == ["table", "table"]
    rows = {row["id"]: row["features"] for row in logged(predictions)}
    assert rows == {
        "given": {"country": "us", "hour": 20, "bid": 9.75},
        "left-out": {"country": "br", "hour": 4, "bid": 1.5},
    }
