"""predict scoring a shadow beside the champion (issue 16): real functions-framework processes on
real local bucket folders, the shadow named by a real ``models/shadow.json``. Every answer is the
champion's, the log holds the shadow's own score of the same instance, and a shadow that will not
load or fails on every call changes no answer and loses no row."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import requests
from bad_model_files import onnx_failing_at_run_time
from conftest import fit_serving_bundle, publish_compiled, serving_env, wait_for, write_serving_table

from shared.compiled.compile import compile_version
from shared.compiled.current import load_current
from shared.compiled.runtime import CompiledModel
from shared.config import load_settings
from shared.contracts import CURRENT_MODEL, PREDICTIONS_PREFIX, ModelForm
from shared.feedback.log_format import read_log
from shared.feedback.shadow_scoring import shadow_sampled_in
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.model import ModelBundle
from shared.storage.local import LocalBucket
from shared.training import registry, shadow
from shared.training.card import ModelCard

pytestmark = pytest.mark.slow

QUIET = {"PREDICTION_LOG_FLUSH_SECONDS": "3600", "PREDICTION_LOG_BATCH_ROWS": "100000"}  # only close()


@pytest.fixture(scope="module")
def bundles():
    return {"v1": fit_serving_bundle("v1"), "v2": fit_serving_bundle("v2", flip=True)}


@pytest.fixture
def predictions(buckets_root: Path) -> LocalBucket:
    return LocalBucket(buckets_root, "prodml-predictions")


def compiled_of(bundle) -> bytes:
    compilation = compile_version(bundle, None, registry.compiled_name(bundle.version))
    assert compilation.onnx is not None, compilation.form.reason
    return compilation.onnx


def put_in_shadow(artifacts, bundle, onnx: bytes | None = None) -> int:
    """Write ``bundle``'s version (its compiled file: ``onnx``, else its own) and start it in
    shadow, as ``prodml shadow start`` does; the pointer's generation."""
    onnx = onnx if onnx is not None else compiled_of(bundle)
    card = ModelCard(version=bundle.version)
    registry.write_version(artifacts, bundle.version, bundle.to_bytes(), card, compiled=onnx)
    return restart_shadow(artifacts, bundle.version)


def restart_shadow(artifacts, version: str) -> int:
    """Swap the pointer to ``version`` again (a new generation); the generation."""
    previous = shadow.read_pointer(artifacts)
    pointer = shadow.started(
        version, champion="v1", form=ModelForm.ONNX, by="test", reason="test", previous=previous
    )
    written = shadow.swap_pointer(artifacts, pointer, previous.generation if previous else 0)
    return written.generation


def start(buckets_root: Path, tmp_path: Path, name: str = "predict", **env: str) -> FunctionProcess:
    spec = load_declaration().functions["predict"]
    environment = serving_env(buckets_root, **{"SERVING_MODE": "dynamic", "RELOAD_SECONDS": "0.2", **env})
    return FunctionProcess(spec, free_port(), environment, tmp_path / f"{name}.log").start()


def health(fn: FunctionProcess) -> dict:
    return requests.get(f"{fn.url}/health", timeout=10).json()


def scoring(fn: FunctionProcess) -> dict:
    """Wait until the reload thread has the shadow scored; /health's shadow."""
    return wait_for(lambda: health(fn)["shadow"], lambda s: s["scoring"])


def instance(n: int) -> dict:
    """Instances over every key; one in three leaves ``bid`` out (served with its default 1.5)."""
    out = {"country": ["br", "de", "kr", "us"][n % 4], "hour": (n * 7) % 24, "bid": round(0.25 + n % 9, 2)}
    if n % 3 == 0:
        del out["bid"]
    return out


def served_as(sent: dict) -> dict:
    return {"bid": 1.5, **sent}


def score_of(scorer, features: dict) -> float:
    return float(scorer.score_columns({k: [v] for k, v in features.items()})[0])


def send(fn: FunctionProcess, prefix: str, requests_sent: int = 20, per_request: int = 3) -> list[tuple]:
    """``requests_sent`` requests of ``per_request`` instances; every (id, instance, prediction)."""
    answered = []
    with requests.Session() as session:
        for r in range(requests_sent):
            sent = [instance(r * per_request + k) for k in range(per_request)]
            ids = [f"{prefix}-{r}-{k}" for k in range(per_request)]
            response = session.post(fn.url, json={"instances": sent, "ids": ids}, timeout=30)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] == "v1"
            answered += list(zip(ids, sent, body["predictions"], strict=True))
    return answered


