"""The prediction log in process: bounded buffer, deterministic sampling, flushes to a real local
bucket read back with the log's own reader, and storage faults that lose and double nothing."""

from __future__ import annotations

import math
import time

import pytest
from conftest import serving_schema

from shared.config import load_settings
from shared.contracts import PREDICTIONS_PREFIX
from shared.errors import StorageError
from shared.feedback.log_format import read_log
from shared.feedback.prediction_log import PredictionLog, ServedRows, sampled_in
from shared.storage.local import LocalBucket

SCHEMA = serving_schema()
TABLE = "tables/v1/full-20260101T000000000000Z-abcd1234.npz"


@pytest.fixture
def bucket(tmp_path):
    return LocalBucket(tmp_path, "prodml-predictions")


def make(bucket, **env):
    settings = load_settings({"PREDICTION_LOG_FLUSH_SECONDS": "3600", **env})
    return PredictionLog(bucket, settings, instance="test")


def served(ids, hour=7, when=1767225600.0):
    """One request's rows: the first from the table, the rest from the model."""
    instances = [{"country": "us", "hour": hour, "bid": 2.5} for _ in ids]
    predictions = [
        {"id": i, "score": 0.25 + n / 100, "source": "table" if n == 0 else "model", "label": n % 2}
        for n, i in enumerate(ids)
    ]
    return ServedRows(SCHEMA, when, list(ids), instances, predictions, "v1", TABLE)


def logged_rows(bucket):
    """Every logged row in the bucket, in object order: (id, score, source, version, table, hour)."""
    rows = []
    for info in sorted(bucket.list(PREDICTIONS_PREFIX), key=lambda i: i.name):
        file = read_log(bucket, info.name, 10**8)
        for k in range(len(file)):
            c = file.columns
            rows.append(
                (
                    str(c["id"][k]),
                    float(c["score"][k]),
                    str(c["source"][k]),
                    str(c["model_version"][k]),
                    str(c["table_build"][k]),
                    str(c["label"][k]),
                    float(file.feature("hour")[k]),
                    str(file.feature("country")[k]),
                )
            )
    return rows


def test_a_flush_writes_each_kept_row_once_as_served(bucket):
    log = make(bucket)
    log.record(served(["a", "b"]))
    log.record(served(["c"], hour=9))
    assert log.flush() == 3
    assert log.flush() == 0  # nothing waits: no empty object
    assert logged_rows(bucket) == [
        ("a", 0.25, "table", "v1", TABLE, "0", 7.0, "us"),
        ("b", 0.26, "model", "v1", "", "1", 7.0, "us"),
        ("c", 0.25, "table", "v1", TABLE, "0", 9.0, "us"),
    ]
    health = log.snapshot()
    assert (health["logged"], health["flushed_rows"], health["flushed_objects"], health["waiting"]) == (
        3,
        3,
        1,
        0,
    )
    assert health["last_flush"] is not None and health["last_flush_object"].startswith(
        "predictions/2026-01-01/"
    )


def test_a_full_buffer_drops_and_counts_and_memory_stays_bounded(bucket):
    log = make(bucket, PREDICTION_LOG_MAX_ROWS="5")
    for n in range(4):
        log.record(served([f"{n}-a", f"{n}-b"]))  # 8 rows offered, 5 fit
    health = log.snapshot()
    assert (health["logged"], health["dropped"], health["waiting"]) == (5, 3, 5)
    log.flush()
    assert [r[0] for r in logged_rows(bucket)] == ["0-a", "0-b", "1-a", "1-b", "2-a"]
    log.record(served(["later"]))  # room again after the flush
    assert log.snapshot()["logged"] == 6


def test_sampling_keeps_the_same_ids_whatever_the_run(bucket, tmp_path):
    ids = [f"imp-{n}" for n in range(400)]
    kept = []
    for run in range(2):
        log = PredictionLog(
            LocalBucket(tmp_path / f"run{run}", "prodml-predictions"),
            load_settings({"PREDICTION_LOG_RATE": "0.5"}),
            instance="t",
        )
        for start in range(0, 400, 10):
            log.record(served(ids[start : start + 10]))
        log.flush()
        kept.append([r[0] for r in logged_rows(log.bucket)])
        assert log.snapshot()["sampled_out"] == 400 - len(kept[-1])
    assert kept[0] == kept[1] == [i for i in ids if sampled_in(i, 0.5)]
    assert 150 < len(kept[0]) < 250  # about half


def test_rate_zero_logs_nothing_and_starts_no_thread(bucket):
    log = make(bucket, PREDICTION_LOG_RATE="0")
    log.start()
    log.record(served(["a"]))
    log.close()
    assert not log.enabled and log._thread is None
    assert list(bucket.list(PREDICTIONS_PREFIX)) == [] and log.snapshot()["logged"] == 0


class FaultyWrites:
    """The real bucket, whose next ``fail`` writes raise a StorageError; with ``land`` the
    write reaches the bucket first (a timeout after the object was stored)."""

    def __init__(self, inner, fail, land=False):
        self.inner, self.fail, self.land = inner, fail, land

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def write(self, name, data, **kwargs):
        if self.fail > 0:
            self.fail -= 1
            if self.land:
                self.inner.write(name, data, **kwargs)
            raise StorageError(f"injected fault writing {name!r}")
        return self.inner.write(name, data, **kwargs)


