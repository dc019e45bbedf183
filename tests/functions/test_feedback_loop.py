"""The feedback loop end to end in real processes (issue 15, "must show"): predictions with ids
through a real predict process, its log flushed, labels files dropped later (some ids unknown,
some labelled twice, some arriving before their log) and handled by a real train process, and
``prodml live --json`` run as a real CLI process giving the counts and metrics that scikit-learn
gives on the answers this test received. Then label maturity with a window of a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    deliver,
    drop_file,
    fit_serving_bundle,
    publish_compiled,
    serving_env,
    train_env,
    training_schema,
    write_serving_table,
)
from sklearn import metrics

from shared.contracts import LIVE_REPORT_BLOB, PREDICTIONS_PREFIX, EventOutcome
from shared.feedback.log_format import read_log
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger

pytestmark = pytest.mark.slow

PRODML = str(Path(sys.executable).with_name("prodml"))
ONLY_AT_STOP = {"PREDICTION_LOG_FLUSH_SECONDS": "3600", "PREDICTION_LOG_BATCH_ROWS": "100000"}
WINDOW = 4.0  # LABEL_WINDOW of the maturity test: long enough for one labels delivery, short to wait


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Local buckets holding the schema, the compiled v1 as current and a table (even key codes)
    built from it, so hybrid answers come from both the table and the model."""
    buckets = tmp_path / "buckets"
    artifacts = LocalBucket(buckets, "prodml-artifacts")
    save_schema(artifacts, training_schema())
    generation, compiled = publish_compiled(artifacts, fit_serving_bundle("v1"))
    write_serving_table(artifacts, compiled, generation, keep=lambda codes: codes % 2 == 0)
    return buckets


def start_train(root: Path, tmp_path: Path, **env: str) -> FunctionProcess:
    spec = load_declaration().functions["train"]
    return FunctionProcess(spec, free_port(), train_env(root, **env), tmp_path / "train.log").start()


def start_predict(root: Path, tmp_path: Path, **env: str) -> FunctionProcess:
    spec = load_declaration().functions["predict"]
    environment = serving_env(root, SERVING_MODE="hybrid", RELOAD_SECONDS="0.2", **env)
    return FunctionProcess(spec, free_port(), environment, tmp_path / "predict.log").start()


def instance(n: int) -> dict[str, Any]:
    """Even n: an even key code (country x hour), in the table; odd n: answered by the model."""
    return {"country": ["br", "de", "kr", "us"][n % 4], "hour": n % 24, "bid": round(0.5 + n % 7, 2)}


def serve(fn: FunctionProcess, ids: list[str], first: int) -> dict[str, dict[str, Any]]:
    """Ask predict about one instance per id; each answered prediction (with its version) by id."""
    body = {"instances": [instance(first + k) for k in range(len(ids))], "ids": ids}
    response = requests.post(fn.url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    return {p["id"]: {**p, "model_version": answer["model_version"]} for p in answer["predictions"]}


def deliver_labels(train: FunctionProcess, root: Path, name: str, csv: str) -> None:
    """Drop a labels file and deliver its event to the train process, as Eventarc would."""
    data = LocalBucket(root, "prodml-data")
    info = drop_file(data, name, csv.encode())
    assert deliver(train.url, info) == [200], train.log_tail()
    marker = ledger.read_processed(LocalBucket(root, "prodml-artifacts"), data.name, name, info.generation)
    assert marker is not None and marker["outcome"] == EventOutcome.LABELS_STORED, marker


def prodml_live(root: Path, **env: str) -> dict[str, Any]:
    """``prodml live --json`` as a user runs it: a CLI process on the same buckets."""
    result = subprocess.run(
        [PRODML, "live", "--json"], env=train_env(root, **env), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout))


