"""The serving advisor on three synthetic workloads made to need static, dynamic and hybrid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared.config import load_settings
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.serving.traffic import flush_counts
from shared.storage.local import LocalBucket
from shared.tables.advisor import MIN_HYBRID_HIT_RATE, TARGET_HIT_RATE, advise, analyze
from shared.tables.advisor_plot import plot_coverage
from shared.tables.codec import key_string

# 100,000 users x 1,000 items = 100,000,000 keys: far over TABLE_MAX_ROWS (2,000,000 by default).
BIG_SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "user", "type": "integer", "min": 0, "max": 99_999},
            {"name": "item", "type": "integer", "min": 0, "max": 999},
        ],
        "label": {"name": "clicked", "type": "category", "classes": [0, 1]},
        "key": ["user", "item"],
    }
)


@pytest.fixture(scope="module")
def big_bundle() -> ModelBundle:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 100_000, 400), rng.integers(0, 1000, 400)
    frame = to_frame(
        BIG_SCHEMA, [{"user": int(u), "item": int(i)} for u, i in zip(users, items, strict=True)]
    )
    y = (frame["item"] % 3 == 0).astype(int)
    estimator = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(frame, y)
    return ModelBundle("big-v1", estimator, BIG_SCHEMA)


def _artifacts(root: Path, bundle: ModelBundle, counts: dict[tuple[int | str, ...], int]) -> LocalBucket:
    artifacts = LocalBucket(root, "prodml-artifacts")
    artifacts.write("models/current.skops", bundle.to_bytes())
    now = datetime.now(UTC)
    if counts:
        flush_counts(
            artifacts,
            {key_string(list(k)): n for k, n in counts.items()},
            list(bundle.schema.key),
            "t",
            now,
            now,
        )
    return artifacts


def _zipf_counts(
    rng: np.random.Generator, keys: int, requests: int, exponent: float
) -> dict[tuple[int, int], int]:
    """``requests`` drawn over ``keys`` random keys, the r-th most popular with weight 1 / r**exponent."""
    weights = 1 / np.arange(1, keys + 1) ** exponent
    drawn = rng.choice(keys, size=requests, p=weights / weights.sum())
    users, items = rng.integers(0, 100_000, keys), rng.integers(0, 1000, keys)
    hits = np.bincount(drawn, minlength=keys)
    return {(int(users[r]), int(items[r])): int(hits[r]) for r in range(keys) if hits[r]}


def test_low_cardinality_is_static(table_artifacts, table_bundle, buckets_root: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    flush_counts(
        table_artifacts,
        {key_string(["us", h, "mobile"]): 10 for h in range(24)},
        ["country", "hour", "device"],
        "t",
        now,
        now,
    )
    advice = advise(table_artifacts, load_settings({"LOCAL_BUCKETS_ROOT": str(buckets_root)}))
    assert advice.recommendation == "static" and advice.k == 360
    assert advice.cardinality == 360 and advice.distinct_keys_seen == 24 and advice.requests == 240
    assert advice.expected_hit_rate == 1.0
    assert advice.full_table["bytes"] == 360 * 16
    assert advice.model is not None and advice.model["rows_per_second"] > 0 and advice.model["latency_ms"] > 0
    assert "static: all 360 keys fit in one table" in advice.reason
    png = plot_coverage(advice, tmp_path / "static.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100


def test_high_cardinality_flat_traffic_is_dynamic(big_bundle, buckets_root: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # 6,000 requests spread uniformly over 100 million keys: almost every key is asked once.
    counts: dict[tuple[int, int], int] = {}
    for u, i in zip(rng.integers(0, 100_000, 6000), rng.integers(0, 1000, 6000), strict=True):
        counts[(int(u), int(i))] = counts.get((int(u), int(i)), 0) + 1
    artifacts = _artifacts(buckets_root, big_bundle, counts)
    advice = advise(artifacts, load_settings({"LOCAL_BUCKETS_ROOT": str(buckets_root)}))
    assert advice.recommendation == "dynamic" and advice.k is None
    assert advice.cardinality == 100_000_000 and advice.requests == 6000
    assert advice.top_share["10%"] < 0.15  # flat: the top 10% of keys get about 10% of requests
    assert "traffic is flat" in advice.reason
    png = plot_coverage(advice, tmp_path / "dynamic.png")
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_high_cardinality_peaked_traffic_is_hybrid(big_bundle, buckets_root: Path, tmp_path: Path) -> None:
    counts = _zipf_counts(np.random.default_rng(2), keys=2000, requests=30_000, exponent=1.3)
    artifacts = _artifacts(buckets_root, big_bundle, counts)
    advice = advise(artifacts, load_settings({"LOCAL_BUCKETS_ROOT": str(buckets_root)}))
    assert advice.recommendation == "hybrid"
    assert advice.k is not None and advice.k <= advice.distinct_keys_seen
    assert advice.expected_hit_rate is not None and advice.expected_hit_rate >= TARGET_HIT_RATE
    assert advice.top_share["1%"] > 0.3  # peaked
    assert f"--k {advice.k}" in advice.reason
    # K is the fewest keys reaching the target: one key fewer falls short of it (held out).
    assert advice.held_out[advice.k - 1] >= TARGET_HIT_RATE > advice.held_out[advice.k - 2]
    png = plot_coverage(advice, tmp_path / "hybrid.png")
    with Image.open(png) as image:
        image.verify()


def test_uniform_traffic_on_a_small_part_of_a_huge_key_space_is_hybrid() -> None:
    """Flat among the keys seen, yet a table of those keys answers nearly every request: the
    held-out hit rate, not the share of seen keys, decides."""
    rng = np.random.default_rng(3)
    codes = np.sort(rng.choice(10**9, size=3000, replace=False))
    counts = rng.poisson(20, size=3000) + 1
    advice = analyze(10**9, codes, counts, invalid_requests=0, table_max_rows=2_000_000, cost=None)
    assert advice.top_share["10%"] < 0.2
    assert advice.recommendation == "hybrid" and advice.expected_hit_rate >= TARGET_HIT_RATE


def test_peaked_but_too_big_for_the_table_is_dynamic() -> None:
    """Every seen key would have to be tabled to reach the target, and TABLE_MAX_ROWS is tiny."""
    codes = np.arange(10_000, dtype=np.int64)
    counts = np.full(10_000, 3)
    advice = analyze(10**9, codes, counts, invalid_requests=0, table_max_rows=100, cost=None)
    assert advice.recommendation == "dynamic"
    assert f"{MIN_HYBRID_HIT_RATE:.0%}" in advice.reason


def test_too_little_traffic_is_dynamic_until_more_is_counted() -> None:
    advice = analyze(
        10**9, np.array([5, 9]), np.array([40, 30]), invalid_requests=0, table_max_rows=100, cost=None
    )
    assert advice.recommendation == "dynamic" and "too few" in advice.reason


def test_prodml_advise_prints_json_and_writes_the_png(
    table_artifacts, buckets_root: Path, tmp_path: Path
) -> None:
    png = tmp_path / "plot" / "coverage.png"
    env = {**os.environ, "LOCAL_BUCKETS_ROOT": str(buckets_root), "LOG_FORMAT": "json"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prodml")), "advise", "--json", "--png", str(png)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["recommendation"] == "static" and report["png"] == str(png)
    assert report["model"]["version"] == "v1"
    with Image.open(png) as image:
        assert image.format == "PNG"
