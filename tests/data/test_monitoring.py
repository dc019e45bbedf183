"""Monitoring: model metrics equal sklearn's, PSI sees drift, records list in time order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from shared.cli import main as prodml
from shared.config import get_settings, load_settings
from shared.data import monitoring
from shared.data.quarantine import quarantine_object
from shared.errors import ValidationFailed
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.storage.local import LocalBucket
from shared.training.gate import row_losses

FEATURES = [
    {"name": "country", "type": "category", "domain": ["de", "kr", "us"]},
    {"name": "x", "type": "float", "min": -10.0, "max": 10.0, "default": 0.0},
]
LABELS = {
    "binary": {"name": "y", "type": "category", "classes": [0, 1]},
    "multiclass": {"name": "y", "type": "category", "classes": ["a", "b", "c"]},
    "regression": {"name": "y", "type": "float"},
}


def make_data(task: str, n: int = 400, seed: int = 0, shift: float = 0.0) -> tuple[Schema, pd.DataFrame]:
    schema = Schema.from_dict({"features": FEATURES, "label": LABELS[task], "key": ["country"]})
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    country = rng.choice(["de", "kr", "us"], n, p=[0.5, 0.3, 0.2])
    signal = x + (country == "us") + rng.normal(0, 1.0, n)
    if task == "binary":
        y: np.ndarray = (signal > 0.3).astype("int64")
    elif task == "multiclass":
        y = np.where(signal < -0.5, "a", np.where(signal < 0.8, "b", "c")).astype(object)
    else:
        y = 2.0 * signal
    frame = to_frame(schema, pd.DataFrame({"country": country, "x": x}))
    frame["y"] = y
    return schema, frame


def fit_bundle(task: str) -> ModelBundle:
    schema, frame = make_data(task, seed=1)
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["country"]), ("num", StandardScaler(), ["x"])]
    )
    model = Ridge() if task == "regression" else LogisticRegression()
    estimator = Pipeline([("prep", prep), ("model", model)]).fit(frame[["country", "x"]], frame["y"])
    return ModelBundle("v1", estimator, schema)


def test_binary_metrics_equal_sklearns() -> None:
    bundle = fit_bundle("binary")
    _, frame = make_data("binary", seed=2)
    proba = bundle.estimator.predict_proba(frame[["country", "x"]])[:, 1]
    got = monitoring.evaluate(bundle, frame)
    assert got["log_loss"] == pytest.approx(metrics.log_loss(frame["y"], proba))
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(frame["y"], proba))
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(frame["y"], proba >= 0.5))
    assert got["rows"] == 400


def test_multiclass_metrics_equal_sklearns() -> None:
    bundle = fit_bundle("multiclass")
    _, frame = make_data("multiclass", seed=2)
    proba = bundle.estimator.predict_proba(frame[["country", "x"]])
    got = monitoring.evaluate(bundle, frame)
    assert got["log_loss"] == pytest.approx(metrics.log_loss(frame["y"], proba))
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(frame["y"], proba, multi_class="ovr"))
    assert got["accuracy"] == pytest.approx(
        metrics.accuracy_score(frame["y"], bundle.estimator.predict(frame[["country", "x"]]))
    )


def test_multiclass_auc_averages_the_classes_present() -> None:
    bundle = fit_bundle("multiclass")
    _, frame = make_data("multiclass", seed=2)
    frame = frame[frame["y"] != "c"]
    proba = bundle.estimator.predict_proba(frame[["country", "x"]])
    got = monitoring.evaluate(bundle, frame)
    expected = np.mean([metrics.roc_auc_score(frame["y"] == c, proba[:, i]) for i, c in enumerate("ab")])
    assert got["roc_auc"] == pytest.approx(expected)
    assert got["log_loss"] == pytest.approx(metrics.log_loss(frame["y"], proba, labels=["a", "b", "c"]))


def test_auc_is_none_when_one_class_is_present() -> None:
    bundle = fit_bundle("binary")
    _, frame = make_data("binary", seed=2)
    ones = frame[frame["y"] == 1]
    proba = bundle.estimator.predict_proba(ones[["country", "x"]])[:, 1]
    got = monitoring.evaluate(bundle, ones)
    assert got["roc_auc"] is None
    assert got["log_loss"] == pytest.approx(metrics.log_loss(ones["y"], proba, labels=[0, 1]))


def test_regression_metrics_equal_sklearns() -> None:
    bundle = fit_bundle("regression")
    _, frame = make_data("regression", seed=2)
    predicted = bundle.estimator.predict(frame[["country", "x"]])
    got = monitoring.evaluate(bundle, frame)
    assert got["mae"] == pytest.approx(metrics.mean_absolute_error(frame["y"], predicted))
    assert got["rmse"] == pytest.approx(metrics.root_mean_squared_error(frame["y"], predicted))
    assert monitoring.PRIMARY_METRIC["regression"] == ("rmse", False)
    assert monitoring.PRIMARY_METRIC["binary"] == ("log_loss", False)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_metrics_and_gate_losses_from_one_scoring_equal_sklearns(task: str) -> None:
    # The challenger step scores each row set once and derives both the metrics and the gate's
    # per-row losses from those scores; both must be what scoring inside each would give.
    bundle = fit_bundle(task)
    _, frame = make_data(task, seed=2)
    scores = monitoring.model_scores(bundle, frame)
    assert monitoring.evaluate(bundle, frame, scores) == monitoring.evaluate(bundle, frame)
    losses = row_losses(bundle, frame, scores)
    assert np.array_equal(losses, row_losses(bundle, frame))
    x = frame[["country", "x"]]
    if task == "regression":
        assert losses.mean() == pytest.approx(
            metrics.mean_squared_error(frame["y"], bundle.estimator.predict(x))
        )
    else:
        assert losses.mean() == pytest.approx(metrics.log_loss(frame["y"], bundle.estimator.predict_proba(x)))
    with pytest.raises(ValueError, match="399 scores given for 400 rows"):
        monitoring.evaluate(bundle, frame, scores[:-1])
    with pytest.raises(ValueError, match="399 scores given for 400 rows"):
        row_losses(bundle, frame, scores[:-1])


def test_category_bins_are_the_same_whether_the_column_holds_strings_or_needs_converting() -> None:
    # Validated frames (Python strings) skip the per-value conversion; anything else takes it.
    schema, train = make_data("binary", n=2000, seed=1)
    _, new = make_data("binary", n=2000, seed=2)
    new["country"] = np.where(np.arange(2000) % 3 == 0, "fr", new["country"])  # a value never seen
    converted = {"train": train.copy(), "new": new.copy()}
    for frame in converted.values():
        frame["country"] = frame["country"].astype("category")
    reference = monitoring.reference_stats(train, schema)
    assert reference == monitoring.reference_stats(converted["train"], schema)
    assert sum(reference["features"]["country"]["proportions"].values()) == pytest.approx(1.0)
    assert monitoring.psi(reference, new, schema) == monitoring.psi(reference, converted["new"], schema)
    with_missing = new.astype({"country": object})
    with_missing.loc[with_missing.index[:500], "country"] = None  # missing values count in no bin
    assert monitoring.psi(reference, with_missing, schema)["country"] == pytest.approx(
        monitoring.psi(reference, new.iloc[500:], schema)["country"]
    )


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    schema, train = make_data("binary", n=5000, seed=1)
    reference = monitoring.reference_stats(train, schema)
    json.dumps(reference, allow_nan=False)  # stored in the model card: plain JSON
    assert len(reference["features"]["x"]["proportions"]) == 10
    assert sum(reference["features"]["x"]["proportions"]) == pytest.approx(1.0)

    _, same = make_data("binary", n=5000, seed=2)
    stable = monitoring.psi(reference, same, schema)
    assert set(stable) == {"country", "x"} and max(stable.values()) < 0.02

    _, shifted = make_data("binary", n=5000, seed=2, shift=1.0)
    shifted["country"] = np.where(np.arange(5000) % 2 == 0, "us", "fr")  # mix changed, one value unseen
    drift = monitoring.psi(reference, shifted, schema)
    assert drift["x"] > 0.25 and drift["country"] > 1.0
    settings = load_settings({"DRIFT_PSI_THRESHOLD": "0.25"})
    assert monitoring.drift_check(stable, settings) == []
    drifted = monitoring.drift_check(drift, settings)
    assert drifted == sorted(drift, key=lambda k: -drift[k])
    failure = monitoring.drift_failure(drifted, drift)
    assert isinstance(failure, ValidationFailed) and failure.rule == "drift"
    assert failure.details["columns"] == drifted and "'x' (PSI" in failure.message


def test_psi_on_discrete_values_uses_the_bins_that_exist() -> None:
    schema = Schema.from_dict(
        {
            "features": [{"name": "n", "type": "integer", "min": 0, "max": 2}],
            "label": LABELS["binary"],
            "key": [],
        }
    )
    train = pd.DataFrame({"n": [0] * 50 + [1] * 30 + [2] * 20})
    reference = monitoring.reference_stats(train, schema)
    assert reference["features"]["n"]["edges"] == [0, 1, 2]
    assert reference["features"]["n"]["proportions"] == [0.5, 0.3, 0.2, 0.0]  # the last: above the max
    same = monitoring.psi(reference, pd.DataFrame({"n": [0] * 5 + [1] * 3 + [2] * 2}), schema)
    assert same["n"] == pytest.approx(0.0, abs=1e-12)
    above = monitoring.psi(reference, pd.DataFrame({"n": [0] * 5 + [1] * 3 + [3] * 2}), schema)
    assert above["n"] > 1.0  # values above the training max land in a bin the reference left empty


def test_records_are_written_per_file_and_listed_in_time_order(buckets_root: Path) -> None:
    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    late = monitoring.make_record("incoming/a.csv", 5, "v2", {"log_loss": 0.4}, {"x": 0.1}, [], "accepted")
    early = {**late, "object": "incoming/b.csv", "generation": 3, "time": "2000-01-01T00:00:00Z"}
    assert monitoring.write_record(artifacts, late) == "monitoring/incoming/a.csv@5.json"
    monitoring.write_record(artifacts, early)
    assert [r["object"] for r in monitoring.list_records(artifacts)] == ["incoming/b.csv", "incoming/a.csv"]
    monitoring.write_record(artifacts, {**late, "decision": "warning"})  # a redelivery replaces it
    assert [r["decision"] for r in monitoring.list_records(artifacts)] == ["accepted", "warning"]


def test_prodml_monitor_shows_files_metrics_drift_and_quarantine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "buckets"
    artifacts, data = LocalBucket(root, "prodml-artifacts"), LocalBucket(root, "prodml-data")
    metrics_ = {"log_loss": 0.3512, "roc_auc": 0.91, "accuracy": 0.85}
    record = monitoring.make_record(
        "incoming/d1.csv", 7, "v3", metrics_, {"x": 0.4, "country": 0.01}, ["x"], "warning"
    )
    record["training"] = {"outcome": "promoted", "version": "v4"}  # what the trainer adds afterwards
    record["warnings"] = ["label leakage: 'x' (ROC AUC 0.9990) alone predicts the label (LEAKAGE_AUC=0.99)"]
    monitoring.write_record(artifacts, record)
    generation = data.write("incoming/bad.csv", b"")
    quarantine_object(
        data, "incoming/bad.csv", generation, ValidationFailed("empty", "'incoming/bad.csv' is empty")
    )

    # In process (the console script itself is run end to end in test_schema_infer): the same
    # main(), with the settings read from this test's environment.
    monkeypatch.setenv("LOCAL_BUCKETS_ROOT", str(root))
    get_settings.cache_clear()
    try:
        assert prodml(["monitor"]) == 0
        table = capsys.readouterr().out
        assert prodml(["monitor", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
    finally:
        get_settings.cache_clear()
    line = next(row for row in table.splitlines() if "incoming/d1.csv@7" in row)
    for text in ("v3", "log_loss=0.351", "0.850/0.910", "0.400", " x ", "warning, promoted v4"):
        assert text in line
    assert "quarantined (empty)" in table and "'incoming/bad.csv' is empty" in table
    warnings = table.split("warnings (label leakage, feedback-loop share):\n", 1)[1].splitlines()
    assert warnings[0] == f"  incoming/d1.csv@7: {record['warnings'][0]}"
    assert [(r["object"], r["decision"]) for r in rows] == [
        ("incoming/d1.csv", "warning"),
        ("incoming/bad.csv", "quarantined"),
    ]
    assert rows[1]["quarantine"]["rule"] == "empty"


def test_a_record_over_the_cap_is_cut_and_still_listed(buckets_root: Path) -> None:
    from shared.record_caps import MAX_RECORD_BYTES

    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    record = monitoring.make_record("incoming/a.csv", 5, None, None, {}, [], "error", message="E" * 3_000_000)
    name = monitoring.write_record(artifacts, {**record, "error": {"message": "E" * 3_000_000}})
    assert len(artifacts.read(name)) <= MAX_RECORD_BYTES
    [listed] = monitoring.list_records(artifacts)
    assert (listed["object"], listed["generation"], listed["decision"]) == ("incoming/a.csv", 5, "error")
    assert listed["message"].startswith("EEE") and listed["cut"]["bytes"] > 6_000_000
