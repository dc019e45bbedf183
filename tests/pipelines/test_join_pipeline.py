"""The join of the prediction log with the labels as a Beam pipeline (DirectRunner, for real, in
the Beam venv) against the in-function join on the same stores: the same live report, field for
field and float for float, and the same joined rows, where the in-function join refuses the size.

One pipeline run, started the way a user starts it: the ``prodml pipeline join`` command.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import train_env, training_rows, training_schema

from shared.config import load_settings
from shared.contracts import JOIN_REPORT_PREFIX, LIVE_REPORT_BLOB, EventOutcome
from shared.data.monitoring import reference_stats
from shared.errors import JoinTooLarge
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback import join, maturity, report
from shared.feedback.log_format import LogBatch, write_log
from shared.pipelines.options import pipeline_python
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import registry
from shared.training.card import ModelCard
from shared.training.on_event import handle_event

SCHEMA = training_schema()
RUN_FIELDS = {"run_id", "shards", "report", "joined_rows"}  # the pipeline's own, beside the report

pytestmark = pytest.mark.skipif(
    not pipeline_python(load_settings(os.environ)).exists(),
    reason="no Beam interpreter at PIPELINE_PYTHON (.venv-beam): `make test` makes it (make venv-beam)",
)


class Stores:
    """Local buckets with the binary schema; logs written as predict writes them, labels files
    through the train function's handler."""

    def __init__(self, env: dict[str, str]) -> None:
        root = Path(env["LOCAL_BUCKETS_ROOT"])
        self.settings = load_settings(env)
        self.data = LocalBucket(root, "prodml-data")
        self.artifacts = LocalBucket(root, "prodml-artifacts")
        self.predictions = LocalBucket(root, "prodml-predictions")
        save_schema(self.artifacts, SCHEMA)
        self.seq = 0

    def log(self, served: pd.DataFrame) -> str:
        """One flush of ``served`` (id, time, score, source, version and the features)."""
        batch = LogBatch()
        for row in served.to_dict("records"):
            batch.ids.append(row["id"])
            batch.times.append(row["time"])
            batch.scores.append(row["score"])
            batch.labels.append(str(int(row["score"] >= 0.5)))
            batch.sources.append(row["source"])
            batch.model_versions.append(row["version"])
            batch.table_builds.append("tables/v/full-x.npz" if row["source"] == "table" else "")
            for feature in SCHEMA.features:
                batch.features.setdefault(feature.name, []).append(row[feature.name])
        self.seq += 1
        return write_log(self.predictions, batch, SCHEMA, "instance-a", self.seq)

    def labels(self, name: str, frame: pd.DataFrame) -> None:
        self.data.write(name, frame.to_csv(index=False).encode())
        event = parse_storage_event(to_cloudevent(self.data.stat(name)))
        status = handle_event(event, self.settings, data=self.data, artifacts=self.artifacts).status
        assert status == EventOutcome.LABELS_STORED


