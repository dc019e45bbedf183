"""The serving bench's parts measure what their rows say: real functions-framework processes on
real local bucket folders (``bench/models.py``, ``bench/serving_targets``, ``bench/bench_serving``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.bench_serving import _children, _env, _memory, _spec
from bench.models import fit_default, instance, publish, publish_table, serving_schema
from shared.local.functions import REPO_ROOT, load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.storage.local import LocalBucket

pytestmark = pytest.mark.slow

HEAVY = {"sklearn", "pandas", "skops"}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.MULTILINE)
TARGETS = REPO_ROOT / "bench" / "serving_targets"


@pytest.fixture(scope="module")
def bundle():
    return fit_default(serving_schema(), "bench-v1", rows=3000)


def imported(log: Path) -> set[str]:
    """Top-level packages the process imported, from its ``-X importtime`` trace."""
    return {name.split(".")[0] for name in IMPORTED.findall(log.read_text(errors="replace"))}


def test_the_floor_process_imports_no_model_library(tmp_path):
    log = tmp_path / "empty.log"
    env = _env(tmp_path / "buckets", PYTHONPROFILEIMPORTTIME="1")
    with FunctionProcess(_spec("empty", "empty", TARGETS), free_port(), env, log) as fn:
        response = requests.post(fn.url, json={"instances": [{}]}, timeout=30)
    assert response.status_code == 200
    modules = imported(log)
    assert "functions_framework" in modules  # the trace works
    assert not modules & HEAVY, sorted(modules & HEAVY)


def test_memory_is_read_from_the_gunicorn_worker_that_answers(tmp_path):
    env = _env(tmp_path / "buckets")
    with FunctionProcess(_spec("empty", "empty", TARGETS), free_port(), env, tmp_path / "e.log") as fn:
        assert requests.post(fn.url, json={}, timeout=30).status_code == 200
        assert fn.process is not None
        master = fn.process.pid
        workers = _children(master)
        memory = _memory(fn)
        worker_cmdline = Path(f"/proc/{workers[0]}/cmdline").read_bytes()
    assert len(workers) == 1 and workers[0] != master
    assert b"functions_framework" in worker_cmdline
    assert memory.worker_rss > 0 and memory.master_rss > 0
    # Pages the worker shares with its master are counted once in the instance's PSS.
    assert memory.instance_pss < memory.worker_rss + memory.master_rss


@pytest.mark.parametrize(("compiled", "form"), [(True, "onnx"), (False, "sklearn")])
def test_publish_makes_predict_serve_the_form_asked_and_the_table_agrees(tmp_path, bundle, compiled, form):
    root = tmp_path / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    scorer = publish(artifacts, bundle, compiled=compiled)
    publish_table(artifacts, scorer, np.arange(10), "full")
    predict = load_declaration().functions["predict"]
    body = {"instances": [instance(bundle.schema, 3)]}
    answers = {}
    for mode in ("hybrid", "dynamic"):
        env = _env(root, SERVING_MODE=mode)
        with FunctionProcess(predict, free_port(), env, tmp_path / f"{mode}.log") as fn:
            answers[mode] = requests.post(fn.url, json=body, timeout=30).json()["predictions"][0]
            health = requests.get(f"{fn.url}/health", timeout=10).json()
        assert (health["model"]["version"], health["model"]["form"]) == ("bench-v1", form)
    assert (answers["hybrid"]["source"], answers["dynamic"]["source"]) == ("table", "model")
    assert answers["hybrid"]["score"] == answers["dynamic"]["score"]


def test_env_leaves_workers_and_threads_to_the_framework(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("THREADS", "5")
    env = _env(tmp_path, THREADS="4")
    assert "WORKERS" not in env and env["THREADS"] == "4"
    assert os.environ["WORKERS"] == "3"
