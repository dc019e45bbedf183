"""Synthetic data: seeded, learnable, drifts when asked, corrupt when asked, Zipf traffic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from shared.cli import main
from shared.local.synth import synth_schema, synthesize
from shared.local.synth_keys import KEY, KEY_CARDINALITY


def psi(expected: pd.Series, actual: pd.Series) -> float:
    """Population stability index of a categorical column."""
    values = sorted(set(expected) | set(actual), key=str)
    e = expected.value_counts(normalize=True).reindex(values).fillna(0).to_numpy() + 1e-4
    a = actual.value_counts(normalize=True).reindex(values).fillna(0).to_numpy() + 1e-4
    return float(((a - e) * np.log(a / e)).sum())


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    args = {"days": 2, "rows_per_day": 200, "drift_day": 2, "corrupt": True, "traffic": 100}
    first = synthesize(tmp_path / "a", seed=3, **args)
    again = synthesize(tmp_path / "b", seed=3, **args)
    other = synthesize(tmp_path / "c", seed=4, **args)
    assert [p.name for p in first.files] == ["day-01.csv", "day-02.csv", "corrupt.csv", "traffic.jsonl"]
    for a, b, c in zip(first.files, again.files, other.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert a.read_bytes() != c.read_bytes()


def test_more_days_leave_the_earlier_days_unchanged(tmp_path: Path) -> None:
    short = synthesize(tmp_path / "short", days=1, rows_per_day=100)
    long = synthesize(tmp_path / "long", days=3, rows_per_day=100)
    assert short.day_files[0].read_bytes() == long.day_files[0].read_bytes()


def test_rows_fit_the_schema_and_the_key_space_is_large(tmp_path: Path) -> None:
    schema = synth_schema()
    assert schema.key == KEY
    assert schema.key_cardinality == KEY_CARDINALITY > 300_000
    frame = pd.read_csv(synthesize(tmp_path, days=1, rows_per_day=2000).day_files[0])
    assert list(frame.columns) == [*schema.feature_names, "converted"]
    for feature in schema.features:
        if feature.type == "category":
            assert set(frame[feature.name]) <= set(feature.domain)
        else:
            assert feature.min <= frame[feature.name].min() and frame[feature.name].max() <= feature.max
    assert frame["hour"].dtype == np.int64
    assert set(frame["converted"]) == {0, 1}


def test_a_model_can_learn_the_label(tmp_path: Path) -> None:
    result = synthesize(tmp_path, days=4, rows_per_day=3000)
    train = pd.concat(pd.read_csv(p) for p in result.day_files[:3])
    test = pd.read_csv(result.day_files[3])
    encoder = OneHotEncoder(handle_unknown="ignore").fit(train[list(KEY)].astype(str))

    def features(frame: pd.DataFrame) -> np.ndarray:
        return np.hstack([encoder.transform(frame[list(KEY)].astype(str)).toarray(), np.log(frame[["bid"]])])

    model = LogisticRegression(max_iter=1000).fit(features(train), train["converted"])
    auc = roc_auc_score(test["converted"], model.predict_proba(features(test))[:, 1])
    assert auc > 0.65  # well above chance (0.5): the label depends on the features


def test_the_drift_day_drifts_and_ordinary_days_do_not(tmp_path: Path) -> None:
    result = synthesize(tmp_path, days=3, rows_per_day=3000, drift_day=3)
    day1, day2, drifted = (pd.read_csv(p) for p in result.day_files)
    assert result.drift_file == result.day_files[2]
    for column in ("country", "device", "hour"):
        assert psi(day1[column], day2[column]) < 0.1
        assert psi(day1[column], drifted[column]) > 0.25
    assert drifted["bid"].median() > 2 * day1["bid"].median()


def test_the_corrupt_file_breaks_the_contract(tmp_path: Path) -> None:
    schema = synth_schema()
    frame = pd.read_csv(synthesize(tmp_path, days=1, rows_per_day=1000, corrupt=True).corrupt_file)
    assert pd.to_numeric(frame["hour"], errors="coerce").isna().any()
    assert pd.to_numeric(frame["bid"], errors="coerce").isna().any()
    assert not set(frame["country"].dropna()) <= set(schema.feature("country").domain)
    assert frame["device"].isna().any()


def test_traffic_is_peaked_over_a_large_key_space(tmp_path: Path) -> None:
    result = synthesize(tmp_path, days=1, rows_per_day=10, traffic=20_000)
    instances = [json.loads(line) for line in result.traffic_file.read_text().splitlines()]
    assert len(instances) == 20_000
    assert set(instances[0]) == {*KEY, "bid"}
    counts = Counter(tuple(i[k] for k in KEY) for i in instances)
    top = sum(c for _, c in counts.most_common(len(counts) // 100))
    assert len(counts) > 5_000  # many distinct keys are asked...
    assert top / len(instances) > 0.15  # ...but the top 1% of them take a large share


def test_cli_lists_the_files_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    code = main(["data", "synth", "--out", str(out), "--days", "2", "--rows-per-day", "50", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [Path(f["file"]).name for f in listed["files"]] == ["day-01.csv", "day-02.csv"]
    assert all(Path(f["file"]).exists() and f["rows"] == 50 for f in listed["files"])


def test_cli_refuses_a_drift_day_outside_the_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "synth", "--out", str(tmp_path), "--days", "2", "--drift-day", "5"])
    assert code != 0
    assert "drift_day must be a day from 1 to 2, got 5" in capsys.readouterr().err