def _served(now: float, rng: np.random.Generator) -> pd.DataFrame:
    """240 predictions of two versions from both sources, half of them two hours old; v2 served a
    stream with ``bid`` shifted (skewed against its card)."""
    n = 240
    features = training_rows(n, seed=11)
    version = np.where(np.arange(n) % 2 == 0, "v1", "v2")
    features.loc[version == "v2", "bid"] = np.clip(features.loc[version == "v2", "bid"] + 4.0, 0.0, 10.0)
    return features.drop(columns=["converted"]).assign(
        id=[f"p{i:04d}" for i in range(n)],
        time=np.where(np.arange(n) < n // 2, now - 7200.0, now - 60.0) + np.arange(n) * 0.01,
        score=np.round(rng.uniform(0.02, 0.98, n), 4),
        source=np.where(np.arange(n) % 3 == 0, "table", "model"),
        version=version,
    )


def _fill(stores: Stores) -> None:
    """Logs and labels with every rule of the join at work: an id logged twice (in two objects),
    labels before their log, unknown ids, an id labelled twice, a file uploaded twice, and an
    unreadable object in each store."""
    rng = np.random.default_rng(5)
    now = time.time()
    served = _served(now, rng)
    truth = (rng.random(len(served)) < served["score"].to_numpy()).astype(int)
    reference = reference_stats(training_rows(2000, seed=1), SCHEMA)
    for version in ("v1", "v2"):
        registry.write_card(stores.artifacts, ModelCard(version=version, reference=reference))
    stores.log(served.iloc[:100])
    stores.log(served.iloc[100:180])
    stores.log(served.iloc[[3]].assign(time=now, score=0.99))  # p0003 again, later: the first wins
    stores.predictions.write("predictions/2026-01-01/junk.npz", b"not a zip")
    labels = pd.DataFrame({"id": served["id"], "converted": truth, "event_time": now - 30})
    stores.labels("labels/early.csv", labels.iloc[180:220])  # before their log (written below)
    day = pd.concat([labels.iloc[:150:2], pd.DataFrame({"id": ["ghost-1", "ghost-2"], "converted": [1, 0]})])
    stores.labels("labels/day.csv", day)
    stores.labels("labels/day.csv", day)  # uploaded again: a new file version, its rows duplicates
    correction = pd.DataFrame({"id": ["p0004"], "converted": [1 - truth[4]], "event_time": [now - 10]})
    stores.labels("labels/correction.csv", correction)
    stores.artifacts.write("feedback/labels/prodml-data/broken.csv@1.npz", b"not a zip")
    stores.log(served.iloc[180:])


def _undated(ages: dict[str, Any]) -> dict[str, Any]:
    """The report's ages without the seconds (each report measures them at its own moment)."""
    return {
        part: {k: v for k, v in value.items() if k != "age_seconds"} if isinstance(value, dict) else value
        for part, value in ages.items()
    }


def _without(document: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in fields}


def _joined_rows(artifacts: LocalBucket, prefix: str) -> pd.DataFrame:
    parts = [i.name for i in artifacts.list(prefix)]
    frames = [pd.read_parquet(io.BytesIO(artifacts.read(p))) for p in parts]
    return pd.concat(frames, ignore_index=True).sort_values("id").reset_index(drop=True)


def test_the_pipeline_join_equals_the_in_function_join_where_the_function_refuses_it(
    tmp_path: Path,
) -> None:
    env = train_env(
        tmp_path / "buckets", LOG_FORMAT="text", LOG_LEVEL="warning", LABEL_WINDOW="1h", LABEL_DEFAULT="0"
    )
    stores = Stores(env)
    _fill(stores)

    # The in-function join and its report, on the same stores (within its default bound).
    expected = report.build_report(stores.settings)
    joined = join.load_and_join(stores.predictions, stores.artifacts, stores.settings)
    expected_rows = maturity.mature(joined.rows, time.time(), 3600.0, "0")
    assert expected["labels"]["unmatched"] == 2 and expected["log"]["duplicate_ids"] == 1
    assert expected["totals"]["defaulted"] > 0 and expected["totals"]["pending"] > 0
    assert [v["skew"]["skewed"] for v in expected["versions"]] == [[], ["bid"]]
    # With a bound below the rows, the function refuses and names the pipeline.
    small = load_settings({**env, "JOIN_MAX_ROWS": "100"})
    with pytest.raises(JoinTooLarge, match="prodml pipeline join"):
        report.build_report(small)

    cli = [str(Path(sys.executable).with_name("prodml")), "pipeline", "join", "--shards", "4", "--json"]
    done = subprocess.run(
        cli, env={**env, "JOIN_MAX_ROWS": "100"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

    # Ages are of the moment each report was made (the same model and table, seconds apart).
    assert _without(result, {"generated_at", "ages", *RUN_FIELDS}) == _without(
        expected, {"generated_at", "ages"}
    )
    assert _undated(result["ages"]) == _undated(expected["ages"])
    run_id = result["run_id"]
    assert result["report"] == f"{JOIN_REPORT_PREFIX}{run_id}.json" and result["shards"] == 4
    assert json.loads(stores.artifacts.read(result["report"])) == result
    assert json.loads(stores.artifacts.read(LIVE_REPORT_BLOB)) == result  # what dashboards read

    rows = _joined_rows(stores.artifacts, result["joined_rows"]["prefix"])
    assert result["joined_rows"] == {"prefix": f"{JOIN_REPORT_PREFIX}{run_id}/", "parts": 4, "rows": 240}
    want = expected_rows.sort_values("id").reset_index(drop=True)
    assert list(rows.columns) == list(want.columns)
    pd.testing.assert_frame_equal(rows, want, check_dtype=False)


def test_the_text_form_is_the_live_report_and_says_where_it_went(tmp_path: Path) -> None:
    env = train_env(tmp_path / "buckets", LOG_FORMAT="text", LOG_LEVEL="warning")
    stores = Stores(env)
    stores.log(_served(time.time(), np.random.default_rng(1)).iloc[:10].assign(version="v\x1b]0;x\x07"))
    cli = [str(Path(sys.executable).with_name("prodml")), "pipeline", "join"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prediction log: 10 rows in 1 objects" in done.stdout
    assert "version v\\x1b]0;x\\x07" in done.stdout and "\x1b" not in done.stdout  # escaped
    assert f"report {JOIN_REPORT_PREFIX}" in done.stdout and "(10 rows, 1 parts)" in done.stdout
