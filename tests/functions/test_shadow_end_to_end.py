"""A shadow run end to end in real processes (issue 16): a real train process under
PROMOTION_POLICY=shadow puts a challenger in shadow; a real predict process, which hot-reloads it,
answers every request with the champion and writes the shadow's score of the same instance into
its log; a labels file then makes the train process promote the shadow on those live labels, and
predict serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import deliver, drop_file, serving_env, train_env, training_rows, training_schema, wait_for

from shared.contracts import CURRENT_MODEL, CURRENT_VERSION_METADATA, CardStatus, EventOutcome
from shared.feedback.join import load_predictions
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.model import ModelBundle, to_frame
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger, registry, shadow

pytestmark = pytest.mark.slow

MIN_LABELS = 80


def start(name: str, env: dict[str, str], log: Path) -> FunctionProcess:
    return FunctionProcess(load_declaration().functions[name], free_port(), env, log).start()


def test_a_challenger_in_shadow_is_scored_on_live_traffic_and_promoted_on_its_labels(tmp_path: Path) -> None:
    root = tmp_path / "buckets"
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    predictions = LocalBucket(root, "prodml-predictions")
    save_schema(artifacts, training_schema())
    settings = {"PROMOTION_POLICY": "shadow", "SHADOW_MIN_LABELS": str(MIN_LABELS), "SHADOW_RATE": "1.0"}
    train = start("train", train_env(root, **settings), tmp_path / "train.log")
    predict = start(
        "predict",
        serving_env(
            root,
            SERVING_MODE="dynamic",
            RELOAD_SECONDS="0.2",
            PREDICTIONS_BUCKET="prodml-predictions",
            PREDICTION_LOG_FLUSH_SECONDS="3600",  # written at its graceful stop, below
            **settings,
        ),
        tmp_path / "predict.log",
    )
    try:
        markers = []
        for n in (1, 2):
            info = drop_file(data, f"incoming/day-{n}.csv", training_rows(400, n))
            assert deliver(train.url, info) == [200], train.log_tail()
            markers.append(ledger.read_processed(artifacts, data.name, info.name, info.generation))
        champion, challenger = (m["version"] for m in markers)  # type: ignore[index]
        assert [m["outcome"] for m in markers] == [EventOutcome.PROMOTED, EventOutcome.SHADOW]  # type: ignore[index]

        health = wait_for(
            lambda: requests.get(f"{predict.url}/health", timeout=10).json(),
            lambda h: (h.get("shadow") or {}).get("version") == challenger,
        )
        assert health["model"]["version"] == champion

        instances = training_rows(2 * MIN_LABELS, 7).drop(columns=["converted"])
        frame = to_frame(training_schema(), instances)
        champion_scores = ModelBundle.from_bytes(artifacts.read(registry.model_name(champion))).scores(frame)
        ids = [f"imp-{i}" for i in range(len(instances))]
        answers: list[dict[str, Any]] = []
        for start_row in range(0, len(ids), 40):
            body = {
                "instances": instances.iloc[start_row : start_row + 40].to_dict(orient="records"),
                "ids": ids[start_row : start_row + 40],
            }
            response = requests.post(predict.url, json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == champion  # the answer is the champion's
            answers.extend(response.json()["predictions"])
        # Every answer is the champion's score of that instance (compiled: within its tolerance).
        assert np.allclose([a["score"] for a in answers], champion_scores, rtol=0, atol=1e-6)
        predict.stop()  # graceful: the log is written

        logged = load_predictions(predictions, train_env_settings(root)).frame.set_index("id").loc[ids]
        shadow_scores = ModelBundle.from_bytes(artifacts.read(registry.model_name(challenger))).scores(frame)
        assert list(logged["shadow_version"]) == [challenger] * len(ids)
        assert np.allclose(logged["shadow_score"].to_numpy(), shadow_scores, rtol=0, atol=1e-6)
        assert list(logged["score"]) == [a["score"] for a in answers]

        # Outcomes drawn from the shadow's own probabilities: the better model on these labels.
        rng = np.random.default_rng(3)
        outcomes = (rng.random(len(ids)) < shadow_scores).astype(int)
        csv = "id,converted\n" + "".join(f"{i},{y}\n" for i, y in zip(ids, outcomes, strict=True))
        info = drop_file(data, "labels/day-2.csv", csv.encode())
        assert deliver(train.url, info) == [200], train.log_tail()

        marker = ledger.read_processed(artifacts, data.name, info.name, info.generation)
        assert marker is not None and marker["outcome"] == EventOutcome.LABELS_STORED
        assert f"shadow {challenger}: promoted" in marker["message"], marker["message"]
        assert artifacts.stat(CURRENT_MODEL).metadata[CURRENT_VERSION_METADATA] == challenger
        assert registry.read_card(artifacts, challenger).status == CardStatus.PROMOTED
        pointer = shadow.read_pointer(artifacts)
        assert pointer is not None and not pointer.running and pointer.numbers["rows"] == len(ids)

        predict = start("predict", serving_env(root, SERVING_MODE="dynamic"), tmp_path / "predict-2.log")
        body = {"instances": instances.iloc[:1].to_dict(orient="records")}
        assert requests.post(predict.url, json=body, timeout=30).json()["model_version"] == challenger
    finally:
        predict.stop()
        train.stop()


def train_env_settings(root: Path) -> Any:
    """Settings of a CLI run on these buckets (the join reads the log as `prodml live` does)."""
    from shared.config import load_settings

    return load_settings(train_env(root))
