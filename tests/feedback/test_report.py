"""The live report's ages: the serving model's and the table's, with the warnings /health gives."""

from __future__ import annotations

from pathlib import Path

from conftest import fit_serving_bundle, publish_compiled, write_serving_table

from shared.config import load_settings
from shared.feedback.report import serving_ages
from shared.storage.local import LocalBucket


def test_the_report_names_the_serving_model_and_a_table_built_from_another_with_its_warning(
    tmp_path: Path,
) -> None:
    artifacts = LocalBucket(tmp_path / "buckets", "prodml-artifacts")
    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path / "buckets")})
    assert serving_ages(artifacts, settings, 0.0) == {"model": None, "table": None, "warnings": []}

    old = fit_serving_bundle("v1")
    generation, compiled = publish_compiled(artifacts, old)
    write_serving_table(artifacts, compiled, generation)  # the table of v1 ...
    new_generation, _ = publish_compiled(artifacts, fit_serving_bundle("v2", flip=True), generation)
    updated = artifacts.stat("models/current.skops").updated.timestamp()

    ages = serving_ages(artifacts, settings, updated + 30.0)  # ... while v2 serves, 30 s later

    assert ages["model"] == {"version": "v2", "generation": new_generation, "age_seconds": 30.0}
    assert ages["table"]["model_version"] == "v1" and ages["table"]["matches_model"] is False
    # (write_serving_table dates its builds 2026-01-01: months older than TABLE_AGE_WARNING_SECONDS)
    assert [w["code"] for w in ages["warnings"]] == ["table_from_other_model", "table_old"]
    assert "v1" in ages["warnings"][0]["message"] and "'v2'" in ages["warnings"][0]["message"]
