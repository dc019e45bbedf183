"""Traffic counts: the Space-Saving sketch and the traffic/ files."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shared.serving.traffic import HeavyHitters, flush_counts, read_traffic
from shared.storage.local import LocalBucket


def test_exact_while_under_capacity():
    sketch = HeavyHitters(10)
    for key in ["a", "b", "a", "c", "a"]:
        sketch.add(key)
    assert sketch.top(1) == [("a", 3, 0)]
    assert sketch.counts() == {"a": 3, "b": 1, "c": 1}
    assert sketch.total == 5


def test_bounded_memory_finds_the_heavy_keys_within_the_error_bound():
    rng = random.Random(0)
    truth: Counter[str] = Counter()
    sketch = HeavyHitters(50)
    # Zipf-like stream over 5,000 keys: a few keys carry most of the traffic.
    weights = [1 / (i + 1) ** 1.2 for i in range(5000)]
    stream = rng.choices([f"k{i}" for i in range(5000)], weights=weights, k=20000)
    for key in stream:
        sketch.add(key)
        truth[key] += 1
    assert len(sketch) == 50
    for key, count, error in sketch.items():
        assert count - error <= truth[key] <= count
    top = [k for k, _, _ in sketch.top(5)]
    assert top == [k for k, _ in truth.most_common(5)]
    assert all(error <= 20000 / 50 for _, _, error in sketch.items())


def test_concurrent_adds_lose_nothing():
    sketch = HeavyHitters(1000)

    def work():
        for i in range(2000):
            sketch.add_many([f"k{i % 7}"])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sketch.counts().values()) == 8000
    assert sketch.drain() and len(sketch) == 0


def test_flush_then_read_sums_every_file(tmp_path, caplog):
    artifacts = LocalBucket(tmp_path, "artifacts")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = flush_counts(artifacts, {'["us",7]': 3, '["de",1]': 1}, ["country", "hour"], "i/1", t0, t0)
    later = t0 + timedelta(hours=1)
    flush_counts(artifacts, {'["us",7]': 2}, ["country", "hour"], "i-2", later, later)
    assert first.startswith("traffic/20260101T000000-i_1-") and first.endswith(".json")
    artifacts.write("traffic/20260101T010000-x-1.json", b"{not json")
    total = read_traffic(artifacts)
    assert total == Counter({'["us",7]': 5, '["de",1]': 1})
    assert "skipping unreadable traffic file" in caplog.text
    assert read_traffic(artifacts, since=t0 + timedelta(minutes=30)) == Counter({'["us",7]': 2})
    assert read_traffic(artifacts, key=["country"]) == Counter()


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        HeavyHitters(0)
