"""The table builder on a real local bucket: exact scores, top-K, idempotence, races, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_table_bundle, publish_compiled
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import shared.tables.build as table_build
import shared.tables.switch as table_switch
from shared.config import Settings, load_settings
from shared.contracts import BuildStatus
from shared.errors import BadRequest, ConfigError, PreconditionFailed
from shared.model import ModelBundle, to_frame
from shared.pipelines.launch import build_table_routed
from shared.schema import Schema
from shared.serving.traffic import flush_counts
from shared.storage.local import LocalBucket
from shared.tables.build import build_table
from shared.tables.codec import decode_codes, encode_keys, key_string
from shared.tables.format import load_current_table, read_pointer, read_table
from shared.tables.plan import BuildRequest, parse_build_request

KEY = ["country", "hour", "device"]


def _settings(root: Path, **overrides: str) -> Settings:
    return load_settings({"LOCAL_BUCKETS_ROOT": str(root), "TABLE_CHUNK_ROWS": "64", **overrides})


def _traffic(artifacts, counts: dict[tuple[str, int, str], int], instance: str = "i1") -> str:
    now = datetime.now(UTC)
    return flush_counts(
        artifacts, {key_string(list(k)): n for k, n in counts.items()}, KEY, instance, now, now
    )


def test_full_table_scores_equal_the_model_for_random_keys(
    table_artifacts, table_bundle, buckets_root
) -> None:
    result = build_table(table_artifacts, _settings(buckets_root), BuildRequest("full"))
    assert result.status == BuildStatus.BUILT and result.rows == 360 and result.pointer_switched

    table = load_current_table(table_artifacts)
    assert table is not None and len(table) == 360
    schema = table_bundle.schema
    rng = np.random.default_rng(7)
    instances = [
        {
            "country": str(rng.choice(schema.feature("country").domain)),
            "hour": int(rng.integers(0, 24)),
            "device": str(rng.choice(schema.feature("device").domain)),
            "segment": "new",  # the non-key defaults the table was built with
            "bid": 1.5,
        }
        for _ in range(40)
    ]
    codes = encode_keys(schema, {k: [i[k] for i in instances] for k in KEY})
    found, scores = table.lookup(codes)
    assert found.all()
    model_scores = table_bundle.scores(to_frame(schema, instances))
    assert (scores == model_scores).all()  # exactly, not approximately

    pointer, _ = read_pointer(table_artifacts)
    model_generation = table_artifacts.stat("models/current.skops").generation
    assert pointer is not None
    assert pointer["version"] == "v1" and pointer["model_generation"] == model_generation
    assert pointer["blob"] == result.table == table.blob and result.table.startswith("tables/v1/full-")
    assert pointer["rows"] == 360 and pointer["strategy"] == "full" and pointer["key"] == KEY
    meta = table.meta
    assert (
        meta["rows"] == 360 and meta["model_version"] == "v1" and meta["model_generation"] == model_generation
    )
    assert meta["key"] == KEY and meta["strategy"] == "full" and meta["build_seconds"] >= 0
    assert meta["expected_hit_rate"] is None  # no traffic yet


def test_a_compiled_current_model_scores_its_table_with_the_bits_predict_serves(
    table_artifacts, table_bundle, buckets_root
) -> None:
    _, compiled = publish_compiled(table_artifacts, table_bundle)

    result = build_table(table_artifacts, _settings(buckets_root), BuildRequest("full"))

    assert result.status == BuildStatus.BUILT and result.rows == 360
    table = load_current_table(table_artifacts)
    assert table is not None and table.meta["model_form"] == "onnx"
    schema = table_bundle.schema
    rng = np.random.default_rng(11)
    for code in rng.choice(360, 30, replace=False):  # each key alone, as predict scores a request
        key = decode_codes(schema, np.array([code], dtype=np.int64))
        alone = compiled.score_columns({**key, "segment": ["new"], "bid": [1.5]})
        assert table.lookup_one(int(code)) == alone[0]  # exactly: the same bits
    # and it is the compiled form, not scikit-learn's float64 arithmetic, that scored it
    everything = decode_codes(schema, table.codes)
    sklearn_scores = table_bundle.score_columns(
        {**everything, "segment": np.full(360, "new", dtype=object), "bid": np.full(360, 1.5)}
    )
    assert not np.array_equal(table.scores, sklearn_scores)
    assert np.abs(table.scores - sklearn_scores).max() < 1e-6


def test_the_same_model_generation_is_built_once_unless_forced(table_artifacts, buckets_root) -> None:
    settings = _settings(buckets_root)
    built = build_table(table_artifacts, settings)
    assert built.status == BuildStatus.BUILT and built.table is not None
    first = table_artifacts.stat(built.table).generation

    again = build_table(table_artifacts, settings)
    assert (
        again.status == BuildStatus.SKIPPED
        and "already current" in again.message
        and again.table == built.table
    )
    assert table_artifacts.stat(built.table).generation == first
    assert [i.name for i in table_artifacts.list("tables/v1/")] == [built.table]

    forced = build_table(table_artifacts, settings, BuildRequest(force=True))
    assert forced.status == BuildStatus.BUILT and forced.pointer_switched and forced.table is not None
    assert forced.table > built.table  # build ids sort by time
    assert read_pointer(table_artifacts)[0]["blob"] == forced.table


def test_top_k_table_holds_exactly_the_k_most_frequent_keys(
    table_artifacts, table_bundle, buckets_root
) -> None:
    counts = {
        ("us", 7, "mobile"): 90,
        ("kr", 0, "tablet"): 70,
        ("de", 23, "desktop"): 50,
        ("br", 12, "mobile"): 30,
        ("jp", 3, "tablet"): 10,
        ("xx", 1, "mobile"): 50,  # not a valid key: counted as a miss, never tabled
    }
    _traffic(table_artifacts, counts)
    result = build_table(table_artifacts, _settings(buckets_root), BuildRequest("top_k", k=3))
    assert result.status == BuildStatus.BUILT and result.rows == 3

    table = read_table(table_artifacts, result.table)
    schema = table_bundle.schema
    top3 = [("us", 7, "mobile"), ("kr", 0, "tablet"), ("de", 23, "desktop")]
    expected = np.sort(encode_keys(schema, {k: [key[i] for key in top3] for i, k in enumerate(KEY)}))
    np.testing.assert_array_equal(table.codes, expected)
    assert table.meta["strategy"] == "top_k" and table.meta["k"] == 3
    assert table.meta["expected_hit_rate"] == pytest.approx(210 / 300)
    assert result.expected_hit_rate == pytest.approx(210 / 300)


def test_top_k_is_rebuilt_when_new_traffic_arrives(table_artifacts, buckets_root) -> None:
    settings = _settings(buckets_root)
    _traffic(table_artifacts, {("us", 7, "mobile"): 5})
    assert build_table(table_artifacts, settings, BuildRequest("top_k", k=2)).rows == 1
    assert build_table(table_artifacts, settings, BuildRequest("top_k", k=2)).status == BuildStatus.SKIPPED
    _traffic(table_artifacts, {("kr", 1, "tablet"): 3}, instance="i2")
    again = build_table(table_artifacts, settings, BuildRequest("top_k", k=2))
    assert again.status == BuildStatus.BUILT and again.rows == 2


def test_auto_uses_top_k_when_the_key_space_is_too_big(table_artifacts, buckets_root) -> None:
    settings = _settings(buckets_root, TABLE_MAX_ROWS="100", TABLE_TOP_K="50")  # 360 keys > 100

    nothing = build_table(table_artifacts, settings)
    assert nothing.status == BuildStatus.NOTHING_TO_BUILD
    assert (
        "no traffic counted yet" in nothing.message and "360 keys, over TABLE_MAX_ROWS=100" in nothing.message
    )
    assert not list(table_artifacts.list("tables/"))

    with pytest.raises(BadRequest, match="360 keys, over TABLE_MAX_ROWS=100") as refused:
        build_table(table_artifacts, settings, BuildRequest("full"))
    assert refused.value.field == "strategy"

    _traffic(table_artifacts, {("us", h, "mobile"): 100 - h for h in range(24)})
    result = build_table(table_artifacts, settings)
    assert result.status == BuildStatus.BUILT and result.strategy == "top_k" and result.rows == 24


def test_no_model_builds_nothing(buckets_root) -> None:
    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    result = build_table(artifacts, _settings(buckets_root))
    assert result.status == BuildStatus.NOTHING_TO_BUILD and "no model yet" in result.message
    assert not list(artifacts.list("tables/"))


def test_a_model_promoted_during_the_build_wins_the_pointer(table_artifacts, buckets_root, mocker) -> None:
    """While v1's table is being scored, v2 is promoted and its own build finishes first."""
    settings = _settings(buckets_root)
    real_score = table_build.score_keys
    promoted: list[str] = []

    def score_and_promote(bundle, schema, columns):
        if not promoted:
            promoted.append("v2")
            table_artifacts.write("models/current.skops", fit_table_bundle("v2", seed=1).to_bytes())
            mocker.stopall()  # the nested build scores normally
            assert build_table(table_artifacts, settings).pointer_switched
        return real_score(bundle, schema, columns)

    mocker.patch.object(table_build, "score_keys", side_effect=score_and_promote)
    result = build_table(table_artifacts, settings)

    assert result.status == BuildStatus.BUILT and result.model_version == "v1" and not result.pointer_switched
    assert "model changed during the build" in result.message
    assert read_table(table_artifacts, result.table).meta["rows"] == 360  # kept in its own object
    pointer, _ = read_pointer(table_artifacts)
    assert pointer is not None and pointer["version"] == "v2" and pointer["blob"].startswith("tables/v2/")