def expected_quality(answers: list[dict[str, Any]], truth: dict[str, int], default: int | None) -> dict:
    """What the live report must say of these answered predictions, computed directly: the counts
    by the maturity rules, and scikit-learn's metrics on the rows with an outcome."""
    outcome = {a["id"]: truth.get(a["id"], default) for a in answers}
    matured = [a for a in answers if outcome[a["id"]] is not None]
    labelled = sum(a["id"] in truth for a in answers)
    counts = {
        "served": len(answers),
        "labelled": labelled,
        "defaulted": len(matured) - labelled,
        "pending": len(answers) - len(matured),
        "matured": len(matured),
    }
    if not matured:
        return {"counts": counts, "metrics": None, "calibration": None}
    y = [outcome[a["id"]] for a in matured]
    p = [a["score"] for a in matured]
    return {
        "counts": counts,
        "metrics": {
            "rows": float(len(matured)),
            "log_loss": metrics.log_loss(y, p, labels=[0, 1]),
            "roc_auc": metrics.roc_auc_score(y, p) if len(set(y)) == 2 else None,
            "accuracy": metrics.accuracy_score(y, [a["label"] for a in matured]),
        },
        "calibration": {"mean_predicted": sum(p) / len(p), "observed_rate": sum(y) / len(y)},
    }


def assert_quality(reported: dict[str, Any], expected: dict[str, Any]) -> None:
    assert reported["counts"] == expected["counts"]
    if expected["metrics"] is None:
        assert reported["metrics"] is None
        return
    undefined = {k for k, v in expected["metrics"].items() if v is None}  # ROC AUC of one class
    assert {k for k, v in reported["metrics"].items() if v is None} == undefined
    defined = {k: v for k, v in expected["metrics"].items() if k not in undefined}
    got = {k: v for k, v in reported["metrics"].items() if k not in undefined}
    assert got == pytest.approx(defined, rel=1e-9, abs=1e-12)
    assert reported["calibration"] == pytest.approx(expected["calibration"], rel=1e-9, abs=1e-12)


def test_labels_joined_to_what_predict_served_give_the_metrics_of_the_answers(root, tmp_path):
    artifacts = LocalBucket(root, "prodml-artifacts")
    train = start_train(root, tmp_path)
    try:
        with start_predict(root, tmp_path, **ONLY_AT_STOP) as predict:
            answered = serve(predict, [f"a{n}" for n in range(40)], 0)  # v1: table and model
            # The first labels arrive while their predictions still wait in predict's buffer.
            early = "id,converted,event_time\na2,1,2026-01-02T00:00:00\n"
            early += "".join(f"a{n},{n % 3 == 0:d},\n" for n in range(3, 10)) + "ghost-1,1,\n"
            deliver_labels(train, root, "labels/early.csv", early)
            before = prodml_live(root)
            publish_compiled(artifacts, fit_serving_bundle("v2", flip=True))
            deadline = time.monotonic() + 60  # only stops a hung test: polls what predict serves
            while True:  # probes are served predictions too: logged, and reported as pending
                probe = serve(predict, [f"probe-{len(answered)}"], 1)
                answered |= probe
                if next(iter(probe.values()))["model_version"] == "v2":
                    break
                assert time.monotonic() < deadline, "predict did not load v2"
                time.sleep(0.05)
            answered |= serve(predict, [f"b{n}" for n in range(30)], 40)  # v2: the model only
        # predict stopped gracefully (SIGTERM): its log is written, every row of it.
        late = "id,converted,event_time\na2,0,2026-01-01T00:00:00\n"  # older than early's: loses
        late += "".join(f"a{n},{n % 2},\n" for n in range(5, 31))  # a5..a9 again: the later file wins
        late += "".join(f"b{n},{n % 4 == 1:d},\n" for n in range(20))
        late += "b3,1,\nghost-2,0,\nghost-3,1,\n"  # b3 twice in one file: the later row wins
        deliver_labels(train, root, "labels/late.csv", late)
        report = prodml_live(root)
    finally:
        train.stop()

    assert before["log"]["rows"] == 0 and before["versions"] == []
    assert before["labels"]["unmatched"] == 9 and before["labels"]["matched"] == 0

    truth = {"a2": 1} | {f"a{n}": int(n % 3 == 0) for n in (3, 4)}
    truth |= {f"a{n}": n % 2 for n in range(5, 31)} | {f"b{n}": int(n % 4 == 1) for n in range(20)}
    truth["b3"] = 1
    answers = list(answered.values())
    assert len(answers) > 70  # 40 + 30, and at least one probe
    assert report["log"] == {"objects": 1, "unreadable": 0, "rows": len(answers), "duplicate_ids": 0}
    assert report["labels"] == {
        "objects": 2,
        "unreadable": 0,
        "rows": 9 + 1 + 26 + 20 + 3,
        "duplicates": 9 + 1 + 26 + 20 + 3 - len(truth) - 3,
        "matched": len(truth),
        "unmatched": 3,
        "unmatched_ids": ["ghost-1", "ghost-2", "ghost-3"],
    }
    by_version = {v["version"]: v for v in report["versions"]}
    assert sorted(by_version) == ["v1", "v2"]
    for version in ("v1", "v2"):
        mine = [a for a in answers if a["model_version"] == version]
        assert_quality(by_version[version], expected_quality(mine, truth, None))
        sources = {a["source"] for a in mine}
        assert set(by_version[version]["by_source"]) == sources
        for source in sources:
            of_source = [a for a in mine if a["source"] == source]
            assert_quality(by_version[version]["by_source"][source], expected_quality(of_source, truth, None))
    assert set(by_version["v1"]["by_source"]) == {"table", "model"}  # both paths were joined
    assert set(by_version["v2"]["by_source"]) == {"model"}  # the table is v1's: hybrid skips it