def logged(predictions: LocalBucket) -> dict[str, dict]:
    """Every logged row by id: score, shadow score (None: NaN), shadow version, features."""
    rows = {}
    for info in predictions.list(PREDICTIONS_PREFIX):
        file = read_log(predictions, info.name, 10**8)
        c = file.columns
        for k in range(len(file)):
            shadow_score = float(c["shadow_score"][k])
            rows[str(c["id"][k])] = {
                "score": float(c["score"][k]),
                "shadow_score": None if math.isnan(shadow_score) else shadow_score,
                "shadow_version": str(c["shadow_version"][k]),
                "features": {f: file.feature(f)[k].item() for f in ("country", "hour", "bid")},
            }
    return rows


def assert_champions_answers(answered: list[tuple], champion) -> None:
    """Each answer is the champion's own score, bit for bit: of the instance, or for a table hit
    of its key (a table answers by key alone, non-key features at their defaults)."""
    for _, sent, prediction in answered:
        features = served_as(sent) if prediction["source"] == "model" else served_as({**sent, "bid": 1.5})
        assert prediction["score"] == score_of(champion, features), sent


@pytest.mark.parametrize("mode", ["dynamic", "hybrid"])
def test_every_answer_is_the_champions_and_the_log_holds_the_shadows_own_score(
    artifacts, buckets_root, tmp_path, bundles, predictions, mode
):
    generation, champion = publish_compiled(artifacts, bundles["v1"])
    if mode == "hybrid":  # table hits are shadow-scored too
        write_serving_table(artifacts, champion, generation, keep=lambda codes: codes % 2 == 0)
    pointer_generation = put_in_shadow(artifacts, bundles["v2"])
    own = CompiledModel.from_bytes(compiled_of(bundles["v2"]), 10**8, "v2")
    with start(buckets_root, tmp_path, SERVING_MODE=mode, **QUIET) as fn:
        state = scoring(fn)
        answered = send(fn, "a")
        after = health(fn)
    assert (state["version"], state["form"], state["generation"]) == ("v2", "onnx", pointer_generation)
    assert "beside the champion 'v1'" in state["note"]
    assert after["model"]["version"] == "v1" and after["last_reload_error"] is None
    assert_champions_answers(answered, champion)
    sources = {prediction["source"] for _, _, prediction in answered}
    assert sources == ({"table", "model"} if mode == "hybrid" else {"model"})
    rows = logged(predictions)  # written by the graceful stop
    assert len(rows) == len(answered) == 60
    for prediction_id, sent, prediction in answered:
        row = rows[prediction_id]
        assert row["features"] == served_as(sent) and row["score"] == prediction["score"]
        assert row["shadow_version"] == "v2"
        assert row["shadow_score"] == score_of(own, row["features"]), prediction_id  # bit for bit
        assert row["shadow_score"] != row["score"]  # the two versions do differ


def test_shadow_rate_one_half_scores_about_half_and_the_same_ids_twice(
    artifacts, buckets_root, tmp_path, bundles, predictions
):
    publish_compiled(artifacts, bundles["v1"])
    put_in_shadow(artifacts, bundles["v2"])
    runs = []
    for run in range(2):
        with start(buckets_root, tmp_path, f"run{run}", SHADOW_RATE="0.5", **QUIET) as fn:
            assert scoring(fn)["rate"] == 0.5
            answered = send(fn, "s", requests_sent=40)
            state = health(fn)["shadow"]
        rows = logged(predictions)
        assert len(rows) == len(answered) == 120  # every answer is logged: only the shadow samples
        runs.append({i for i, row in rows.items() if row["shadow_score"] is not None})
        assert (state["scored_rows"], state["sampled_out"]) == (0, 0)  # nothing flushed before the stop
        for info in list(predictions.list(PREDICTIONS_PREFIX)):
            predictions.delete(info.name)
    ids = {prediction_id for prediction_id, _, _ in answered}
    assert runs[0] == runs[1] == {i for i in ids if shadow_sampled_in(i, 0.5)}
    assert 30 < len(runs[0]) < 90  # about half


