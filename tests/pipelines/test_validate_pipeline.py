"""Bulk validation as a Beam pipeline (DirectRunner, for real) against the train function's own
handling of the same files: exactly the bad ones quarantined, each with the same rule and message.

One pipeline run, started the way a user starts it: the ``prodml pipeline validate`` command.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TABLE_SCHEMA_JSON

from shared.config import load_settings
from shared.data.monitoring import reference_stats
from shared.data.quarantine import list_quarantine
from shared.data.validation import validate_file
from shared.events import FINALIZED, StorageObjectEvent
from shared.pipelines.options import pipeline_python
from shared.schema import Schema, save_schema
from shared.storage.local import LocalBucket
from shared.training.on_event import handle_event

SCHEMA = Schema.from_dict(TABLE_SCHEMA_JSON)

pytestmark = pytest.mark.skipif(
    not pipeline_python(load_settings({})).exists(),
    reason="no Beam interpreter at PIPELINE_PYTHON (.venv-beam): `make test` makes it (make venv-beam)",
)


def _good_frame(seed: int, rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hour = rng.integers(0, 24, rows)
    bid = rng.uniform(0, 10, rows).round(3)
    return pd.DataFrame(
        {
            "country": rng.choice(["br", "de", "kr", "us", "jp"], rows),
            "hour": hour,
            "device": rng.choice(["mobile", "desktop", "tablet"], rows),
            "segment": rng.choice(["new", "loyal"], rows),
            "bid": bid,
            "converted": ((hour > 11) ^ (rng.uniform(size=rows) < 0.2)).astype(int),
        }
    )


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _files() -> dict[str, bytes]:
    """A folder of good files in every format and bad files breaking one rule each."""
    parquet = io.BytesIO()
    _good_frame(3).to_parquet(parquet, index=False)
    out_of_range = _good_frame(4)
    out_of_range.loc[5, "hour"] = 30
    unseen = _good_frame(5)
    unseen["country"] = unseen["country"].astype(object)
    unseen.loc[[2, 7], "country"] = "zz"
    return {
        "incoming/good-1.csv": _csv(_good_frame(1)),
        "incoming/good-2.jsonl": _good_frame(2).to_json(orient="records", lines=True).encode(),
        "incoming/good-3.parquet": parquet.getvalue(),
        "incoming/out-of-range.csv": _csv(out_of_range),
        "incoming/unseen-country.csv": _csv(unseen),
        "incoming/no-device.csv": _csv(_good_frame(6).drop(columns=["device"])),
        "incoming/header-only.csv": b"country,hour,device,segment,bid,converted\n",
        "incoming/junk.parquet": b"this is not a parquet file",
    }


def _drop(root: Path) -> tuple[LocalBucket, LocalBucket]:
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, SCHEMA)
    for name, body in _files().items():
        data.write(name, body)
    return data, artifacts


def _reasons(data: LocalBucket) -> dict[str, tuple[str, str]]:
    return {r["object"]: (r["rule"], r["message"]) for r in list_quarantine(data)}


def test_bulk_validation_quarantines_exactly_the_files_the_train_function_does_with_its_reasons(
    tmp_path: Path,
) -> None:
    # What the train function does with each file, one event at a time.
    train_root = tmp_path / "train"
    data, artifacts = _drop(train_root)
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(train_root)})
    statuses = {}
    for info in data.list("incoming/"):
        now = datetime.now(UTC)
        event = StorageObjectEvent(
            data.name, info.name, info.generation, info.size, None, now, now, f"e-{info.name}", FINALIZED
        )
        statuses[info.name] = handle_event(event, settings, data=data, artifacts=artifacts).status
    by_train = _reasons(data)
    assert set(by_train) == {n for n, s in statuses.items() if s == "quarantined"}
    assert len(by_train) == 5  # the five bad files, and only them

    # The same files, validated in bulk by the pipeline through the CLI.
    root = tmp_path / "pipeline"
    data, artifacts = _drop(root)
    env = {**os.environ, "LOCAL_BUCKETS_ROOT": str(root), "LOG_FORMAT": "text"}
    cli = [str(Path(sys.executable).with_name("prodml")), "pipeline", "validate", "incoming/"]
    done = subprocess.run([*cli, "--json"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert _reasons(data) == by_train  # same files, same rule, same message
    assert {o["object"] for o in report["outcomes"] if o["status"] == "quarantined"} == set(by_train)
    assert report["accepted"] == 3 and report["quarantined"] == 5 and report["gone"] == 0
    good = sorted(n for n in _files() if n not in by_train)
    assert sorted(info.name for info in data.list("incoming/")) == good  # accepted files stay for training
    assert sorted(
        info.name for info in data.list("quarantine/") if not info.name.endswith(".json")
    ) == sorted(n.replace("incoming/", "quarantine/") for n in by_train)

    # The reference statistics are those of every accepted row (fewer rows than the sample cap).
    frames = []
    for name in good:
        path = tmp_path / Path(name).name
        path.write_bytes(data.read(name))
        frames.append(validate_file(path, name, SCHEMA, settings).frame)
    accepted = pd.concat(frames, ignore_index=True)
    assert report["accepted_rows"] == report["sampled_rows"] == len(accepted) == 180
    assert report["reference"] == json.loads(json.dumps(reference_stats(accepted, SCHEMA)))
    stored = json.loads(artifacts.read(report["report"]))
    assert stored["outcomes"] == report["outcomes"]
