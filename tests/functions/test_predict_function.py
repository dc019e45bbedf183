"""The predict function as a real functions-framework process on a real local bucket folder."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import KeyTraffic, fit_serving_bundle, serving_env, wait_for, write_serving_table

from shared.contracts import CURRENT_MODEL, TABLE_POINTER
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.model import to_frame
from shared.serving.traffic import read_traffic

pytestmark = pytest.mark.slow

COUNTRIES = ["br", "de", "kr", "us"]
KEYS = [(c, h) for c in COUNTRIES for h in range(24)]


@pytest.fixture(scope="module")
def bundles():
    return {"v1": fit_serving_bundle("v1"), "v2": fit_serving_bundle("v2", flip=True)}


@pytest.fixture(scope="module")
def expected(bundles):
    """Each version's score of every key (bid at its default 1.5)."""
    frame = pd.DataFrame([{"country": c, "hour": h, "bid": 1.5} for c, h in KEYS])
    out = {}
    for version, bundle in bundles.items():
        scores = bundle.scores(to_frame(bundle.schema, frame))
        out[version] = dict(zip(KEYS, scores.tolist(), strict=True))
    return out


def start(buckets_root, tmp_path, **env) -> FunctionProcess:
    spec = load_declaration().functions["predict"]
    process = FunctionProcess(spec, free_port(), serving_env(buckets_root, **env), tmp_path / "predict.log")
    return process.start()


def publish(artifacts, bundle, table=True, even_only=True):
    generation = artifacts.write(CURRENT_MODEL, bundle.to_bytes())
    if table:
        keep = (lambda codes: codes % 2 == 0) if even_only else None
        write_serving_table(artifacts, bundle, generation, keep=keep)


def post(url, instances, session=requests):
    return session.post(url, json={"instances": instances}, timeout=30)


def health(fn):
    return requests.get(f"{fn.url}/health", timeout=10).json()


def test_each_mode_answers_correctly(artifacts, buckets_root, tmp_path, bundles, expected):
    publish(artifacts, bundles["v1"])  # table of the even codes: hour 0, 2, 4, ... of each country
    modes = ["static", "dynamic", "hybrid"]
    spec = load_declaration().functions["predict"]
    processes = {
        mode: FunctionProcess(
            spec, free_port(), serving_env(buckets_root, SERVING_MODE=mode), tmp_path / f"{mode}.log"
        )
        for mode in modes
    }
    starters = [threading.Thread(target=p.start) for p in processes.values()]  # start in parallel
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    try:
        for mode, fn in processes.items():
            check_mode(mode, fn, expected)
    finally:
        for fn in processes.values():
            fn.stop()


def check_mode(mode, fn, expected):
    instances = [{"country": "us", "hour": 20}, {"country": "de", "hour": 7, "bid": 1.5}]
    response = post(fn.url, instances)
    assert response.status_code == 200, (mode, response.text)
    answer = response.json()
    assert answer["model_version"] == "v1"
    sources = [p["source"] for p in answer["predictions"]]
    want = {"static": ["table", "miss"], "dynamic": ["model"] * 2, "hybrid": ["table", "model"]}
    assert sources == want[mode]
    for (country, hour), prediction in zip([("us", 20), ("de", 7)], answer["predictions"], strict=True):
        if prediction["source"] == "miss":
            assert prediction["score"] is None
        else:
            assert prediction["score"] == pytest.approx(expected["v1"][(country, hour)], rel=1e-12)
            assert prediction["label"] == int(prediction["score"] >= 0.5)
    health = requests.get(f"{fn.url}/health", timeout=10).json()
    assert health["mode"] == mode and health["model"]["version"] == "v1"
    assert health["counters"]["requests"] == 1
    if mode != "dynamic":
        assert health["table"]["rows"] == 48 and health["table"]["coverage"] == 0.5