def test_each_build_writes_its_own_object_and_the_pointer_names_it(
    table_artifacts, buckets_root, mocker
) -> None:
    """A top-K build, then a forced full build of the same model whose pointer switch never wins
    (another writer keeps changing the pointer): the pointer still describes the object it names."""
    settings = _settings(buckets_root)
    _traffic(table_artifacts, {("us", 7, "mobile"): 9, ("kr", 0, "tablet"): 4})
    top = build_table(table_artifacts, settings, BuildRequest("top_k", k=2))
    assert top.status == BuildStatus.BUILT and top.pointer_switched and top.table is not None
    top_bytes = table_artifacts.read(top.table)

    mocker.patch.object(table_switch, "switch_pointer", side_effect=PreconditionFailed("pointer changed"))
    full = build_table(table_artifacts, settings, BuildRequest("full", force=True))
    assert full.status == BuildStatus.BUILT and not full.pointer_switched and "kept changing" in full.message
    assert full.table is not None and full.table != top.table
    assert full.table.startswith("tables/v1/full-") and top.table.startswith("tables/v1/top_k-")
    assert table_artifacts.read(top.table) == top_bytes  # the current table was not overwritten

    pointer, _ = read_pointer(table_artifacts)
    table = load_current_table(table_artifacts)
    assert pointer is not None and table is not None and pointer["blob"] == top.table
    assert len(table) == pointer["rows"] == 2 and table.meta["strategy"] == pointer["strategy"] == "top_k"
    assert len(read_table(table_artifacts, full.table)) == 360  # kept, for whoever wants it


