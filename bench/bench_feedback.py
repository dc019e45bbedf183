"""The feedback loop's join (``shared.feedback.join``): rows per second against an in-memory pandas
merge of the same rows.

The prediction log is written as predict writes it (``write_log``: one npz object per flush of
5,000 rows, uuid4-hex ids) and the labels as the train function stores them (``store_labels``:
four files, a tenth of their ids never served, some ids labelled in several files, half without
an event time), to a local bucket folder; ``load_predictions`` and ``load_labels`` read them back.

1. The join alone (``join`` of the loaded frames: ordering, dedupe of predictions and labels, the
   label of each prediction, the unmatched labels), in rows per second (log rows + label rows),
   against ``pd.merge`` of the same two frames on ``id`` (a left merge, no dedupe, no ordering).
   Goal: >= 0.5x. The join alone, because the merge's frames are in memory: the load reads and
   decompresses objects from a bucket, a cost the merge does not have (row 2 shows it).
2. Load + join (what ``prodml live`` and the train function run), informational, against the join
   alone.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from bench.common import Row, goal_row, median_seconds
from shared.config import load_settings
from shared.feedback.join import LABEL_TIME, TRUTH, Loaded, join, load_labels, load_predictions
from shared.feedback.labels import LabelRows, store_labels
from shared.feedback.log_format import LogBatch, write_log
from shared.local.synth import synth_schema
from shared.storage.local import LocalBucket

AREA = "feedback"
JOIN_GOAL = 0.5
ROWS_PER_OBJECT = 5000  # PREDICTION_LOG_BATCH_ROWS' default: one flush of a busy instance
LABEL_FILES = 4
UNSERVED_SHARE = 0.1
START = 1_767_225_600.0  # 2026-01-01 UTC


def _write_log(predictions: LocalBucket, ids: np.ndarray, rng: np.random.Generator) -> None:
    schema = synth_schema()
    for seq, first in enumerate(range(0, len(ids), ROWS_PER_OBJECT)):
        chunk = ids[first : first + ROWS_PER_OBJECT]
        n = len(chunk)
        batch = LogBatch(
            ids=chunk.tolist(),
            times=(START + np.arange(first, first + n) * 0.01).tolist(),
            scores=rng.random(n).tolist(),
            labels=["0"] * n,
            sources=["model"] * n,
            model_versions=["v1"] * n,
            table_builds=[""] * n,
        )
        for feature in schema.features:
            value = feature.domain[0] if feature.type == "category" else 1.0
            batch.features[feature.name] = [value] * n
        write_log(predictions, batch, schema, "bench-instance", seq)


def _store_labels(artifacts: LocalBucket, ids: np.ndarray, rows: int, rng: np.random.Generator) -> None:
    unserved = int(rows * UNSERVED_SHARE)
    labelled = np.concatenate(
        [rng.choice(ids, rows - unserved), np.array([uuid.uuid4().hex for _ in range(unserved)])]
    )
    for file in range(LABEL_FILES):
        part = labelled[file::LABEL_FILES]
        times = np.where(rng.random(len(part)) < 0.5, math.nan, START + rng.random(len(part)) * 1000)
        truth = rng.integers(0, 2, len(part)).astype(str)
        rows_of_file = LabelRows(part, truth, times, "prodml-data", f"labels/day-{file}.csv", 100 + file)
        store_labels(artifacts, rows_of_file, "clicked", "binary")


def _merge(logged: Loaded, labels: Loaded) -> object:
    return logged.frame.merge(labels.frame[["id", TRUTH, LABEL_TIME]], on="id", how="left")


def run(quick: bool) -> list[Row]:
    """The join's rows per second against a pandas merge, and with its load."""
    log_rows = 100_000 if quick else 400_000
    label_rows = log_rows // 2
    repeat = 3 if quick else 7
    rng = np.random.default_rng(0)
    ids = np.array([uuid.UUID(int=int(x), version=4).hex for x in rng.integers(0, 2**62, log_rows)])
    with tempfile.TemporaryDirectory(prefix="bench-feedback-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        root = Path(tmp)
        predictions = LocalBucket(root, "prodml-predictions")
        artifacts = LocalBucket(root, "prodml-artifacts")
        _write_log(predictions, ids, rng)
        _store_labels(artifacts, ids, label_rows, rng)
        settings = load_settings({"LOCAL_BUCKETS_ROOT": str(root), "JOIN_MAX_ROWS": str(10 * log_rows)})

        def load_and_join() -> object:
            return join(load_predictions(predictions, settings), load_labels(artifacts, settings))

        logged, labels = load_predictions(predictions, settings), load_labels(artifacts, settings)
        # Interleaved: each repeat times the join, then the merge, then the load + join, so a burst
        # of noise on this shared machine hits them alike; medians of each.
        times: dict[str, list[float]] = {"join": [], "merge": [], "load": []}
        for _ in range(repeat):
            times["join"].append(median_seconds(lambda: join(logged, labels), repeat=1, warmup=0))
            times["merge"].append(median_seconds(lambda: _merge(logged, labels), repeat=1, warmup=0))
            times["load"].append(median_seconds(load_and_join, repeat=1, warmup=0))
    rows = log_rows + label_rows
    joined, merged, loaded = (float(np.median(times[k])) for k in ("join", "merge", "load"))
    size = f"{log_rows:,} log + {label_rows:,} label rows"
    return [
        goal_row(
            AREA,
            f"join alone, {size} (dedupe both sides, label per prediction, unmatched)",
            rows / joined,
            "rows/s",
            f"pandas left merge of the same frames ({rows / merged:,.0f} rows/s)",
            merged / joined,
            at_least=JOIN_GOAL,
        ),
        goal_row(
            AREA,
            f"load + join, {size} in {math.ceil(log_rows / ROWS_PER_OBJECT)} + {LABEL_FILES} objects",
            rows / loaded,
            "rows/s",
            f"the join alone ({rows / joined:,.0f} rows/s)",
            joined / loaded,
        ),
    ]