def logged_times(root: Path) -> list[float]:
    """When predict served each logged row, as its log says."""
    predictions = LocalBucket(root, "prodml-predictions")
    names = [i.name for i in predictions.list(PREDICTIONS_PREFIX)]
    return [float(t) for name in names for t in read_log(predictions, name, 10**8).columns["time"]]


def test_unlabelled_predictions_are_pending_within_the_window_and_the_default_after_it(root, tmp_path):
    maturity = {"LABEL_WINDOW": f"{WINDOW:g}s", "LABEL_DEFAULT": "0"}
    train = start_train(root, tmp_path, **maturity)
    try:
        with start_predict(root, tmp_path, PREDICTION_LOG_FLUSH_SECONDS="0.1") as predict:
            answered = serve(predict, [f"m{n}" for n in range(20)], 0)
            deadline = time.monotonic() + 60  # only stops a hung test: polls the flush's counter
            while (
                requests.get(f"{predict.url}/health", timeout=10).json()["prediction_log"]["flushed_rows"]
                < 20
            ):
                assert time.monotonic() < deadline, "predict did not flush its log"
                time.sleep(0.05)
            labels = "id,converted\n" + "".join(f"m{n},{n % 3 == 0:d}\n" for n in range(8))
            deliver_labels(train, root, "labels/conversions.csv", labels)  # the train process reports
        within = json.loads(LocalBucket(root, "prodml-artifacts").read(LIVE_REPORT_BLOB))
        times = logged_times(root)
        # Poll the clock, not the report: every prediction is older than the window from now on.
        while time.time() <= max(times) + WINDOW:
            time.sleep(0.05)
        after = prodml_live(root, **maturity)
    finally:
        train.stop()

    generated = datetime.fromisoformat(within["generated_at"]).timestamp()
    assert generated < min(times) + WINDOW, "the labels were handled after the window ended"
    assert len(times) == 20 and within["label_default"] == "0"
    answers = list(answered.values())
    truth = {f"m{n}": int(n % 3 == 0) for n in range(8)}
    (before,) = within["versions"]
    assert before["version"] == "v1" and before["counts"]["pending"] == 12
    assert_quality(before, expected_quality(answers, truth, None))  # 8 labelled, 12 pending
    assert after["label_default"] == "0" and after["label_window_seconds"] == WINDOW
    (past,) = after["versions"]
    assert past["counts"]["defaulted"] == 12 and past["counts"]["pending"] == 0
    assert_quality(past, expected_quality(answers, truth, 0))  # the 12 unlabelled count as 0
    assert after["totals"] == past["counts"]