def test_a_corrupt_shadow_changes_no_answer_is_shown_and_skipped_until_a_new_pointer(
    artifacts, buckets_root, tmp_path, bundles, predictions
):
    _, champion = publish_compiled(artifacts, bundles["v1"])
    good = compiled_of(bundles["v2"])
    bad_generation = put_in_shadow(artifacts, bundles["v2"], onnx=good[:200])  # cut short
    with start(buckets_root, tmp_path, **QUIET) as fn:
        broken = wait_for(lambda: health(fn)["shadow"], lambda s: s["generation"] == bad_generation)
        before = send(fn, "before")
        artifacts.write(registry.compiled_name("v2"), good)  # mended under the same pointer
        checks = health(fn)["counters"]["reload_checks"]
        wait_for(lambda: health(fn)["counters"]["reload_checks"], lambda n: n >= checks + 3)
        still = health(fn)
        fixed_generation = restart_shadow(artifacts, "v2")
        fixed = scoring(fn)
        after = send(fn, "after")
    assert (broken["version"], broken["scoring"]) == ("v2", False)
    assert broken["note"].startswith("not loaded: ModelNotReady"), broken["note"]
    assert still["shadow"]["scoring"] is False  # a content fault is not retried at every check
    assert still["last_reload_error"] is None and still["model"]["form"] == "onnx"  # champion untouched
    assert fixed["generation"] == fixed_generation
    assert_champions_answers(before + after, champion)
    rows = logged(predictions)
    assert len(rows) == len(before) + len(after)
    assert {(rows[i]["shadow_score"], rows[i]["shadow_version"]) for i, _, _ in before} == {(None, "")}
    assert {rows[i]["shadow_version"] for i, _, _ in after} == {"v2"}


def test_a_shadow_that_fails_on_every_call_changes_no_answer_and_loses_no_row(
    artifacts, buckets_root, tmp_path, bundles, predictions
):
    _, champion = publish_compiled(artifacts, bundles["v1"])
    # Loads (it passes onnx_checks and ONNX Runtime makes its session), fails on every run.
    put_in_shadow(artifacts, bundles["v2"], onnx=onnx_failing_at_run_time(bundles["v2"].schema, "v2"))
    with start(buckets_root, tmp_path, PREDICTION_LOG_BATCH_ROWS="9") as fn:
        scoring(fn)
        answered = send(fn, "f")
        failed = wait_for(lambda: health(fn)["shadow"], lambda s: s["failures"] >= 54)  # 6 batches
        log_state = health(fn)["prediction_log"]
    assert failed["scored_rows"] == 0 and failed["last_error"].startswith("shadow 'v2': Fail: ")
    assert "Reshape" in failed["last_error"]  # ONNX Runtime's own words, cut to 500 characters
    assert log_state["flush_failures"] == 0 and log_state["unencodable"] == 0
    assert_champions_answers(answered, champion)
    rows = logged(predictions)
    assert set(rows) == {i for i, _, _ in answered}  # no row lost
    assert {(row["shadow_score"], row["shadow_version"]) for row in rows.values()} == {(None, "")}


def test_a_kill_9_during_a_shadow_run_leaves_the_pointers_whole_and_a_restart_scores_again(
    artifacts, buckets_root, tmp_path, bundles, predictions
):
    generation, champion = publish_compiled(artifacts, bundles["v1"])
    pointer_generation = put_in_shadow(artifacts, bundles["v2"])
    fn = start(buckets_root, tmp_path, "killed", PREDICTION_LOG_BATCH_ROWS="6")
    try:
        scoring(fn)
        first = send(fn, "k")
        wait_for(lambda: health(fn)["prediction_log"]["flushed_rows"], lambda n: n >= 30)
        assert fn.process is not None
        os.killpg(fn.process.pid, signal.SIGKILL)  # mid-run: the flusher may be scoring or writing
        fn.process.wait(10)
    finally:
        fn.stop()
    pointer = shadow.read_pointer(artifacts)  # read back whole, as written
    assert pointer is not None and (pointer.version, pointer.generation) == ("v2", pointer_generation)
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(buckets_root)})
    current = load_current(artifacts, settings)
    assert (current.scorer.version, current.info.generation) == ("v1", generation)
    assert ModelBundle.from_bytes(artifacts.read(CURRENT_MODEL)).version == "v1"  # the skops too
    with start(buckets_root, tmp_path, "restarted", **QUIET) as again:
        assert scoring(again)["generation"] == pointer_generation
        second = send(again, "r")
    assert_champions_answers(first + second, champion)
    rows = logged(predictions)
    assert {rows[i]["shadow_version"] for i, _, _ in second} == {"v2"}
    written_before_the_kill = [rows[i] for i, _, _ in first if i in rows]
    assert len(written_before_the_kill) >= 30
    assert {row["shadow_version"] for row in written_before_the_kill} == {"v2"}


def test_without_a_prediction_log_no_shadow_is_loaded_and_health_says_why(
    artifacts, buckets_root, tmp_path, bundles
):
    publish_compiled(artifacts, bundles["v1"])
    pointer_generation = put_in_shadow(artifacts, bundles["v2"])
    with start(buckets_root, tmp_path, PREDICTION_LOG_RATE="0") as fn:
        assert fn.process is not None
        state = wait_for(lambda: health(fn)["shadow"], lambda s: s["generation"] == pointer_generation)
    assert (state["version"], state["scoring"], state["scored_rows"]) == ("v2", False, 0)
    assert "PREDICTION_LOG_RATE=0" in state["note"]
