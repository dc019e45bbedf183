"""The shadow in predict's serving state, in process on a real local bucket: which shadow is
scored beside which champion, and what a bad pointer or a storage fault does (nothing to the
champion). The answers and the log through real processes: tests/functions/test_predict_shadow.py."""

from __future__ import annotations

import json

import pytest
from conftest import fit_serving_bundle, publish_compiled, serving_schema

from shared.compiled.compile import compile_version
from shared.config import load_settings
from shared.contracts import SHADOW_POINTER, ModelForm
from shared.errors import StorageError
from shared.model import ModelBundle
from shared.serving.predictor import Predictor
from shared.storage.local import LocalBucket
from shared.training import registry, shadow
from shared.training.card import ModelCard

BODY = json.dumps({"instances": [{"country": "us", "hour": 20}], "ids": ["a"]}).encode()


@pytest.fixture(scope="module")
def bundles():
    return {"v1": fit_serving_bundle("v1"), "v2": fit_serving_bundle("v2", flip=True)}


def start_shadow(artifacts, bundle, form=ModelForm.ONNX) -> int:
    """Write ``bundle``'s version (compiled) unless it is there, and point the shadow at it; the
    pointer's generation."""
    if not artifacts.exists(registry.model_name(bundle.version)):
        compilation = compile_version(bundle, None, registry.compiled_name(bundle.version))
        card = ModelCard(version=bundle.version)
        onnx = compilation.onnx
        registry.write_version(artifacts, bundle.version, bundle.to_bytes(), card, compiled=onnx)
    previous = shadow.read_pointer(artifacts)
    pointer = shadow.started(
        bundle.version, champion="v1", form=form, by="test", reason="test", previous=previous
    )
    return shadow.swap_pointer(artifacts, pointer, previous.generation if previous else 0).generation


def predictor(root, artifacts, log: bool = True, **env: str) -> Predictor:
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(root), "SERVING_MODE": "dynamic", **env})
    predictions = LocalBucket(root, "prodml-predictions") if log else None
    return Predictor(artifacts, settings, "test", predictions)


@pytest.fixture
def champion(artifacts, bundles):
    return publish_compiled(artifacts, bundles["v1"])[1]


def shadow_of(p: Predictor) -> dict:
    return p.health()["shadow"]


def test_the_first_request_loads_no_shadow_and_the_next_check_does(
    artifacts, buckets_root, champion, bundles
):
    generation = start_shadow(artifacts, bundles["v2"])
    p = predictor(buckets_root, artifacts, RELOAD_SECONDS="3600")
    answer = p.predict(BODY)
    first = shadow_of(p)
    assert p.reload() is True
    loaded = shadow_of(p)
    p.close()
    assert answer["model_version"] == "v1"
    assert (first["scoring"], first["generation"]) == (False, None) and "not loaded yet" in first["note"]
    assert (loaded["version"], loaded["form"], loaded["generation"], loaded["scoring"]) == (
        "v2",
        "onnx",
        generation,
        True,
    )
    assert p.loader.state is not None and p.loader.state.shadow is not None
    assert p.loader.state.shadow.version == "v2" and p.loader.state.model.version == "v1"


def test_the_champions_own_version_in_shadow_is_not_scored(artifacts, buckets_root, champion, bundles):
    start_shadow(artifacts, bundles["v1"])  # promoted, its pointer not ended yet
    p = predictor(buckets_root, artifacts)
    p.predict(BODY)
    p.reload()
    state = shadow_of(p)
    p.close()
    assert (state["version"], state["scoring"]) == ("v1", False)
    assert state["note"] == "not scored: version 'v1' is the champion itself"


def test_a_shadow_of_another_schema_is_not_scored(artifacts, buckets_root, champion):
    other = fit_serving_bundle("v3", task="regression")
    assert other.schema != serving_schema()
    start_shadow(artifacts, other)
    p = predictor(buckets_root, artifacts)
    p.predict(BODY)
    p.reload()
    state = shadow_of(p)
    p.close()
    assert (state["version"], state["scoring"]) == ("v3", False)
    assert "schema differs from the champion 'v1'" in state["note"]


def test_a_malformed_pointer_is_shown_and_the_champion_serves_on(artifacts, buckets_root, champion):
    artifacts.write(SHADOW_POINTER, b'{"format": "prodml-shadow/1", "version": 7}')
    p = predictor(buckets_root, artifacts)
    p.predict(BODY)
    p.reload()
    health = p.health()
    p.close()
    assert health["shadow"]["scoring"] is False and health["shadow"]["version"] is None
    assert health["shadow"]["note"].startswith("not loaded: models/shadow.json is malformed")
    assert health["last_reload_error"] is None and health["model"]["version"] == "v1"


def test_a_sklearn_shadow_loads_its_skops_file(artifacts, buckets_root, champion, bundles):
    start_shadow(artifacts, bundles["v2"], form=ModelForm.SKLEARN)
    p = predictor(buckets_root, artifacts)
    p.predict(BODY)
    p.reload()
    state = shadow_of(p)
    p.close()
    assert (state["form"], state["scoring"]) == ("sklearn", True)
    assert isinstance(p.loader.state.shadow, ModelBundle)


class FaultyShadowReads:
    """The real bucket, whose next ``fail`` stats or reads of models/shadow.json raise a storage fault."""

    def __init__(self, inner, fail: int) -> None:
        self.inner, self.fail = inner, fail

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def _maybe_fail(self, name: str) -> None:
        if name == SHADOW_POINTER and self.fail > 0:
            self.fail -= 1
            raise StorageError("injected: the bucket timed out")

    def stat(self, name):
        self._maybe_fail(name)
        return self.inner.stat(name)

    def read_with_info(self, name, *args, **kwargs):
        self._maybe_fail(name)
        return self.inner.read_with_info(name, *args, **kwargs)


def test_a_storage_fault_on_the_shadow_is_retried_and_never_holds_back_the_champion(
    artifacts, buckets_root, champion, bundles
):
    start_shadow(artifacts, bundles["v2"])
    faulty = FaultyShadowReads(artifacts, fail=2)
    p = predictor(buckets_root, faulty)
    assert p.predict(BODY)["model_version"] == "v1"  # the first load's stat fails: served anyway
    p.reload()  # the second fault
    retrying = p.health()
    p.reload()  # no fault left: loaded
    loaded = shadow_of(p)
    p.close()
    assert retrying["shadow"]["scoring"] is False
    assert "retrying after models/shadow.json: StorageError: injected" in retrying["shadow"]["note"]
    assert retrying["last_reload_error"] is None and retrying["counters"]["reload_failures"] == 0
    assert loaded["scoring"] is True and "retrying" not in loaded["note"]


@pytest.mark.parametrize(
    ("log", "env", "why"),
    [
        (False, {}, "no prediction log (PREDICTIONS_BUCKET)"),
        (True, {"PREDICTION_LOG_RATE": "0"}, "PREDICTION_LOG_RATE=0"),
        (True, {"SHADOW_RATE": "0"}, "SHADOW_RATE=0"),
    ],
    ids=["no log bucket", "log off", "shadow rate 0"],
)
def test_without_a_log_to_write_to_no_shadow_is_loaded(
    artifacts, buckets_root, champion, bundles, log, env, why
):
    start_shadow(artifacts, bundles["v2"])
    p = predictor(buckets_root, artifacts, log=log, **env)
    p.predict(BODY)
    p.reload()
    state = shadow_of(p)
    p.close()
    assert (state["version"], state["scoring"]) == ("v2", False)
    assert why in state["note"]
    assert p.loader.state.shadow_slot.scorer is None  # nothing loaded, no session made
