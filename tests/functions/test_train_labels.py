"""Labels files through a real train function process: stored once however delivered (twice,
and twice at once), the live report written beside, a bad file quarantined with its reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import deliver, drop_file, train_env, training_schema

from shared.contracts import LIVE_REPORT_BLOB, EventOutcome
from shared.feedback.log_format import LogBatch, write_log
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FunctionProcess, Path]]:
    tmp = tmp_path_factory.mktemp("train-labels")
    root = tmp / "buckets"
    save_schema(LocalBucket(root, "prodml-artifacts"), training_schema())
    spec = load_declaration().functions["train"]
    process = FunctionProcess(spec, free_port(), train_env(root), log_path=tmp / "train.log").start()
    try:
        yield process, root
    finally:
        process.stop()


def test_a_labels_file_delivered_twice_at_once_and_again_is_stored_once(
    train: tuple[FunctionProcess, Path],
) -> None:
    process, root = train
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    batch = LogBatch(
        ids=["a", "b", "c"],
        times=[time.time()] * 3,
        scores=[0.2, 0.7, 0.9],
        labels=["0", "1", "1"],
        sources=["model"] * 3,
        model_versions=["v1"] * 3,
        table_builds=[""] * 3,
        features={"country": ["br"] * 3, "hour": [1, 2, 3], "bid": [1.0, 2.0, 3.0]},
    )
    write_log(LocalBucket(root, "prodml-predictions"), batch, training_schema(), "instance-1", 1)
    info = drop_file(data, "labels/day.csv", b"id,converted\na,0\nb,1\nzz,1\n")

    with ThreadPoolExecutor(2) as pool:  # one event id delivered twice at the same moment
        results = list(pool.map(lambda _: deliver(process.url, info, event_id="ev-1"), range(2)))
    assert all(r[-1] == 200 for r in results), (results, process.log_tail())
    assert deliver(process.url, info, event_id="ev-2") == [200]  # and once more, later

    stored = [i.name for i in artifacts.list("feedback/labels/")]
    assert stored == [f"feedback/labels/prodml-data/labels/day.csv@{info.generation}.npz"]
    marker = ledger.read_processed(artifacts, "prodml-data", "labels/day.csv", info.generation)
    assert marker is not None and marker["outcome"] == EventOutcome.LABELS_STORED
    report = json.loads(artifacts.read(LIVE_REPORT_BLOB))
    assert report["totals"]["labelled"] == 2 and report["labels"]["unmatched"] == 1
    assert report["labels"]["rows"] == 3  # joined once


def test_a_bad_labels_file_is_quarantined_with_its_reason(train: tuple[FunctionProcess, Path]) -> None:
    process, root = train
    data = LocalBucket(root, "prodml-data")
    info = drop_file(data, "labels/bad.csv", b"id,converted\na,7\n")
    assert deliver(process.url, info) == [200], process.log_tail()
    reason = json.loads(data.read("quarantine/labels/bad.csv.reason.json"))
    assert reason["rule"] == "invalid_label" and "'converted'" in reason["message"]
    assert not data.exists("labels/bad.csv")
