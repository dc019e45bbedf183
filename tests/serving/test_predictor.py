"""Predictor in process: the three modes, lazy load, hot reload, traffic counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import fit_serving_bundle, write_serving_table

from shared.config import load_settings
from shared.contracts import CURRENT_MODEL, TABLE_POINTER
from shared.errors import BadRequest, ModelNotReady, StorageError
from shared.model import to_frame
from shared.serving.predictor import FIRST_LOAD_ATTEMPTS, Predictor
from shared.serving.traffic import read_traffic
from shared.storage.local import LocalBucket
from shared.tables.format import read_pointer

INSTANCES = [
    {"country": "us", "hour": 20, "bid": 1.5},
    {"country": "br", "hour": 3, "bid": 1.5},
    {"country": "kr", "hour": 12, "bid": 1.5},
]


@pytest.fixture(scope="module")
def v1():
    return fit_serving_bundle("v1")


@pytest.fixture(scope="module")
def v2():
    return fit_serving_bundle("v2", flip=True)


@pytest.fixture
def artifacts(tmp_path):
    return LocalBucket(tmp_path, "prodml-artifacts")


class FlakyBucket:
    """A real local bucket whose first ``fail`` reads of objects under ``prefix`` raise a
    ``StorageError``, as a storage outage would (fault injection: everything else is the real bucket).
    """

    def __init__(self, inner, prefix, fail):
        self.inner, self.prefix, self.remaining = inner, prefix, fail

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def _fault(self, name):
        if name.startswith(self.prefix) and self.remaining > 0:
            self.remaining -= 1
            raise StorageError(f"injected fault reading {name!r}")

    def read(self, name):
        self._fault(name)
        return self.inner.read(name)

    def read_with_info(self, name):
        self._fault(name)
        return self.inner.read_with_info(name)


def make(artifacts, mode, **env):
    settings = load_settings({"SERVING_MODE": mode, "RELOAD_SECONDS": "3600", **env})
    return Predictor(artifacts, settings, instance_id="test")


def body(instances):
    return json.dumps({"instances": instances}).encode()


def expected(bundle, instances):
    return bundle.scores(to_frame(bundle.schema, pd.DataFrame(instances)))


def publish(artifacts, bundle, table=True, **kw):
    generation = artifacts.write(CURRENT_MODEL, bundle.to_bytes())
    if table:
        write_serving_table(artifacts, bundle, generation, **kw)
    return generation


def test_dynamic_scores_every_instance_with_the_model(artifacts, v1):
    publish(artifacts, v1)
    predictor = make(artifacts, "dynamic")
    answer = predictor.predict(body(INSTANCES))
    assert answer["model_version"] == "v1"
    assert [p["source"] for p in answer["predictions"]] == ["model"] * 3
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], expected(v1, INSTANCES))
    assert [p["label"] for p in answer["predictions"]] == [int(s >= 0.5) for s in expected(v1, INSTANCES)]
    predictor.close()


def test_hybrid_table_hits_equal_the_model_and_misses_go_to_the_model(artifacts, v1):
    # A top-K style table holding only the even codes: half the keys hit, the rest miss.
    publish(artifacts, v1, keep=lambda codes: codes % 2 == 0)
    predictor = make(artifacts, "hybrid")
    instances = [{"country": "us", "hour": h, "bid": 1.5} for h in range(6)]
    answer = predictor.predict(body(instances))
    sources = [p["source"] for p in answer["predictions"]]
    assert sources == ["table", "model"] * 3
    np.testing.assert_allclose(
        [p["score"] for p in answer["predictions"]], expected(v1, instances), rtol=1e-12
    )
    counters = predictor.health()["counters"]
    assert (counters["table_hits"], counters["model_predictions"]) == (3, 3)


def test_a_table_hit_answers_by_key_with_non_key_features_at_their_default(artifacts, v1):
    publish(artifacts, v1)
    predictor = make(artifacts, "hybrid")
    answer = predictor.predict(body([{"country": "us", "hour": 20, "bid": 9.0}]))
    prediction = answer["predictions"][0]
    assert prediction["source"] == "table"
    assert prediction["score"] == pytest.approx(expected(v1, [{"country": "us", "hour": 20, "bid": 1.5}])[0])


def test_hybrid_ignores_a_table_built_from_another_model(artifacts, v1, v2):
    generation = artifacts.write(CURRENT_MODEL, v2.to_bytes())
    write_serving_table(artifacts, v1, generation)  # stale table: built from v1
    predictor = make(artifacts, "hybrid")
    answer = predictor.predict(body(INSTANCES))
    assert answer["model_version"] == "v2"
    assert {p["source"] for p in answer["predictions"]} == {"model"}
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], expected(v2, INSTANCES))
    health = predictor.health()
    assert health["table"]["used"] is False and "built from model 'v1'" in health["table"]["note"]


def test_static_answers_from_the_table_only_and_names_its_model(artifacts, v1, v2):
    generation = artifacts.write(CURRENT_MODEL, v2.to_bytes())
    write_serving_table(artifacts, v1, generation, keep=lambda codes: codes < 24)  # only "br"
    predictor = make(artifacts, "static")
    answer = predictor.predict(body([{"country": "br", "hour": 3}, {"country": "us", "hour": 3}]))
    assert answer["model_version"] == "v1"  # the table's scores are v1's
    hit, miss = answer["predictions"]
    assert hit["source"] == "table" and hit["score"] == pytest.approx(expected(v1, INSTANCES[1:2])[0])
    assert miss == {"id": miss["id"], "score": None, "source": "miss", "label": None}
    assert len(miss["id"]) == 32 and miss["id"] != hit["id"]  # made by predict: uuid4 hex
    assert predictor.health()["counters"]["misses"] == 1


def test_static_without_a_table_is_not_ready(artifacts, v1):
    publish(artifacts, v1, table=False)
    predictor = make(artifacts, "static")
    with pytest.raises(ModelNotReady, match="no usable table"):
        predictor.predict(body(INSTANCES))
    assert predictor.health()["status"] == "no_table"


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_answers(artifacts, task):
    bundle = fit_serving_bundle("m1", task=task)
    publish(artifacts, bundle, keep=lambda codes: codes < 48)
    predictor = make(artifacts, "hybrid")
    answer = predictor.predict(body(INSTANCES))
    want = expected(bundle, INSTANCES)
    scores = [p["score"] for p in answer["predictions"]]
    np.testing.assert_allclose(scores, want, rtol=1e-12)
    if task == "multiclass":
        assert answer["classes"] == ["basic", "plus", "pro"]
        assert [p["label"] for p in answer["predictions"]] == [answer["classes"][i] for i in want.argmax(1)]
    else:
        assert "label" not in answer["predictions"][0] and "classes" not in answer


def test_no_model_is_not_ready_until_one_is_promoted(artifacts, v1):
    predictor = make(artifacts, "dynamic")
    with pytest.raises(ModelNotReady, match="no model is being served yet"):
        predictor.predict(body(INSTANCES))
    assert predictor.health()["status"] == "no_model"
    publish(artifacts, v1, table=False)
    assert predictor.reload() is True
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"
    predictor.close()


def test_reload_swaps_model_and_table_and_skips_a_broken_model(artifacts, v1, v2):
    publish(artifacts, v1)
    predictor = make(artifacts, "hybrid")
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"
    assert predictor.reload() is False  # nothing changed
    generation = artifacts.write(CURRENT_MODEL, v2.to_bytes())
    assert predictor.reload() is True
    answer = predictor.predict(body(INSTANCES))
    assert answer["model_version"] == "v2" and {p["source"] for p in answer["predictions"]} == {"model"}
    write_serving_table(artifacts, v2, generation)
    assert predictor.reload() is True
    answer = predictor.predict(body(INSTANCES))
    assert {p["source"] for p in answer["predictions"]} == {"table"}
    np.testing.assert_allclose([p["score"] for p in answer["predictions"]], expected(v2, INSTANCES))
    artifacts.write(CURRENT_MODEL, b"not a model")
    assert predictor.reload() is False
    assert predictor.predict(body(INSTANCES))["model_version"] == "v2"
    assert "not a valid skops file" in predictor.health()["last_reload_error"]
    artifacts.write(TABLE_POINTER, b'{"version": "missing"}')
    predictor.reload()
    assert {p["source"] for p in predictor.predict(body(INSTANCES))["predictions"]} == {"table"}
    predictor.close()


def test_bad_input_is_a_bad_request_in_every_mode(artifacts, v1):
    publish(artifacts, v1)
    for mode in ["static", "dynamic", "hybrid"]:
        predictor = make(artifacts, mode)
        with pytest.raises(BadRequest) as caught:
            predictor.predict(body([{"country": "fr", "hour": 1, "bid": 1.0}]))
        assert caught.value.code == "unknown_category" and caught.value.field == "country"


def test_requested_keys_are_counted_and_flushed_to_traffic(artifacts, v1):
    publish(artifacts, v1)
    predictor = make(artifacts, "hybrid")
    predictor.predict(body(INSTANCES + INSTANCES[:1]))
    predictor.predict(body([{"country": "us", "hour": 20}]))
    name = predictor.flush_traffic()
    assert name is not None and name.startswith("traffic/")
    assert read_traffic(artifacts, key=["country", "hour"]) == {'["us",20]': 3, '["br",3]': 1, '["kr",12]': 1}
    assert predictor.flush_traffic() is None  # nothing new since
    predictor.close()


def test_a_storage_fault_on_the_first_load_is_retried_on_the_request_path(artifacts, v1):
    publish(artifacts, v1, table=False)
    flaky = FlakyBucket(artifacts, CURRENT_MODEL, fail=FIRST_LOAD_ATTEMPTS - 1)
    predictor = make(flaky, "dynamic")
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"  # no 503 for a brief fault
    assert predictor.health()["counters"]["reload_failures"] == FIRST_LOAD_ATTEMPTS - 1
    predictor.close()


def test_a_longer_storage_fault_on_the_first_load_is_a_503_then_the_next_reload_loads(artifacts, v1):
    publish(artifacts, v1, table=False)
    flaky = FlakyBucket(artifacts, CURRENT_MODEL, fail=FIRST_LOAD_ATTEMPTS + 1)
    predictor = make(flaky, "dynamic")
    with pytest.raises(ModelNotReady, match="injected fault"):
        predictor.predict(body(INSTANCES))
    assert predictor.reload() is False  # the fault lasts one more read
    assert predictor.reload() is True  # then the same generation loads: it was never skipped
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"
    predictor.close()


def test_a_storage_fault_reading_a_new_model_is_retried_at_the_next_reload(artifacts, v1, v2):
    publish(artifacts, v1, table=False)
    flaky = FlakyBucket(artifacts, CURRENT_MODEL, fail=0)
    predictor = make(flaky, "dynamic")
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"
    artifacts.write(CURRENT_MODEL, v2.to_bytes())
    flaky.remaining = 1
    assert predictor.reload() is False  # keeps serving v1 meanwhile
    assert predictor.predict(body(INSTANCES))["model_version"] == "v1"
    assert predictor.reload() is True
    assert predictor.predict(body(INSTANCES))["model_version"] == "v2"
    predictor.close()


@pytest.mark.parametrize("prefix", [TABLE_POINTER, "tables/v1-t/"])  # the pointer, the table object
def test_a_storage_fault_reading_the_table_is_retried_at_the_next_reload(artifacts, v1, prefix):
    generation = publish(artifacts, v1, table=False)
    flaky = FlakyBucket(artifacts, prefix, fail=0)
    predictor = make(flaky, "hybrid")
    assert {p["source"] for p in predictor.predict(body(INSTANCES))["predictions"]} == {"model"}
    write_serving_table(artifacts, v1, generation)
    flaky.remaining = 1
    assert predictor.reload() is False
    assert predictor.reload() is True  # the same pointer generation, not skipped
    assert {p["source"] for p in predictor.predict(body(INSTANCES))["predictions"]} == {"table"}
    predictor.close()


def test_a_corrupt_model_is_skipped_until_its_generation_changes(artifacts, v1):
    publish(artifacts, v1, table=False)
    predictor = make(artifacts, "dynamic")
    predictor.predict(body(INSTANCES))
    artifacts.write(CURRENT_MODEL, b"not a model")
    assert predictor.reload() is False
    assert predictor.reload() is False
    assert predictor.health()["counters"]["reload_failures"] == 1  # read once, then skipped
    artifacts.write(CURRENT_MODEL, v1.to_bytes())
    assert predictor.reload() is True
    predictor.close()


def test_health_names_the_exact_table_object_the_pointer_names(artifacts, v1):
    generation = publish(artifacts, v1)  # a full build
    predictor = make(artifacts, "hybrid")
    predictor.predict(body(INSTANCES))
    first = predictor.health()["table"]
    assert first["blob"] == read_pointer(artifacts)[0]["blob"]
    write_serving_table(artifacts, v1, generation, keep=lambda codes: codes < 24)  # a top-K build
    assert predictor.reload() is True
    second = predictor.health()["table"]
    assert second["version"] == first["version"]  # same model version: only the object tells them apart
    assert second["blob"] == read_pointer(artifacts)[0]["blob"] != first["blob"]
    assert second["rows"] == 24
    predictor.close()
