"""The shadow's comparison with its champion: agreement at once, the gate's paired test once labels
mature; logs written as predict writes them (``write_log``), labels stored as the train function
stores them, numbers checked against scikit-learn on the same rows."""

from __future__ import annotations

import io
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import training_schema
from sklearn import metrics

from shared.config import Settings, load_settings
from shared.contracts import ModelForm, ShadowChange
from shared.errors import JoinTooLarge
from shared.feedback.labels import LabelRows, store_labels
from shared.feedback.log_format import LogBatch, write_log
from shared.feedback.shadow_compare import compare
from shared.schema import Schema, save_schema
from shared.storage.local import LocalBucket
from shared.training.shadow import ShadowPointer

NOW = time.time()


class Stores:
    """Local artifacts and predictions buckets with a schema; logs and labels written as the system does."""

    def __init__(self, root: Path, schema: Schema, **settings: str) -> None:
        self.schema = schema
        self.settings: Settings = load_settings({"LOCAL_BUCKETS_ROOT": str(root), **settings})
        self.artifacts = LocalBucket(root, "prodml-artifacts")
        self.predictions = LocalBucket(root, "prodml-predictions")
        save_schema(self.artifacts, schema)
        self.seq = 0
        self.labelled = 0

    def log(self, rows: list[dict[str, Any]]) -> None:
        """One flush: id, score, source, model version, and the shadow's score and version."""
        batch = LogBatch(features={f.name: [] for f in self.schema.features})
        for row in rows:
            batch.ids.append(row["id"])
            batch.times.append(row.get("time", NOW - 10))
            batch.scores.append(row["score"])
            batch.labels.append(row.get("label", str(int(row["score"] >= 0.5))))
            batch.sources.append(row.get("source", "model"))
            batch.model_versions.append(row.get("version", "champ"))
            batch.table_builds.append("")
            batch.shadow_scores.append(row.get("shadow"))
            batch.shadow_versions.append(
                row.get("shadow_version", "shad" if row.get("shadow") is not None else "")
            )
            for feature in self.schema.features:
                batch.features[feature.name].append(feature.domain[0] if feature.domain else 1.0)
        self.seq += 1
        write_log(self.predictions, batch, self.schema, "instance-a", self.seq)

    def labels(self, pairs: list[tuple[str, Any]]) -> None:
        self.labelled += 1
        rows = LabelRows(
            ids=np.asarray([i for i, _ in pairs], dtype=str),
            labels=np.asarray([str(v) for _, v in pairs], dtype=str),
            event_times=np.full(len(pairs), math.nan),
            bucket="prodml-data",
            object=f"labels/batch-{self.labelled}.csv",
            generation=self.labelled,
        )
        store_labels(self.artifacts, rows, self.schema.label.name, self.schema.label.task)

    def compare(self, champion: str | None = "champ", started: float | None = None) -> Any:
        began = None if started is None else datetime.fromtimestamp(started, UTC).isoformat()
        pointer = ShadowPointer(
            "shad", ShadowChange.STARTED, "", "test", champion=champion, form=ModelForm.ONNX, started=began
        )
        return compare(
            self.settings, pointer, artifacts=self.artifacts, predictions=self.predictions, now=NOW
        )


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    return Stores(tmp_path, training_schema(), SHADOW_MIN_LABELS="50")


def _traffic(
    rng: np.random.Generator, n: int, shadow_noise: float, champion_noise: float
) -> list[dict[str, Any]]:
    """Rows whose truth is known: each model's score is the truth blurred by its noise."""
    rows = []
    for i in range(n):
        truth = int(rng.random() < 0.5)

        def blur(noise: float, truth: int = truth) -> float:
            return float(np.clip(abs(truth - rng.random() * noise), 0.01, 0.99))

        rows.append(
            {"id": f"id-{i}", "truth": truth, "score": blur(champion_noise), "shadow": blur(shadow_noise)}
        )
    return rows


def test_agreement_per_source_is_the_mean_score_difference_and_the_flipped_labels(stores: Stores) -> None:
    rows = [
        {"id": "a", "score": 0.9, "shadow": 0.7, "source": "table"},
        {"id": "b", "score": 0.6, "shadow": 0.4, "source": "table"},  # flipped: 1 -> 0
        {"id": "c", "score": 0.2, "shadow": 0.25, "source": "model"},
        {"id": "d", "score": 0.3, "shadow": None, "source": "model"},  # not shadow-scored
        {"id": "e", "score": 0.3, "shadow": 0.9, "version": "older"},  # another champion answered
        {"id": "f", "score": 0.3, "shadow": 0.9, "shadow_version": "other"},  # another shadow
    ]
    stores.log(rows)

    result = stores.compare()

    table, model, every = (result.agreement[k] for k in ("table", "model", "all"))
    assert (table.rows, model.rows, every.rows) == (2, 1, 3)
    assert table.mean_abs_difference == pytest.approx(0.2)
    assert table.flipped_share == 0.5 and model.flipped_share == 0.0
    assert every.mean_abs_difference == pytest.approx((0.2 + 0.2 + 0.05) / 3)
    assert result.live.decision == "waiting" and result.live.rows == 0


