"""Config: defaults, parsing, and errors that name the variable and its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import SETTINGS, Settings, load_settings, markdown_table
from shared.errors import ConfigError


def test_defaults_are_the_local_embedded_setup() -> None:
    settings = load_settings({})
    assert settings.storage_backend == "local"
    assert settings.local_buckets_root == Path(".local/buckets")
    assert settings.data_bucket == "prodml-data"
    assert settings.artifacts_bucket == "prodml-artifacts"
    assert (settings.predict_port, settings.train_port, settings.build_table_port) == (8080, 8081, 8082)


def test_values_are_parsed_to_their_types() -> None:
    settings = load_settings(
        {
            "STORAGE_BACKEND": "GCS",
            "MAX_INSTANCES": " 50 ",
            "RELOAD_SECONDS": "2.5",
            "MODEL_TRUSTED_TYPES": "a.B,c.D",
        }
    )
    assert settings.storage_backend == "gcs"
    assert settings.max_instances == 50
    assert settings.reload_seconds == 2.5
    assert settings.model_trusted_types == ("a.B", "c.D")


def test_empty_value_means_default() -> None:
    assert load_settings({"SERVING_MODE": ""}).serving_mode == "dynamic"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STORAGE_BACKEND", "s3", "one of local, gcs"),
        ("MAX_INSTANCES", "lots", "an integer"),
        ("MAX_INSTANCES", "0", ">= 1"),
        ("PREDICT_PORT", "70000", "<= 65535"),
        ("RELOAD_SECONDS", "nan", "finite"),
        ("HOLDOUT_FRACTION", "0.95", "<= 0.9"),
        ("DATA_BUCKET", "Bad_Bucket!", "bucket name"),
        ("SERVING_MODE", "batch", "static, dynamic, hybrid"),
    ],
)
def test_bad_value_names_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    assert expected in message


def test_every_declared_setting_is_a_field_and_has_help() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert {s.env.lower() for s in SETTINGS} == fields
    assert all(s.help and s.env.isupper() for s in SETTINGS)


def test_configuration_doc_lists_every_variable_as_declared() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "docs/configuration.md is stale: regenerate with python -m shared.config"
