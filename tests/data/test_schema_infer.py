"""Schema inference: a reviewable schema.json that round-trips and accepts the file it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.cli import main as prodml
from shared.config import load_settings
from shared.data.files import read_frame
from shared.data.schema_infer import RANGE_MARGIN, default_label, infer_schema
from shared.data.validation import validate_file
from shared.errors import SchemaError
from shared.schema import Schema, load_schema
from shared.storage.local import LocalBucket


def dataset(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "country": rng.choice(["NA", "de", "kr", "us"], n),
            "hour": rng.integers(0, 24, n),
            "mobile": rng.choice([True, False], n),
            "visits": rng.integers(0, 5000, n),  # whole numbers, but a quantity
            "bid": rng.gamma(2.0, 1.0, n).round(4),
            "delta": rng.normal(0, 1, n).round(4),
            "converted": rng.integers(0, 2, n),
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_inferred_schema_round_trips_and_validates_its_file(tmp_path: Path, ext: str) -> None:
    path = write(dataset(), tmp_path / f"day{ext}")
    schema = infer_schema(read_frame(path, path.name, 10_000), "converted")
    assert Schema.from_json(schema.to_json()) == schema
    data = validate_file(path, f"incoming/day{ext}", Schema.from_json(schema.to_json()), load_settings({}))
    assert data.rows == 300 and len(data.frame) == 300


def test_column_types_ranges_and_defaults() -> None:
    frame = dataset()
    schema = infer_schema(frame, "converted")
    by_name = {f.name: f for f in schema.features}
    assert by_name["country"].type == "category" and by_name["country"].domain == ("NA", "de", "kr", "us")
    assert by_name["mobile"].domain == ("False", "True")
    hour = by_name["hour"]
    assert (hour.type, hour.min, hour.max) == ("integer", frame["hour"].min(), frame["hour"].max())
    assert by_name["visits"].type == "float"  # too many distinct whole numbers to be a code
    bid = by_name["bid"]
    assert bid.min == 0.0  # widened, but a non-negative quantity stays non-negative
    bid_span = frame["bid"].max() - frame["bid"].min()
    assert bid.max == pytest.approx(frame["bid"].max() + RANGE_MARGIN * bid_span, rel=1e-5)
    assert bid.default == pytest.approx(frame["bid"].median(), rel=1e-5)
    delta = by_name["delta"]
    span = frame["delta"].max() - frame["delta"].min()
    assert delta.min == pytest.approx(frame["delta"].min() - RANGE_MARGIN * span, rel=1e-5)
    assert delta.max == pytest.approx(frame["delta"].max() + RANGE_MARGIN * span, rel=1e-5)
    assert schema.key == ("country", "hour", "mobile")  # every category and integer feature
    assert all(f.default is None for f in schema.key_features)
    assert schema.label.type == "category" and schema.label.classes == (0, 1)


def test_labels_text_and_regression() -> None:
    frame = dataset()
    frame["grade"] = np.where(frame["bid"] > 2, "high", "low")
    assert infer_schema(frame, "grade").label.classes == ("high", "low")
    regression = infer_schema(frame, "bid").label
    assert regression.type == "float" and regression.task == "regression"
    frame["one"] = 1
    with pytest.raises(SchemaError, match="label 'one' has a single value"):
        infer_schema(frame, "one")
    with pytest.raises(SchemaError, match="label column 'nope' is not in the data"):
        infer_schema(frame, "nope")


def test_key_can_be_chosen_and_id_columns_are_left_out() -> None:
    frame = dataset()
    frame["user_id"] = [f"u{i}" for i in range(len(frame))]
    schema = infer_schema(frame, "converted", key=["country"], max_categories=100)
    assert "user_id" not in schema.feature_names
    assert schema.key == ("country",)
    assert schema.feature("hour").default is not None  # outside the key: it needs a default
    with pytest.raises(SchemaError, match="'bid' must be a category or a bounded integer"):
        infer_schema(frame, "converted", key=["bid"])


def test_default_label() -> None:
    assert default_label(["a", "Target", "b"]) == "Target"
    assert default_label(["a", "b"]) == "b"


def test_cli_prints_the_schema_for_review(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(dataset(), tmp_path / "day.csv")
    assert prodml(["schema", "infer", str(path), "--key", "country,hour"]) == 0
    schema = Schema.from_json(capsys.readouterr().out)
    assert schema.label.name == "converted" and schema.key == ("country", "hour")


def test_cli_refuses_a_bad_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "day.csv"
    path.write_text("a,b\n")
    assert prodml(["schema", "infer", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("prodml schema infer: empty:") and "\n" not in err


def test_cli_uploads_schema_json_to_the_artifacts_bucket(tmp_path: Path) -> None:
    path = write(dataset(), tmp_path / "day.parquet")
    root = tmp_path / "buckets"
    env = {
        **os.environ,
        "LOCAL_BUCKETS_ROOT": str(root),
        "ARTIFACTS_BUCKET": "art-test",
        "LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prodml")), "schema", "infer", str(path), "--upload", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    artifacts = LocalBucket(root, "art-test")
    assert summary["generation"] == artifacts.stat("schema.json").generation
    assert load_schema(artifacts) == infer_schema(read_frame(path, path.name, 1000), "converted")
