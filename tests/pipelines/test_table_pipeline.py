"""The table build as a Beam pipeline (DirectRunner, for real, in the Beam venv) against the
in-function builder: the same table, key for key and score for score, the same pointer.

Each test runs one pipeline (a subprocess of .venv-beam's interpreter: a few seconds each).
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import fit_serving_bundle, publish_compiled

from shared.config import Settings, load_settings
from shared.contracts import BuildPath, BuildStatus
from shared.errors import ConfigError
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.pipelines.launch import build_table_routed
from shared.pipelines.options import pipeline_python
from shared.schema import save_schema
from shared.serving.traffic import flush_counts
from shared.storage.local import LocalBucket
from shared.tables.build import build_table
from shared.tables.codec import key_string
from shared.tables.format import read_pointer, read_table
from shared.tables.plan import BuildRequest

# Written at build time, so they differ between any two builds; everything else must match.
BUILD_TIME_FIELDS = {"build_seconds", "built_at", "built_by", "pipeline_parts", "blob"}
PUBLISHED = ("models/versions/", "registry/")  # what a promotion writes besides the current model

pytestmark = pytest.mark.skipif(
    not pipeline_python(load_settings({})).exists(),
    reason="no Beam interpreter at PIPELINE_PYTHON (.venv-beam): `make test` makes it (make venv-beam)",
)


def _settings(root: Path, **overrides: str) -> Settings:
    # A small chunk so that the pipeline's batches split the key space into several parts.
    return load_settings({"LOCAL_BUCKETS_ROOT": str(root), "TABLE_CHUNK_ROWS": "64", **overrides})


def _npz(artifacts: LocalBucket, name: str) -> dict[str, Any]:
    with np.load(io.BytesIO(artifacts.read(name)), allow_pickle=False) as npz:
        return {"codes": npz["codes"], "scores": npz["scores"], "meta": json.loads(str(npz["meta"]))}


def _without_build_time(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in BUILD_TIME_FIELDS}


@pytest.mark.parametrize("form", ["sklearn", "onnx"])
def test_the_pipeline_writes_the_in_function_table_and_switches_the_pointer_the_same_way(
    table_artifacts: LocalBucket, table_bundle: Any, buckets_root: Path, form: str
) -> None:
    if form == "onnx":  # the current model compiled: both builds score with ONNX Runtime
        publish_compiled(table_artifacts, table_bundle)
    settings = _settings(buckets_root)
    in_function = build_table(table_artifacts, settings, BuildRequest("full"))
    assert in_function.status == BuildStatus.BUILT and in_function.rows == 360
    expected = _npz(table_artifacts, str(in_function.table))
    expected_pointer, _ = read_pointer(table_artifacts)

    routed = build_table_routed(
        table_artifacts, settings, BuildRequest("full", force=True), runner=BuildPath.DIRECT
    )

    assert routed.decision is not None and routed.decision.path == BuildPath.DIRECT
    result = routed.result
    assert result["status"] == BuildStatus.BUILT and result["rows"] == 360 and result["pointer_switched"]
    assert "Beam pipeline" in result["message"] and result["details"]["parts"] > 1  # really split up
    assert result["table"] != in_function.table and result["table"].startswith("tables/v1/full-")
    got = _npz(table_artifacts, result["table"])
    assert got["codes"].dtype == expected["codes"].dtype and got["scores"].dtype == expected["scores"].dtype
    assert np.array_equal(got["codes"], expected["codes"])
    assert (got["scores"] == expected["scores"]).all()  # float for float, not approximately
    assert _without_build_time(got["meta"]) == _without_build_time(expected["meta"])
    assert got["meta"]["built_by"] == "pipeline"
    assert got["meta"]["model_form"] == expected["meta"]["model_form"] == form
    pointer, _ = read_pointer(table_artifacts)
    assert pointer is not None and expected_pointer is not None and pointer["blob"] == result["table"]
    assert {k: v for k, v in pointer.items() if k not in ("built_at", "blob")} == {
        k: v for k, v in expected_pointer.items() if k not in ("built_at", "blob")
    }
    assert read_table(table_artifacts, result["table"]).lookup_one(0) == float(expected["scores"][0])
    # The run's part files are gone with its temporary folder; nothing else was left in the bucket.
    names = {info.name for info in table_artifacts.list("") if not info.name.startswith(PUBLISHED)}
    tables = {in_function.table, result["table"], "tables/current.json"}
    assert names == {"schema.json", "models/current.skops", *tables}


def test_a_multiclass_top_k_table_from_traffic_matches_the_in_function_one(buckets_root: Path) -> None:
    bundle = fit_serving_bundle("m1", task="multiclass")
    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    save_schema(artifacts, bundle.schema)
    artifacts.write("models/current.skops", bundle.to_bytes())
    now = datetime.now(UTC)
    counts = {key_string(["us", h]): 100 - h for h in range(24)} | {key_string(["kr", 3]): 7}
    counts[key_string(["xx", 1])] = 5  # not a valid key: counted as invalid, never in the table
    flush_counts(artifacts, counts, ["country", "hour"], "i1", now, now)
    settings = _settings(buckets_root, TABLE_CHUNK_ROWS="8")

    in_function = build_table(artifacts, settings, BuildRequest("top_k", k=20))
    expected = _npz(artifacts, str(in_function.table))
    routed = build_table_routed(
        artifacts, settings, BuildRequest("top_k", k=20, force=True), runner=BuildPath.DIRECT
    )

    assert in_function.rows == 20 and routed.result["rows"] == 20
    got = _npz(artifacts, routed.result["table"])
    assert got["scores"].shape == (20, 3)  # one probability per class
    assert np.array_equal(got["codes"], expected["codes"])
    assert (got["scores"] == expected["scores"]).all()
    assert _without_build_time(got["meta"]) == _without_build_time(expected["meta"])
    assert got["meta"]["expected_hit_rate"] == in_function.expected_hit_rate


def test_a_missing_beam_interpreter_is_named_with_the_way_to_make_it(
    table_artifacts: LocalBucket, buckets_root: Path
) -> None:
    settings = _settings(buckets_root, PIPELINE_PYTHON=str(buckets_root / "no-such-venv/bin/python"))
    with pytest.raises(ConfigError, match=r"PIPELINE_PYTHON=.*no-such-venv.*make venv-beam"):
        build_table_routed(table_artifacts, settings, BuildRequest("full"), runner=BuildPath.DIRECT)
    assert read_pointer(table_artifacts) == (None, 0)  # nothing half-built


def test_the_build_table_function_sends_a_table_over_its_budget_to_the_pipeline_and_says_so(
    table_artifacts: LocalBucket, buckets_root: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LOCAL_BUCKETS_ROOT": str(buckets_root),
        "TABLE_MAX_ROWS": "100",  # the 360-key table no longer fits a function
        "TABLE_CHUNK_ROWS": "64",
        "LOG_FORMAT": "json",
    }
    spec = load_declaration().functions["build_table"]
    with FunctionProcess(spec, free_port(), env, tmp_path / "build_table.log") as function:
        answer = requests.post(function.url, json={"strategy": "auto"}, timeout=120)
        log = function.log_tail()
    assert answer.status_code == 200, log
    body = answer.json()
    assert body["status"] == BuildStatus.BUILT and body["strategy"] == "full" and body["rows"] == 360
    assert body["path"]["path"] == BuildPath.DIRECT
    assert "over TABLE_MAX_ROWS=100 keys a function holds" in body["path"]["reason"]
    assert "table build as a Beam pipeline (direct runner)" in log  # the function's log says it too
    pointer, _ = read_pointer(table_artifacts)
    assert pointer is not None and pointer["rows"] == 360 and pointer["strategy"] == "full"
    assert read_table(table_artifacts, pointer["blob"]).meta["built_by"] == "pipeline"


def test_a_pipeline_that_cannot_start_is_a_409_the_scheduler_does_not_retry(
    table_artifacts: LocalBucket, buckets_root: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LOCAL_BUCKETS_ROOT": str(buckets_root),
        "TABLE_MAX_ROWS": "100",  # the 360-key table goes to the pipeline...
        "PIPELINE_PYTHON": str(tmp_path / "no-beam-here" / "python"),  # ...which cannot start
        "LOG_FORMAT": "json",
    }
    spec = load_declaration().functions["build_table"]
    with FunctionProcess(spec, free_port(), env, tmp_path / "build_table.log") as function:
        answer = requests.post(function.url, json={"strategy": "auto"}, timeout=60)
        log = function.log_tail()
    assert answer.status_code == 409, log
    error = answer.json()["error"]
    assert error["code"] == "misconfigured"
    assert "no-beam-here" in error["message"]
    assert read_pointer(table_artifacts) == (None, 0)  # nothing built, nothing half-built