def test_the_live_comparison_waits_for_min_labels_then_runs_the_gate_test_on_matured_rows(
    stores: Stores,
) -> None:
    rng = np.random.default_rng(0)
    rows = _traffic(rng, 120, shadow_noise=0.4, champion_noise=0.9)  # the shadow is better
    stores.log(rows)
    stores.labels([(r["id"], r["truth"]) for r in rows[:40]])

    waiting = stores.compare().live
    assert (waiting.decision, waiting.rows, waiting.min_rows) == ("waiting", 40, 50)
    assert "40 of SHADOW_MIN_LABELS=50" in waiting.reason

    stores.labels([(r["id"], r["truth"]) for r in rows[40:100]])  # 20 rows stay pending
    live = stores.compare().live

    labelled = rows[:100]
    truth = [r["truth"] for r in labelled]
    assert live.rows == 100 and live.numbers["rows"] == 100
    assert live.champion_metric == pytest.approx(metrics.log_loss(truth, [r["score"] for r in labelled]))
    assert live.shadow_metric == pytest.approx(metrics.log_loss(truth, [r["shadow"] for r in labelled]))
    assert live.decision == "not_worse" and live.reason.startswith("not worse: ")
    assert "100 matured live rows" in live.reason


def test_a_worse_shadow_is_judged_worse_with_its_numbers(stores: Stores) -> None:
    rng = np.random.default_rng(1)
    rows = _traffic(rng, 200, shadow_noise=1.0, champion_noise=0.3)
    stores.log(rows)
    stores.labels([(r["id"], r["truth"]) for r in rows])

    live = stores.compare().live

    assert live.decision == "worse" and live.rows == 200
    assert live.shadow_metric is not None and live.champion_metric is not None
    assert live.shadow_metric > live.champion_metric
    assert live.numbers["lower_bound"] > live.numbers["allowed"]


def test_defaulted_rows_count_once_the_label_window_has_passed(tmp_path: Path) -> None:
    stores = Stores(tmp_path, training_schema(), SHADOW_MIN_LABELS="2", LABEL_WINDOW="60", LABEL_DEFAULT="0")
    stores.log(
        [
            {"id": "old", "score": 0.2, "shadow": 0.1, "time": NOW - 120},  # matured as the default 0
            {"id": "new", "score": 0.2, "shadow": 0.1, "time": NOW - 5},  # still pending
            {"id": "got", "score": 0.8, "shadow": 0.6},
        ]
    )
    stores.labels([("got", 1)])

    live = stores.compare().live

    assert live.rows == 2
    assert live.champion_metric == pytest.approx(metrics.log_loss([0, 1], [0.2, 0.8], labels=[0, 1]))


def test_regression_is_judged_on_rmse_and_flips_nothing(tmp_path: Path) -> None:
    stores = Stores(tmp_path, training_schema("regression"), SHADOW_MIN_LABELS="2")
    stores.log(
        [
            {"id": "a", "score": 10.0, "shadow": 11.0, "label": ""},
            {"id": "b", "score": 20.0, "shadow": 19.0, "label": ""},
            {"id": "c", "score": 30.0, "shadow": 33.0, "label": ""},
        ]
    )
    stores.labels([("a", 12.0), ("b", 20.0), ("c", 30.0)])

    result = stores.compare()

    assert result.agreement["all"].flipped_share is None
    assert result.agreement["all"].mean_abs_difference == pytest.approx(5 / 3)
    assert result.live.metric == "rmse"
    assert result.live.champion_metric == pytest.approx(math.sqrt(4 / 3))
    assert result.live.shadow_metric == pytest.approx(math.sqrt((1 + 1 + 9) / 3))


def test_logs_written_before_shadows_existed_compare_as_no_rows(stores: Stores) -> None:
    batch = LogBatch(
        features={f.name: [1.0 if f.type != "category" else f.domain[0]] for f in stores.schema.features}
    )
    batch.ids.append("x")
    batch.times.append(NOW)
    batch.scores.append(0.4)
    batch.labels.append("0")
    batch.sources.append("model")
    batch.model_versions.append("champ")
    batch.table_builds.append("")
    name = write_log(stores.predictions, batch, stores.schema, "old", 1)
    # Strip the shadow columns, as a file of the earlier format has none.
    with np.load(io.BytesIO(stores.predictions.read(name)), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if not k.startswith("shadow_")}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    stores.predictions.write(name, buffer.getvalue())

    result = stores.compare()

    assert result.agreement["all"].rows == 0 and result.live.rows == 0


def test_a_version_started_again_is_judged_on_its_new_run_only(stores: Stores) -> None:
    earlier = [{"id": f"old-{i}", "score": 0.9, "shadow": 0.1, "time": NOW - 3600} for i in range(60)]
    now = [{"id": f"new-{i}", "score": 0.6, "shadow": 0.55, "time": NOW - 10} for i in range(5)]
    stores.log(earlier + now)
    stores.labels([(r["id"], 1) for r in earlier + now])

    whole = stores.compare()
    run = stores.compare(started=NOW - 60)

    assert whole.live.rows == 65 and whole.live.decision == "worse"  # the earlier run's evidence
    assert run.live.rows == 5 and run.live.decision == "waiting"
    assert run.agreement["all"].rows == 5


def test_the_log_of_days_before_the_run_is_not_read(tmp_path: Path) -> None:
    stores = Stores(tmp_path, training_schema(), JOIN_MAX_ROWS="50", SHADOW_MIN_LABELS="2")
    stores.log([{"id": f"old-{i}", "score": 0.5, "time": NOW - 5 * 86400} for i in range(100)])
    stores.log([{"id": f"new-{i}", "score": 0.7, "shadow": 0.8} for i in range(3)])
    stores.labels([(f"new-{i}", 1) for i in range(3)])

    with pytest.raises(JoinTooLarge):
        stores.compare()  # the whole log: more than the join may hold
    result = stores.compare(started=NOW - 3600)  # the run's days only

    assert result.live.rows == 3 and result.live.decision == "not_worse"