@pytest.mark.parametrize("land", [False, True], ids=["write lost", "write landed"])
def test_a_failed_flush_keeps_its_rows_and_never_writes_them_twice(bucket, land):
    faulty = FaultyWrites(bucket, fail=1, land=land)
    log = make(faulty, PREDICTION_LOG_MAX_ROWS="4")
    log.record(served(["a", "b"]))
    assert log.flush() == 0
    health = log.snapshot()
    assert (health["flush_failures"], health["waiting"]) == (1, 2)
    assert "injected fault" in health["last_flush_error"]
    log.record(served(["c", "d", "e"]))  # the kept rows still count against the maximum
    assert log.snapshot()["dropped"] == 1
    log.flush()
    assert [r[0] for r in logged_rows(bucket)] == ["a", "b", "c", "d"]
    assert log.snapshot()["waiting"] == 0


def test_the_flusher_thread_writes_when_a_batch_waits(bucket):
    log = make(bucket, PREDICTION_LOG_BATCH_ROWS="3")
    log.start()
    try:
        log.record(served(["a", "b"]))
        log.record(served(["c"]))  # the batch is full: the request wakes the flusher
        deadline = time.monotonic() + 30  # only stops a hung test
        while log.snapshot()["flushed_rows"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r[0] for r in logged_rows(bucket)] == ["a", "b", "c"]
    finally:
        log.close()


def test_close_writes_what_waits_and_a_missing_feature_holds_its_default(bucket):
    log = make(bucket)
    log.start()
    rows = served(["k"])
    key_only = ServedRows(
        SCHEMA, rows.time, ["k"], [{"country": "de", "hour": 3}], rows.predictions, "v1", TABLE
    )
    log.record(key_only)  # a static-mode request: only the key features
    log.close()
    file = read_log(bucket, next(iter(bucket.list(PREDICTIONS_PREFIX))).name, 10**8)
    assert float(file.feature("bid")[0]) == 1.5 and str(file.feature("country")[0]) == "de"
    assert not math.isnan(float(file.columns["score"][0]))


def test_a_left_out_feature_without_a_schema_default_holds_the_value_the_table_was_built_with(
    bucket,
):
    from shared.schema import Schema
    from shared.tables.keys import non_key_defaults

    schema = Schema.from_dict(
        {
            "features": [
                {"name": "country", "type": "category", "domain": ["br", "us"]},
                {"name": "slot", "type": "integer", "min": 2, "max": 9},  # no default
                {"name": "device", "type": "category", "domain": ["ios", "web"]},  # no default
            ],
            "label": {"name": "converted", "type": "category", "classes": [0, 1]},
            "key": ["country"],
        }
    )
    log = make(bucket)
    prediction = {"id": "k", "score": 0.5, "source": "table", "label": 1}
    log.record(ServedRows(schema, 1767225600.0, ["k"], [{"country": "us"}], [prediction], "v1", TABLE))
    log.close()
    file = read_log(bucket, next(iter(bucket.list(PREDICTIONS_PREFIX))).name, 10**8)
    table_defaults = non_key_defaults(schema)  # what the key-only answer was computed with
    assert int(file.feature("slot")[0]) == table_defaults["slot"] == 5
    assert str(file.feature("device")[0]) == table_defaults["device"] == "ios"


def test_a_batch_that_cannot_be_encoded_is_dropped_and_counted_and_the_log_goes_on(bucket):
    log = make(bucket)
    bad = served(["bad"])
    bad = ServedRows(
        SCHEMA,
        bad.time,
        ["bad"],
        [{"country": "us", "hour": 10**400, "bid": 1.0}],
        bad.predictions,
        "v1",
        TABLE,
    )  # what no float64 column can hold
    log.record(bad)
    log.flush()
    log.record(served(["good-1", "good-2"]))
    log.flush()
    health = log.snapshot()
    assert health["unencodable"] == 1 and health["flushed_rows"] == 2 and health["waiting"] == 0
    assert "cannot be encoded" in health["last_flush_error"]
    assert [row[0] for row in logged_rows(bucket)] == ["good-1", "good-2"]


# --- the shadow's scores, computed by the flusher (issue 16) ----------------------------------


@pytest.fixture(scope="module")
def shadow_models():
    from conftest import fit_serving_bundle

    return {"v2": fit_serving_bundle("v2", flip=True), "v3": fit_serving_bundle("v3", seed=3)}