def test_http_faults_are_4xx_and_no_model_is_a_503(artifacts, buckets_root, tmp_path, bundles):
    with start(
        buckets_root, tmp_path, SERVING_MODE="dynamic", RELOAD_SECONDS="0.2", MAX_BODY_BYTES="2000"
    ) as fn:
        good = [{"country": "us", "hour": 20, "bid": 1.0}]
        response = post(fn.url, good)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "no model is being served yet" in response.json()["error"]["message"]
        assert requests.get(f"{fn.url}/health", timeout=10).json()["status"] == "no_model"

        def status(method, path="/", **kw):
            r = requests.request(method, fn.url + path, timeout=10, **kw)
            return r.status_code, r.json()["error"]["code"]

        assert status("GET") == (405, "method_not_allowed")
        assert status("PUT", json={"instances": good}) == (405, "method_not_allowed")
        assert status("POST", "/health") == (405, "method_not_allowed")
        assert status("POST", "/nowhere", json={}) == (404, "not_found")
        assert status("POST", data=b'{"instances": []}', headers={"Content-Type": "text/plain"}) == (
            415,
            "unsupported_media_type",
        )
        big = b'{"instances": [' + b" " * 3000 + b"]}"
        headers = {"Content-Type": "application/json"}
        assert status("POST", data=big, headers=headers) == (413, "body_too_large")
        # no Content-Length (chunked): the limit holds on what is actually read
        assert status("POST", data=iter([big[:1000], big[1000:]]), headers=headers) == (413, "body_too_large")

        publish(artifacts, bundles["v1"], table=False)
        deadline = time.monotonic() + 30
        while (response := post(fn.url, good)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert response.status_code == 200 and response.json()["model_version"] == "v1"
        assert status("POST", data=b"{oops", headers=headers) == (400, "invalid_json")
        health = requests.get(f"{fn.url}/health", timeout=10).json()
        assert health["counters"]["client_errors"] == 8 and health["counters"]["server_errors"] == 0
    # stopping the process flushed its traffic counts
    assert read_traffic(artifacts, key=["country", "hour"])['["us",20]'] >= 1


def test_a_model_promoted_under_load_is_picked_up_with_every_answer_consistent(
    artifacts, buckets_root, tmp_path, bundles, expected
):
    publish(artifacts, bundles["v1"])
    with (
        start(buckets_root, tmp_path, SERVING_MODE="hybrid", RELOAD_SECONDS="0.3") as fn,
        KeyTraffic(fn.url, KEYS) as traffic,
    ):
        wait_for(lambda: traffic.count("v1"), lambda n: n > 0)
        model_bytes = bundles["v2"].to_bytes()
        generation = artifacts.write(CURRENT_MODEL, model_bytes)
        # Reload checks started so far: the next one starts after this read, so after the promotion.
        checks_at_promotion = health(fn)["counters"]["reload_checks"]
        # its table a moment later, as the builder does; until then v2 answers from the model
        write_serving_table(artifacts, bundles["v2"], generation, keep=lambda codes: codes % 2 == 0)
        model = wait_for(lambda: health(fn)["model"], lambda m: m["generation"] == generation)
        wait_for(lambda: traffic.count("v2", "table"), lambda n: n >= 20)
    answers = traffic.answers
    # Picked up by the reload thread (requests never load), at its first look after the promotion
    # (or the one already under way): bounded in reload checks, i.e. within one RELOAD_SECONDS
    # interval plus one check, without asserting wall-clock time.
    assert model["loaded_by"] == "reload thread"
    assert model["loaded_at_check"] <= checks_at_promotion + 1
    assert traffic.failures == []
    versions = Counter(a[0] for a in answers)
    assert versions["v1"] > 0 and versions["v2"] > 0
    for version, key, score, _ in answers:
        assert score == pytest.approx(expected[version][key], rel=1e-9), (version, key)
    # once the table of v2 is in, v2 answers come from it again
    assert any(a[0] == "v2" and a[3] == "table" for a in answers)


def test_text_echoed_from_a_lone_surrogate_is_a_4xx_error_body_not_a_bare_500(
    artifacts, buckets_root, tmp_path, bundles
):
    # "\ud800" in JSON text parses to a lone surrogate, which UTF-8 cannot encode; every answer
    # that echoes it must still be the documented error body (and count as a client error).
    publish(artifacts, bundles["v1"], table=False)
    bodies = {
        "instance key": (rb'{"instances":[{"\ud800": 1}]}', "unknown_feature", "\ud800"),
        "body key": (rb'{"\ud800": 1, "instances": []}', "invalid_body", "\ud800"),
        "category": (rb'{"instances":[{"country": "\ud800", "hour": 1}]}', "unknown_category", "country"),
        "number value": (rb'{"instances":[{"country": "us", "hour": "x\udfff"}]}', "wrong_type", "hour"),
    }
    with start(buckets_root, tmp_path, SERVING_MODE="dynamic") as fn:
        for what, (body, code, field) in bodies.items():
            r = requests.post(fn.url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
            assert r.status_code == 400, (what, r.text[:300])
            assert r.headers["Content-Type"] == "application/json"
            error = r.json()["error"]
            assert (error["code"], error["field"]) == (code, field), what
            assert set(error) == {"code", "message", "index", "field"}
        counters = health(fn)["counters"]
    assert counters["client_errors"] == len(bodies) and counters["server_errors"] == 0


MALFORMED_POINTERS = {
    "not JSON": b"{not json",
    "null": b"null",
    "empty object": b"{}",
    "outside tables/": b'{"version": "v1-t", "blob": "models/current.skops"}',
}


@pytest.mark.parametrize("mode", ["static", "hybrid"])
def test_a_malformed_table_pointer_keeps_the_table_served_and_health_says_why(
    artifacts, buckets_root, tmp_path, bundles, expected, mode
):

    publish(artifacts, bundles["v1"])  # table of the even codes: ("us", 20) is in it
    served = health_table = None
    with start(buckets_root, tmp_path, SERVING_MODE=mode, RELOAD_SECONDS="0.1") as fn:
        served = wait_for(lambda: health(fn)["table"], lambda table: table is not None)
        for what, content in MALFORMED_POINTERS.items():
            generation = artifacts.write(TABLE_POINTER, content)
            # A reload check that started after the write (the one under way may predate it).
            checks = health(fn)["counters"]["reload_checks"]
            state = wait_for(lambda: health(fn), lambda h, c=checks: h["counters"]["reload_checks"] > c + 1)
            assert (state["last_reload_error"] or "").startswith(f"{TABLE_POINTER}@{generation}:"), what
            health_table = state["table"]
            assert state["status"] == "ok" and health_table is not None, what
            assert health_table | {"age_seconds": None} == served | {"age_seconds": None}, what  # ages grow
            response = post(fn.url, [{"country": "us", "hour": 20}])
            assert response.status_code == 200, (what, response.text)
            (prediction,) = response.json()["predictions"]
            assert prediction["source"] == "table", what
            assert prediction["score"] == pytest.approx(expected["v1"][("us", 20)], rel=1e-12)
    assert health_table is not None and health_table["used"] is True


def _peak_rss_bytes(fn: FunctionProcess) -> int:
    """The peak resident memory (VmHWM) summed over the function's process group: functions-framework
    answers from a gunicorn worker, a child of the process started."""
    assert fn.process is not None
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            if group == fn.process.pid:
                status = (entry / "status").read_text().splitlines()
                total += next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
        except (OSError, ValueError, IndexError, StopIteration):  # ended meanwhile, or a kernel thread
            continue
    return total


BOMB_BYTES = 200 * 1024 * 1024  # what each crafted member decompresses to (the files are < 400 KB)
GROWTH_BOUND = 100 * 1024 * 1024  # a functional bound: a bomb read once would add 200-400 MB


def test_a_zip_bomb_model_or_table_is_refused_unread_and_memory_stays_bounded(
    artifacts, buckets_root, tmp_path, bundles, expected
):
    from bad_model_files import deflate_bomb, first_array, lying_bomb

    from shared.tables.format import build_blob, new_build_id, read_pointer, switch_pointer

    publish(artifacts, bundles["v1"])
    model = artifacts.read(CURRENT_MODEL)
    pointer, _ = read_pointer(artifacts)
    assert pointer is not None
    table = artifacts.read(pointer["blob"])
    member = first_array(model)
    # MAX_MODEL_BYTES at its default; MAX_TABLE_BYTES set as for a smaller instance (its default
    # fits a 20M-key table), so the honest table bomb is over it too.
    env = {"SERVING_MODE": "hybrid", "RELOAD_SECONDS": "0.1", "MAX_TABLE_BYTES": str(64 * 1024 * 1024)}
    with start(buckets_root, tmp_path, **env) as fn:
        assert post(fn.url, [{"country": "us", "hour": 20}]).status_code == 200
        baseline = _peak_rss_bytes(fn)
        bombs = [
            ("model", deflate_bomb(model, member, BOMB_BYTES), "more than MAX_MODEL_BYTES=67108864"),
            ("model", lying_bomb(model, member, BOMB_BYTES, 144), "more than the 144 bytes it declares"),
            ("table", deflate_bomb(table, "codes.npy", BOMB_BYTES), "more than MAX_TABLE_BYTES=67108864"),
            ("table", lying_bomb(table, "codes.npy", BOMB_BYTES, 128), "more than the 128 bytes it declares"),
        ]
        for target, content, reason in bombs:
            assert len(content) < 400 * 1024
            if target == "table":
                blob = build_blob("v1-t", "full", new_build_id())
                artifacts.write(blob, content)
                _, pointer_generation = read_pointer(artifacts)
                generation = switch_pointer(artifacts, {**pointer, "blob": blob}, pointer_generation)
                target = TABLE_POINTER
            else:
                generation = artifacts.write(CURRENT_MODEL, content)
                target = CURRENT_MODEL
            checks = health(fn)["counters"]["reload_checks"]
            state = wait_for(lambda: health(fn), lambda h, c=checks: h["counters"]["reload_checks"] > c + 1)
            error = state["last_reload_error"] or ""
            assert error.startswith(f"{target}@{generation}:") and reason in error, (reason, error)
            assert state["model"]["version"] == "v1" and state["table"]["used"] is True
            (prediction,) = post(fn.url, [{"country": "us", "hour": 20}]).json()["predictions"]
            assert prediction["source"] == "table"
            assert prediction["score"] == pytest.approx(expected["v1"][("us", 20)], rel=1e-12)
        growth = _peak_rss_bytes(fn) - baseline
    assert baseline > 0 and growth < GROWTH_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"
