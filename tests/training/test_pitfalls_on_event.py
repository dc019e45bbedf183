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

from shared.cli.live_cmd import render
from shared.config import Settings, load_settings
from shared.contracts import LEAKAGE_RULE, MonitoringDecision
from shared.data import monitoring
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback.log_format import LogBatch, write_log
from shared.feedback.report import build_report
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


def _log_ids(
    settings: Settings, ids: list[str], served: pd.DataFrame | None = None, version: str = "v0"
) -> None:
    """Log ``ids`` as served, with the features of ``served`` (its rows by ``id``) or constants."""
    n = len(ids)
    if served is not None:
        by_id = served.set_index("id")
        features = {
            name: [by_id.loc[i, name] if i in by_id.index else by_id[name].iloc[0] for i in ids]
            for name in ("country", "hour", "bid")
        }
    else:
        features = {"country": ["de"] * n, "hour": [1.0] * n, "bid": [2.0] * n}
    batch = LogBatch(
        ids=ids,
        times=[time.time()] * n,
        scores=[0.5] * n,
        labels=["1"] * n,
        sources=["model"] * n,
        model_versions=[version] * n,
        table_builds=[""] * n,
        features=features,
    )
    write_log(predictions_bucket(settings), batch, SCHEMA, "predict-1", int(time.time() * 1e6) % 10**6)


def test_a_file_whose_ids_are_half_served_records_a_served_share_of_one_half(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rows = training_rows(600, 2)
    rows["id"] = [f"imp-{i}" for i in range(len(rows))]
    _log_ids(settings, [f"imp-{i}" for i in range(0, 600, 2)] + ["never-in-a-file"], rows)
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
    _log_ids(settings, [f"imp-{i}" for i in range(0, 600, 2)], rows)
    outcome, data, artifacts = _send(settings, "incoming/joined.csv", rows)
    record = _record(artifacts, "incoming/joined.csv", data)
    assert record["decision"] == MonitoringDecision.WARNING
    assert record["warnings"] == [
        "feedback loop: 50% of the rows carry an id this system served (over FEEDBACK_SHARE_WARNING=0.4)"
    ]


def test_a_file_whose_served_rows_have_one_feature_changed_reports_that_feature_only(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, FEEDBACK_SHARE_WARNING="0.9")  # the skew's warning alone
    rows = training_rows(600, 2)
    rows["id"] = [f"imp-{i}" for i in range(len(rows))]
    long_id = "x" * 500  # an id longer than a record's sample value
    rows.loc[4, "id"] = long_id
    served = rows.copy()
    changed = [0, 2, 4, 6]  # served with another bid than the file trains on
    served.loc[changed, "bid"] = served.loc[changed, "bid"] + 1.0
    _log_ids(settings, [str(i) for i in served["id"].iloc[:400]], served)
    outcome, data, artifacts = _send(settings, "incoming/joined.csv", rows)
    assert outcome.status == "promoted"

    skew = _record(artifacts, "incoming/joined.csv", data)["row_skew"]
    assert skew["rows"] == 400 and skew["mismatched"] == ["bid"]
    assert {name: f["mismatches"] for name, f in skew["features"].items()} == {
        "country": 0,
        "hour": 0,
        "bid": 4,
    }
    assert skew["features"]["bid"]["share"] == 0.01
    first = skew["features"]["bid"]["examples"][0]
    assert first == {"id": "imp-0", "served": rows.loc[0, "bid"] + 1.0, "trained": rows.loc[0, "bid"]}
    assert len(skew["features"]["bid"]["examples"]) == 3
    cut = skew["features"]["bid"]["examples"][2]["id"]
    assert cut.startswith("x" * 200) and cut.endswith("…[cut from 500 chars]")
    record = _record(artifacts, "incoming/joined.csv", data)
    assert record["decision"] == MonitoringDecision.WARNING
    assert record["warnings"] == [
        "feature skew: 'bid' (4 of 400 rows) differ from the features as served for the same ids"
    ]
    assert _card(artifacts, outcome)["data_checks"]["row_skew"] == skew

    # `prodml live --json` shows it per version, from the card (the version served ids too).
    _log_ids(settings, ["later-1"], version=outcome.version or "")
    report = build_report(settings, artifacts=artifacts, predictions=predictions_bucket(settings))
    (entry,) = [v for v in report["versions"] if v["version"] == outcome.version]
    assert entry["row_skew"] == skew
    assert "feature skew row by row (its training file, 400 served rows): bid 4/400" in render(report)


def test_a_file_whose_served_rows_agree_reports_no_feature_skew(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rows = training_rows(600, 2)
    rows["id"] = [f"imp-{i}" for i in range(len(rows))]
    _log_ids(settings, [f"imp-{i}" for i in range(100)], rows)
    outcome, data, artifacts = _send(settings, "incoming/joined.csv", rows)
    record = _record(artifacts, "incoming/joined.csv", data)
    assert (record["row_skew"]["rows"], record["row_skew"]["mismatched"]) == (100, [])
    assert record["warnings"] == [] and record["decision"] == MonitoringDecision.ACCEPTED
