"""The served share: rows of a data file whose id is in the prediction log, read from real buckets."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from conftest import training_schema

from shared.feedback.log_format import LogBatch, write_log
from shared.feedback.served_share import NO_ID_COLUMN, served_share
from shared.storage.local import LocalBucket

SCHEMA = training_schema("binary")


def _batch(ids: list[str], at: float) -> LogBatch:
    n = len(ids)
    return LogBatch(
        ids=ids,
        times=[at] * n,
        scores=[0.25] * n,
        labels=["0"] * n,
        sources=["model"] * n,
        model_versions=["v1"] * n,
        table_builds=[""] * n,
        features={"country": ["de"] * n, "hour": [3.0] * n, "bid": [1.5] * n},
    )


def _predictions(tmp_path: Path) -> LocalBucket:
    return LocalBucket(tmp_path / "buckets", "prodml-predictions")


def test_half_of_the_ids_in_the_log_is_a_share_of_one_half(tmp_path: Path) -> None:
    bucket = _predictions(tmp_path)
    now = time.time()
    write_log(bucket, _batch(["imp-1", "imp-2"], now), SCHEMA, "inst-a", 0)
    write_log(bucket, _batch(["imp-3", "other"], now + 1), SCHEMA, "inst-b", 0)
    ids = pd.Series(["imp-1", "imp-2", "imp-3", "new-1", "new-2", "new-3"])
    share = served_share(ids, lambda: bucket, max_objects=10, max_bytes=1 << 20)
    assert (share.share, share.rows, share.served_rows) == (0.5, 6, 3)
    assert (share.log_objects_listed, share.log_objects_read, share.log_objects_unreadable) == (2, 2, 0)


def test_numeric_ids_read_from_csv_match_their_text_in_the_log(tmp_path: Path) -> None:
    bucket = _predictions(tmp_path)
    write_log(bucket, _batch(["17", "18"], time.time()), SCHEMA, "inst-a", 0)
    # pandas reads an id column of digits as int64, or float64 when a cell is empty.
    ids = pd.Series([17.0, 18.0, None, 19.0])
    assert served_share(ids, lambda: bucket, 10, 1 << 20).served_rows == 2


def test_only_the_most_recent_log_objects_are_read(tmp_path: Path) -> None:
    bucket = _predictions(tmp_path)
    now = time.time()
    write_log(bucket, _batch(["old"], now - 3600), SCHEMA, "inst-a", 0)
    write_log(bucket, _batch(["new"], now), SCHEMA, "inst-a", 1)
    share = served_share(pd.Series(["old", "new"]), lambda: bucket, max_objects=1, max_bytes=1 << 20)
    assert (share.share, share.log_objects_listed, share.log_objects_read) == (0.5, 2, 1)
    assert "1 most recent of 2 prediction log objects" in share.note


def test_an_unreadable_log_object_is_skipped_and_counted(tmp_path: Path) -> None:
    bucket = _predictions(tmp_path)
    write_log(bucket, _batch(["imp-1"], time.time()), SCHEMA, "inst-a", 0)
    bucket.write("predictions/2026-01-01/junk-0000000000000-000000.npz", b"not a zip")
    share = served_share(pd.Series(["imp-1", "imp-2"]), lambda: bucket, 10, 1 << 20)
    assert (share.share, share.log_objects_read, share.log_objects_unreadable) == (0.5, 2, 1)


def test_without_an_id_column_the_share_is_unknown_and_the_log_is_not_read(tmp_path: Path) -> None:
    def refuse() -> LocalBucket:
        raise AssertionError("the predictions bucket must not be opened without ids")

    share = served_share(None, refuse, 10, 1 << 20)
    assert (share.share, share.note) == (None, NO_ID_COLUMN)