def test_only_the_last_builds_of_a_model_are_kept_and_never_the_current_one_is_deleted(
    table_artifacts, buckets_root, mocker
) -> None:
    settings = _settings(buckets_root)
    current = build_table(table_artifacts, settings, BuildRequest("full"))
    # Then more builds than are kept, none of which wins the pointer (another writer keeps it busy).
    mocker.patch.object(table_switch, "switch_pointer", side_effect=PreconditionFailed("pointer changed"))
    later = [build_table(table_artifacts, settings, BuildRequest("full", force=True)) for _ in range(4)]
    mocker.stopall()

    names = [i.name for i in table_artifacts.list("tables/v1/")]
    kept = [r.table for r in later[-table_switch.KEEP_BUILDS :]]
    assert sorted(names) == sorted([current.table, *kept])  # the pointer's own table survives
    assert load_current_table(table_artifacts) is not None

    newest = build_table(table_artifacts, settings, BuildRequest("full", force=True))
    assert newest.pointer_switched
    names = [i.name for i in table_artifacts.list("tables/v1/")]
    assert current.table not in names and newest.table in names
    assert len(names) == table_switch.KEEP_BUILDS


def test_a_routed_build_already_current_is_skipped_before_routing(table_artifacts, buckets_root) -> None:
    """The same-build check comes first: no rate measured, no pipeline started (here one could not
    even start: PIPELINE_PYTHON does not exist)."""
    settings = _settings(buckets_root, PIPELINE_PYTHON=str(buckets_root / "no-such-venv/bin/python"))
    built = build_table(table_artifacts, settings, BuildRequest("full"))
    assert built.status == BuildStatus.BUILT

    routed = build_table_routed(table_artifacts, settings, BuildRequest("auto"), runner="direct").to_dict()
    assert (
        routed["status"] == BuildStatus.SKIPPED and routed["path"] is None and routed["table"] == built.table
    )
    assert "already current" in routed["message"]

    with pytest.raises(ConfigError, match="no-such-venv"):  # forced: routed, so the pipeline is tried
        build_table_routed(table_artifacts, settings, BuildRequest("full", force=True), runner="direct")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ([], None, "must be a JSON object"),
        ({"strategy": "all"}, "strategy", "'all'"),
        ({"k": 0}, "k", "got 0"),
        ({"k": "10"}, "k", "got '10'"),
        ({"k": True}, "k", "got True"),
        ({"k": 10**9}, "k", "TABLE_MAX_ROWS=1000"),
        ({"strategy": "full", "k": 5}, "k", "not full"),
        ({"force": "yes"}, "force", "got 'yes'"),
        ({"stratgy": "full"}, "stratgy", "unknown field"),
    ],
)
def test_bad_build_requests_name_the_field_and_value(body, field, words) -> None:
    with pytest.raises(BadRequest, match=words) as refused:
        parse_build_request(body, max_rows=1000)
    assert refused.value.field == field and refused.value.http_status == 400