class Counting:
    """A real shadow model, counting its scoring calls and the rows of each."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.version, self.schema, self.form = inner.version, inner.schema, inner.form

    def score_columns(self, columns):
        self.calls.append(len(next(iter(columns.values()))))
        return self.inner.score_columns(columns)


class Faulty(Counting):
    """A shadow that fails on every call: it raises, or answers ``answer(n)`` instead of scores."""

    def __init__(self, inner, answer=None):
        super().__init__(inner)
        self.answer = answer

    def score_columns(self, columns):
        n = len(next(iter(columns.values())))
        self.calls.append(n)
        if self.answer is None:
            raise RuntimeError("injected: the shadow cannot run")
        return self.answer(n)


def shadowed(ids, shadow, instances=None):
    rows = served(ids)
    instances = instances or [{"country": "us", "hour": 7 + n, "bid": 2.5} for n in range(len(ids))]
    return ServedRows(SCHEMA, rows.time, rows.ids, instances, rows.predictions, "v1", TABLE, shadow)


def shadow_columns(bucket):
    """Per logged id: (the score answered, the shadow's score or None, the shadow's version)."""
    out = {}
    for info in bucket.list(PREDICTIONS_PREFIX):
        c = read_log(bucket, info.name, 10**8).columns
        for k, prediction_id in enumerate(c["id"]):
            shadow = float(c["shadow_score"][k])
            out[str(prediction_id)] = (
                float(c["score"][k]),
                None if math.isnan(shadow) else shadow,
                str(c["shadow_version"][k]),
            )
    return out


def test_the_flusher_scores_each_shadow_once_on_the_rows_as_logged(bucket, shadow_models):
    v2, v3 = Counting(shadow_models["v2"]), Counting(shadow_models["v3"])
    log = make(bucket)
    key_only = [{"country": "de", "hour": 3}, {"country": "br", "hour": 4}]  # bid: its default 1.5
    log.record(shadowed(["a", "b"], v2))
    log.record(shadowed(["c"], None))  # served before the shadow was loaded
    log.record(shadowed(["d", "e"], v2, key_only))
    log.record(shadowed(["f"], v3))  # the pointer changed between two requests
    assert log.flush() == 6
    assert (v2.calls, v3.calls) == ([4], [1])  # one vectorized call per shadow
    logged = shadow_columns(bucket)
    features = {
        "a": ("us", 7, 2.5),
        "b": ("us", 8, 2.5),
        "d": ("de", 3, 1.5),
        "e": ("br", 4, 1.5),
        "f": ("us", 7, 2.5),
    }
    for prediction_id, (country, hour, bid) in features.items():
        model = v3.inner if prediction_id == "f" else v2.inner
        own = model.score_columns({"country": [country], "hour": [hour], "bid": [bid]})[0]
        assert logged[prediction_id][1:] == pytest.approx((float(own), model.version), abs=1e-12)
    assert logged["c"][1:] == (None, "")
    assert logged["a"][0] == 0.25  # the answer is the champion's, untouched
    health = log.shadow_snapshot()
    assert (health["rate"], health["scored_rows"], health["failures"], health["last_error"]) == (
        1.0,
        5,
        0,
        None,
    )
    assert health["seconds"] > 0


def test_shadow_rate_scores_the_same_ids_every_run_apart_from_the_logs_sample(tmp_path, shadow_models):
    from shared.feedback.shadow_scoring import shadow_sampled_in

    ids = [f"imp-{n}" for n in range(400)]
    runs = []
    for run in range(2):
        log = PredictionLog(
            LocalBucket(tmp_path / f"run{run}", "prodml-predictions"),
            load_settings({"SHADOW_RATE": "0.5"}),
            instance="t",
        )
        for start in range(0, 400, 10):
            log.record(shadowed(ids[start : start + 10], shadow_models["v2"]))
        log.flush()
        logged = shadow_columns(log.bucket)
        assert len(logged) == 400  # every row is logged; only the shadow samples
        runs.append({i for i, (_, shadow, _) in logged.items() if shadow is not None})
        assert log.shadow_snapshot()["sampled_out"] == 400 - len(runs[-1])
    assert runs[0] == runs[1] == {i for i in ids if shadow_sampled_in(i, 0.5)}
    assert 150 < len(runs[0]) < 250  # about half
    assert runs[0] != {i for i in ids if sampled_in(i, 0.5)}  # not the log's own sample


@pytest.mark.parametrize(
    "answer",
    [None, lambda n: [0.5] * (n + 1), lambda n: [[0.5, 0.5]] * n, lambda n: [float("nan")] * n],
    ids=["raises", "too many rows", "two columns", "non-finite"],
)
def test_a_failing_shadow_leaves_its_rows_unscored_and_counted_and_loses_no_row(
    bucket, shadow_models, answer
):
    faulty = Faulty(shadow_models["v2"], answer)
    log = make(bucket)
    log.record(shadowed(["a", "b"], faulty))
    log.record(shadowed(["c"], shadow_models["v3"]))  # another shadow in the same flush still scores
    assert log.flush() == 3
    logged = shadow_columns(bucket)
    assert [logged[i][1:] for i in ("a", "b")] == [(None, ""), (None, "")]
    assert logged["c"][1] is not None and logged["c"][2] == "v3"
    health = log.shadow_snapshot()
    assert (health["scored_rows"], health["failures"]) == (1, 2)
    assert health["last_error"].startswith("shadow 'v2': ")
    assert log.snapshot()["flush_failures"] == 0 and log.snapshot()["unencodable"] == 0
