"""/health's ages and warnings in process, on a real local bucket: a stale model, a table from
another model (a rebuild that stalled), an old table, and none of them by default."""

from __future__ import annotations

import pytest
from conftest import fit_serving_bundle, write_serving_table

from shared.config import load_settings
from shared.contracts import CURRENT_MODEL, HealthWarning
from shared.serving.predictor import Predictor
from shared.storage.local import LocalBucket


@pytest.fixture(scope="module")
def bundles():
    return {"v1": fit_serving_bundle("v1"), "v2": fit_serving_bundle("v2", flip=True)}


def health(artifacts, **env):
    settings = load_settings({"SERVING_MODE": "hybrid", "RELOAD_SECONDS": "3600", **env})
    return Predictor(artifacts, settings, instance_id="test").health()


def codes(report):
    return [w["code"] for w in report["warnings"]]


def test_fresh_model_and_table_of_the_served_model_have_ages_and_no_warning(tmp_path, bundles):
    artifacts = LocalBucket(tmp_path, "prodml-artifacts")
    generation = artifacts.write(CURRENT_MODEL, bundles["v1"].to_bytes())
    write_serving_table(artifacts, bundles["v1"], generation)
    report = health(artifacts)
    assert report["warnings"] == []
    assert 0 <= report["model"]["age_seconds"] < 3600
    assert 0 <= report["table"]["age_seconds"] < 3600  # from the time in its build id
    assert report["table"]["matches_model"] is True


def test_old_model_and_old_table_are_warned_of(tmp_path, bundles):
    artifacts = LocalBucket(tmp_path, "prodml-artifacts")
    generation = artifacts.write(CURRENT_MODEL, bundles["v1"].to_bytes())
    write_serving_table(artifacts, bundles["v1"], generation)
    report = health(artifacts, MODEL_AGE_WARNING_SECONDS="0", TABLE_AGE_WARNING_SECONDS="0")
    assert codes(report) == [HealthWarning.MODEL_OLD, HealthWarning.TABLE_OLD]
    assert "MODEL_AGE_WARNING_SECONDS=0" in report["warnings"][0]["message"]


def test_a_table_from_an_older_model_is_a_stalled_rebuild(tmp_path, bundles):
    artifacts = LocalBucket(tmp_path, "prodml-artifacts")
    generation = artifacts.write(CURRENT_MODEL, bundles["v1"].to_bytes())
    write_serving_table(artifacts, bundles["v1"], generation)
    artifacts.write(CURRENT_MODEL, bundles["v2"].to_bytes())  # promoted; no table built for it yet
    report = health(artifacts)
    assert codes(report) == [HealthWarning.TABLE_FROM_OTHER_MODEL]
    assert "built from model 'v1', not the served 'v2'" in report["warnings"][0]["message"]
    assert report["table"]["used"] is False
