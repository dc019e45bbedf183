"""``shared.feedback.join`` on log objects and stored labels written to a real local bucket folder
(by ``write_log`` and ``store_labels``, as predict and the train function write them), checked
against the module's rules applied one row at a time in plain Python: many duplicate ids, equal
times, labels without an event time, several file versions, ids on one side only."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import training_schema

from shared.config import load_settings
from shared.feedback.join import LABEL_TIME, TRUTH, Joined, join, load_labels, load_predictions
from shared.feedback.labels import LabelRows, store_labels
from shared.feedback.log_format import LogBatch, write_log
from shared.storage.local import LocalBucket

SCHEMA = training_schema()


def _write_logs(predictions: LocalBucket, rng: random.Random, ids: list[str]) -> list[dict[str, Any]]:
    """A few log objects of two instances, ids drawn with repeats, times with ties; every row."""
    rows: list[dict[str, Any]] = []
    for seq in range(rng.randint(0, 5)):
        batch = LogBatch()
        instance = rng.choice(["instance-a", "instance-b"])
        for _ in range(rng.randint(1, 30)):
            batch.ids.append(rng.choice(ids))
            batch.times.append(1_700_000_000.0 + rng.randint(0, 5))  # ties across objects
            batch.scores.append(rng.random())
            batch.labels.append(rng.choice(["0", "1"]))
            batch.sources.append(rng.choice(["table", "model"]))
            batch.model_versions.append(rng.choice(["v1", "v2"]))
            batch.table_builds.append("")
            for feature in SCHEMA.features:
                value = feature.domain[0] if feature.type == "category" else float(rng.randint(0, 3))
                batch.features.setdefault(feature.name, []).append(value)
        name = write_log(predictions, batch, SCHEMA, instance, seq)
        for k, prediction_id in enumerate(batch.ids):
            rows.append({"id": prediction_id, "time": batch.times[k], "object": name, "row": k})
            rows[-1]["score"] = batch.scores[k]
    return rows


def _store_labels(artifacts: LocalBucket, rng: random.Random, ids: list[str]) -> list[dict[str, Any]]:
    """A few stored labels objects (each its own file version), ids with repeats; every row."""
    rows: list[dict[str, Any]] = []
    for file in range(rng.randint(0, 4)):
        n = rng.randint(1, 25)
        picked = [rng.choice(ids) for _ in range(n)]
        truth = [rng.choice(["0", "1"]) for _ in range(n)]
        times = [math.nan if rng.random() < 0.4 else 1_700_000_100.0 + rng.randint(0, 3) for _ in range(n)]
        generation = rng.randint(1, 6)  # two files may share a generation: the object name decides
        labels = LabelRows(
            np.array(picked),
            np.array(truth),
            np.array(times),
            "prodml-data",
            f"labels/f{file}.csv",
            generation,
        )
        name, _ = store_labels(artifacts, labels, "clicked", "binary")
        for k in range(n):
            rows.append(
                {
                    "id": picked[k],
                    TRUTH: truth[k],
                    LABEL_TIME: times[k],
                    "generation": generation,
                    "object": name,
                    "row": k,
                }
            )
    return rows


def _expected(logged: list[dict[str, Any]], labels: list[dict[str, Any]]) -> dict[str, Any]:
    """The module doc's rules, row by row."""
    first: dict[str, dict[str, Any]] = {}
    for row in sorted(logged, key=lambda r: (r["time"], r["object"], r["row"])):
        first.setdefault(row["id"], row)
    latest: dict[str, dict[str, Any]] = {}
    no_time = -math.inf  # a label without an event time is older than any with one
    for row in sorted(
        labels,
        key=lambda r: (
            no_time if math.isnan(r[LABEL_TIME]) else r[LABEL_TIME],
            r["generation"],
            r["object"],
            r["row"],
        ),
    ):
        latest[row["id"]] = row
    kept = sorted(first.values(), key=lambda r: (r["time"], r["object"], r["row"]))
    unmatched = sorted(i for i in latest if i not in first)
    return {
        "rows": [(r["id"], r["object"], r["row"], latest.get(r["id"], {}).get(TRUTH)) for r in kept],
        "label_times": [latest[r["id"]][LABEL_TIME] if r["id"] in latest else math.nan for r in kept],
        "duplicate_predictions": len(logged) - len(first),
        "duplicate_labels": len(labels) - len(latest),
        "matched": len(latest) - len(unmatched),
        "unmatched": unmatched,
    }


def _seen(joined: Joined) -> dict[str, Any]:
    rows = joined.rows
    truth = [None if pd.isna(t) else str(t) for t in rows[TRUTH]]
    return {
        "rows": list(zip(rows["id"], rows["object"], rows["row"], truth, strict=True)),
        "label_times": rows[LABEL_TIME].tolist(),
        "duplicate_predictions": joined.counts.duplicate_predictions,
        "duplicate_labels": joined.counts.duplicate_labels,
        "matched": joined.counts.matched_labels,
        "unmatched": list(joined.unmatched_ids),
    }


@pytest.mark.parametrize("seed", range(40))
def test_the_join_keeps_the_first_prediction_and_the_latest_label_of_each_id(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    ids = [f"id-{k:03d}" for k in range(rng.randint(1, 40))]
    predictions = LocalBucket(tmp_path, "prodml-predictions")
    artifacts = LocalBucket(tmp_path, "prodml-artifacts")
    logged = _write_logs(predictions, rng, ids)
    labels = _store_labels(artifacts, rng, ids)
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path)})

    joined = join(load_predictions(predictions, settings), load_labels(artifacts, settings))

    expected = _expected(logged, labels)
    seen = _seen(joined)
    assert seen["rows"] == expected["rows"]
    np.testing.assert_array_equal(seen["label_times"], expected["label_times"])  # NaN where none
    assert seen["duplicate_predictions"] == expected["duplicate_predictions"]
    assert seen["duplicate_labels"] == expected["duplicate_labels"]
    assert seen["matched"] == expected["matched"]
    assert seen["unmatched"] == expected["unmatched"][:20]
    assert joined.counts.unmatched_labels == len(expected["unmatched"])
    assert joined.rows["score"].tolist() == [
        next(r["score"] for r in logged if (r["object"], r["row"]) == (o, k))
        for _, o, k, _ in expected["rows"]
    ]
