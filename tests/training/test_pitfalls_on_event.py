"""Label leakage and the served share, checked by the train function at each data file (issue 15
item 9): in-process ``handle_event`` on real local buckets, the prediction log written by
``write_log`` into the real predictions bucket folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from conftest import drop_file, training_rows, training_schema

from shared.config import Settings, load_settings
from shared.contracts import LEAKAGE_RULE, MonitoringDecision
from shared.data import monitoring
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback.log_format import LogBatch, write_log
from shared.feedback.served_share import NO_ID_COLUMN
from shared.schema import save_schema
from shared.storage import predictions_bucket
from shared.storage.local import LocalBucket
from shared.training import registry
from shared.training.on_event import Outcome, handle_event

SCHEMA = training_schema("binary")


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path / "buckets"), **env})


def _send(settings: Settings, name: str, rows: pd.DataFrame) -> tuple[Outcome, LocalBucket, LocalBucket]:
    data = LocalBucket(settings.local_buckets_root, settings.data_bucket)
    artifacts = LocalBucket(settings.local_buckets_root, settings.artifacts_bucket)
    save_schema(artifacts, SCHEMA)
    info = drop_file(data, name, rows)
    event = parse_storage_event(to_cloudevent(info))
    return handle_event(event, settings, data=data, artifacts=artifacts), data, artifacts


def _leaky_rows(rows: int = 600) -> pd.DataFrame:
    frame = training_rows(rows, 11)
    noise = np.random.default_rng(11).uniform(0.0, 4.9, rows)
    frame["bid"] = np.round(frame["converted"] * 5.0 + noise, 3)  # bid >= 5 exactly when converted
    return frame


def _record(artifacts: LocalBucket, name: str, data: LocalBucket) -> dict[str, Any]:
    record = monitoring.read_record(artifacts, name, data.stat(name).generation)
    assert record is not None
    return record


def _card(artifacts: LocalBucket, outcome: Outcome) -> dict[str, Any]:
    assert outcome.version is not None
    return registry.read_card(artifacts, outcome.version).to_dict()


def test_a_leaking_feature_is_trained_with_a_warning_naming_it(tmp_path: Path) -> None:
    outcome, data, artifacts = _send(_settings(tmp_path), "incoming/leaky.csv", _leaky_rows())
    assert outcome.status == "promoted"
    record = _record(artifacts, "incoming/leaky.csv", data)
    assert record["decision"] == MonitoringDecision.WARNING
    assert record["leakage"]["leaking"] == ["bid"]
    assert record["leakage"]["scores"]["bid"] >= 0.99
    (warning,) = record["warnings"]
    assert "label leakage: 'bid' (ROC AUC 1.0000)" in warning
    card = _card(artifacts, outcome)
    assert card["data_checks"]["object"] == "incoming/leaky.csv"
    assert card["data_checks"]["warnings"] == [warning]


def test_a_leaking_feature_under_the_quarantine_policy_quarantines_the_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path, LEAKAGE_POLICY="quarantine")
    outcome, data, artifacts = _send(settings, "incoming/leaky.csv", _leaky_rows())
    assert (outcome.status, outcome.rule) == ("quarantined", LEAKAGE_RULE)
    assert list(data.list("incoming/")) == []
    reason = json.loads(data.read("quarantine/leaky.csv.reason.json"))
    assert reason["rule"] == LEAKAGE_RULE
    assert "'bid' (ROC AUC 1.0000) alone predicts the label" in reason["message"]
    record = monitoring.read_record(artifacts, "incoming/leaky.csv", reason["generation"])
    assert record is not None
    assert (record["decision"], record["rule"]) == (MonitoringDecision.QUARANTINED, LEAKAGE_RULE)
    assert record["leakage"]["leaking"] == ["bid"]
    assert registry.read_current(artifacts, settings.model_trusted_types) is None


def test_a_file_without_leakage_or_ids_has_no_warning(tmp_path: Path) -> None:
    outcome, data, artifacts = _send(_settings(tmp_path), "incoming/day-1.csv", training_rows(600, 1))
    assert outcome.status == "promoted"
    record = _record(artifacts, "incoming/day-1.csv", data)
    assert record["decision"] == MonitoringDecision.ACCEPTED
    assert (record["warnings"], record["leakage"]["leaking"]) == ([], [])
    assert set(record["leakage"]["scores"]) == {"country", "hour", "bid"}
    assert (record["served_share"], record["served"]["note"]) == (None, NO_ID_COLUMN)
    assert _card(artifacts, outcome)["data_checks"]["served_share"] is None


def _log_ids(settings: Settings, ids: list[str]) -> None:
    n = len(ids)
    batch = LogBatch(
        ids=ids,
        times=[time.time()] * n,
        scores=[0.5] * n,
        labels=["1"] * n,
        sources=["model"] * n,
        model_versions=["v0"] * n,
        table_builds=[""] * n,
        features={"country": ["de"] * n, "hour": [1.0] * n, "bid": [2.0] * n},
    )
    write_log(predictions_bucket(settings), batch, SCHEMA, "predict-1", 0)


def test_a_file_whose_ids_are_half_served_records_a_served_share_of_one_half(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rows = training_rows(600, 2)
    rows["id"] = [f"imp-{i}" for i in range(len(rows))]
    _log_ids(settings, [f"imp-{i}" for i in range(0, 600, 2)] + ["never-in-a-file"])
    outcome, data, artifacts = _send(settings, "incoming/joined.csv", rows)
    assert outcome.status == "promoted"
    record = _record(artifacts, "incoming/joined.csv", data)
    assert record["served_share"] == 0.5
    assert (record["served"]["rows"], record["served"]["served_rows"]) == (600, 300)
    assert record["decision"] == MonitoringDecision.ACCEPTED  # 0.5 is not over the warning's 0.5
    assert _card(artifacts, outcome)["data_checks"]["served_share"] == 0.5


def test_a_served_share_over_the_warning_is_a_warning(tmp_path: Path) -> None:
    settings = _settings(tmp_path, FEEDBACK_SHARE_WARNING="0.4")
    rows = training_rows(600, 2)
    rows["id"] = [f"imp-{i}" for i in range(len(rows))]
    _log_ids(settings, [f"imp-{i}" for i in range(0, 600, 2)])
    outcome, data, artifacts = _send(settings, "incoming/joined.csv", rows)
    record = _record(artifacts, "incoming/joined.csv", data)
    assert record["decision"] == MonitoringDecision.WARNING
    assert record["warnings"] == [
        "feedback loop: 50% of the rows carry an id this system served (over FEEDBACK_SHARE_WARNING=0.4)"
    ]