def test_good_build_requests() -> None:
    assert parse_build_request(None, 1000) == BuildRequest("auto", None, False)
    assert parse_build_request({"strategy": "top_k", "k": 7, "force": True}, 1000) == BuildRequest(
        "top_k", 7, True
    )


def test_prodml_table_build_exits_non_zero_with_one_line_when_nothing_can_be_built(
    table_artifacts, buckets_root: Path
) -> None:
    prodml = str(Path(sys.executable).with_name("prodml"))
    env = {
        **os.environ,
        "LOCAL_BUCKETS_ROOT": str(buckets_root),
        "LOG_FORMAT": "json",
        "TABLE_MAX_ROWS": "100",
    }
    refused = subprocess.run([prodml, "table", "build"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    reason = [line for line in refused.stderr.splitlines() if line.startswith("prodml table build:")]
    assert len(reason) == 1 and "no traffic counted yet" in reason[0]

    env["TABLE_MAX_ROWS"] = "1000"
    done = subprocess.run(
        [prodml, "table", "build", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "built" and summary["rows"] == 360


def test_multiclass_tables_hold_one_score_per_class(buckets_root: Path) -> None:
    schema = Schema.from_dict(
        {
            "features": [
                {"name": "color", "type": "category", "domain": ["red", "green", "blue"]},
                {"name": "size", "type": "integer", "min": 1, "max": 4},
            ],
            "label": {"name": "kind", "type": "category", "classes": ["a", "b", "c"]},
            "key": ["color", "size"],
        }
    )
    records = [{"color": c, "size": s} for c in ("red", "green", "blue") for s in (1, 2, 3, 4)] * 3
    frame = to_frame(schema, records)
    estimator = Pipeline(
        [
            ("prep", ColumnTransformer([("cat", OneHotEncoder(), ["color"])], remainder="passthrough")),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, ["a", "b", "c"] * 12)
    bundle = ModelBundle("mc1", estimator, schema)
    artifacts = LocalBucket(buckets_root, "prodml-artifacts")
    artifacts.write("models/current.skops", bundle.to_bytes())

    built = build_table(artifacts, _settings(buckets_root))
    assert built.rows == 12 and built.table is not None
    table = read_table(artifacts, built.table)
    assert table.scores.shape == (12, 3)
    instances = [{"color": c, "size": s} for c in ("red", "green", "blue") for s in (1, 2, 3, 4)]
    found, scores = table.lookup(
        encode_keys(
            schema, {"color": [i["color"] for i in instances], "size": [i["size"] for i in instances]}
        )
    )
    assert found.all() and (scores == bundle.scores(to_frame(schema, instances))).all()
