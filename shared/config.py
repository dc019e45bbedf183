"""Every environment variable of the system, in one place.

Each variable is declared once below (name, parser, default, meaning). ``load_settings`` parses
them all at once and raises ``ConfigError`` naming the variable and its bad value;
``get_settings`` caches the result for the life of the process (a function instance reads its
environment once). docs/configuration.md (printed by ``python -m shared.config``) and the
Terraform env vars are checked against ``SETTINGS`` by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from shared.contracts import (
    RUNNER_AUTO,
    BuildPath,
    DriftPolicy,
    LogFormat,
    ServingMode,
    StorageBackend,
    TrainingStrategy,
    UnseenCategoryPolicy,
)
from shared.errors import ConfigError, InvalidObjectName

# --- parsers: each takes the raw string and returns the value or raises ValueError -----------


def _choice(*allowed: str) -> Callable[[str], str]:
    # Called with a StrEnum's members (``_choice(*ServingMode)``): the allowed words are the
    # contract's own, never a copy of them.
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
        if low is not None and value < low:
            raise ValueError(f"expected an integer >= {low}")
        if high is not None and value > high:
            raise ValueError(f"expected an integer <= {high}")
        return value

    return parse


def _float(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("expected a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        if low is not None and value < low:
            raise ValueError(f"expected a number >= {low}")
        if high is not None and value > high:
            raise ValueError(f"expected a number <= {high}")
        return value

    return parse


def _bucket_name(raw: str) -> str:
    # Imported here, not at the top: shared.storage's package imports this module.
    from shared.storage.names import BUCKET_NAME_RULE, check_bucket_name

    value = raw.strip()
    try:
        return check_bucket_name(value)
    except InvalidObjectName:
        raise ValueError(f"expected a bucket name: {BUCKET_NAME_RULE}") from None


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a path")
    return Path(raw.strip())


def _text(raw: str) -> str:
    return raw.strip()


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default, parser and what it means."""

    env: str
    default: str
    parse: Callable[[str], Any]
    help: str


DEFAULT_MAX_MODEL_BYTES = 64 * 1024 * 1024  # a default model is KBs; a forest of deep trees tens of MB
DEFAULT_MAX_TABLE_BYTES = 384 * 1024 * 1024

SETTINGS: tuple[Setting, ...] = (
    # storage
    Setting(
        "STORAGE_BACKEND",
        StorageBackend.LOCAL,
        _choice(*StorageBackend),
        "where buckets live: local folders or Cloud Storage",
    ),
    Setting("LOCAL_BUCKETS_ROOT", ".local/buckets", _path, "folder holding one folder per local bucket"),
    Setting(
        "DATA_BUCKET",
        "prodml-data",
        _bucket_name,
        "bucket where data files arrive (incoming/) and are quarantined",
    ),
    Setting(
        "ARTIFACTS_BUCKET",
        "prodml-artifacts",
        _bucket_name,
        "bucket of schema, models, tables, traffic, registry",
    ),
    # logging
    Setting(
        "LOG_FORMAT",
        LogFormat.AUTO,
        _choice(*LogFormat),
        "json lines for Cloud Logging, text for a terminal; auto picks by isatty",
    ),
    Setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "lowest severity logged"),
    # validation and training
    # Sized for the train function's 2 GiB (infra/locals.tf): validating and training on a file of
    # 1,000,000 rows (8 columns, a 39 MB CSV) peaked at 880 MB RSS; see docs/configuration.md.
    Setting("MAX_FILE_BYTES", str(50 * 1024 * 1024), _int(1), "a data file larger than this is quarantined"),
    Setting("MAX_ROWS", "1000000", _int(1), "a data file with more rows than this is quarantined"),
    Setting(
        "MAX_COLUMNS",
        "1000",
        _int(1),
        "a data file with more columns than this is quarantined (checked on its header); "
        "at least the schema's features and label",
    ),
    Setting(
        "MAX_NULL_SHARE", "0.05", _float(0.0, 1.0), "largest share of missing values allowed in any column"
    ),
    Setting(
        "UNSEEN_CATEGORY_POLICY",
        UnseenCategoryPolicy.QUARANTINE,
        _choice(*UnseenCategoryPolicy),
        "what to do with category values outside the schema's domain",
    ),
    Setting(
        "DRIFT_PSI_THRESHOLD",
        "0.25",
        _float(0.0),
        "population stability index above which a feature counts as drifted",
    ),
    Setting(
        "DRIFT_POLICY",
        DriftPolicy.WARN,
        _choice(*DriftPolicy),
        "what drift over the threshold does to a file",
    ),
    Setting(
        "TRAINING_STRATEGY",
        TrainingStrategy.FULL,
        _choice(*TrainingStrategy),
        "retrain from scratch on the window, or partial_fit on the new file",
    ),
    Setting(
        "TRAINING_WINDOW_FILES", "30", _int(1), "full retrains use the most recent this many accepted files"
    ),
    Setting(
        "TRAINING_WINDOW_ROWS",
        "1000000",
        _int(1),
        "a full retrain reads only the most recent accepted files whose rows, with the new file's, "
        "fit in this many (bounds the train function's memory)",
    ),
    Setting(
        "PROMOTION_TOLERANCE",
        "0.01",
        _float(0.0),
        "a challenger may be this much worse than the champion and still be promoted",
    ),
    Setting(
        "HOLDOUT_FRACTION",
        "0.2",
        _float(0.01, 0.9),
        "share of each file held out to compare challenger and champion",
    ),
    Setting(
        "CAS_MAX_ATTEMPTS", "5", _int(1, 100), "times a trainer redoes its work when another promoted first"
    ),
    Setting(
        "TRAIN_CLAIM_SECONDS",
        "900",
        _float(1.0),
        "how long a train delivery's claim on a data file version lasts (longer than the function's "
        "540 s timeout): meanwhile other deliveries of it train nothing; after it a redelivery takes over",
    ),
    Setting(
        "HOLDOUT_WINDOW_FILES",
        "5",
        _int(1),
        "the gate compares models on the held-out rows of this many most recent accepted files",
    ),
    Setting(
        "TRAIN_CRASH_FILE",
        "",
        _text,
        "tests only: when this file exists, a trainer deletes it and kills itself between "
        "writing a version and promoting it",
    ),
    Setting(
        "ESTIMATOR",
        "",
        _text,
        "module:function returning an unfitted scikit-learn estimator (empty: the default pipeline)",
    ),
    Setting(
        "MODEL_TRUSTED_TYPES",
        "",
        _names,
        "comma-separated extra types skops may load (for a plugged-in estimator)",
    ),
    Setting("RANDOM_SEED", "0", _int(0), "seed for splits and estimators, so runs repeat"),
    # serving
    Setting(
        "SERVING_MODE",
        ServingMode.DYNAMIC,
        _choice(*ServingMode),
        "how predict answers: table only, model only, or table then model",
    ),
    Setting("RELOAD_SECONDS", "10", _float(0.0), "how often predict checks for a new model or table"),
    Setting("MAX_BODY_BYTES", str(1024 * 1024), _int(1), "largest predict request body"),
    Setting("MAX_INSTANCES", "1000", _int(1), "most instances in one predict request"),
    # Loading reads a zip member whole: these bound what a model or table file may decompress to,
    # so a small crafted file cannot grow an instance past its memory (shared/zip_limits.py).
    Setting(
        "MAX_MODEL_BYTES",
        str(DEFAULT_MAX_MODEL_BYTES),
        _int(1),
        "largest model loaded: its skops file's members uncompressed (a bigger or zip-bombed file is "
        "refused unread)",
    ),
    Setting(
        "MAX_TABLE_BYTES",
        str(DEFAULT_MAX_TABLE_BYTES),
        _int(1),
        "largest table predict loads: its npz members uncompressed (a binary table of "
        "PIPELINE_MAX_ROWS keys is 320 MB)",
    ),
    Setting(
        "TRAFFIC_FLUSH_SECONDS", "60", _float(0.0), "how often predict writes its key counts to traffic/"
    ),
    Setting(
        "TRAFFIC_SKETCH_SIZE",
        "10000",
        _int(10),
        "keys a predict instance tracks (heavy-hitters sketch capacity)",
    ),
    # batch table
    Setting("TABLE_MAX_ROWS", "2000000", _int(1), "largest key space a full table build enumerates"),
    Setting("TABLE_CHUNK_ROWS", "100000", _int(1), "rows scored per vectorized chunk in a table build"),
    Setting("TABLE_TOP_K", "100000", _int(1), "default K for top_k table builds"),
    # scale-out pipelines (shared/pipelines, docs/scale-out.md)
    Setting(
        "TABLE_FUNCTION_BUDGET_SECONDS",
        "300",
        _float(1.0),
        "a table build expected to take longer than this (measured rows/s) runs as a Beam pipeline",
    ),
    Setting(
        "PIPELINE_MAX_ROWS",
        "20000000",
        _int(1),
        "largest key space a pipeline table build enumerates (predict holds 16 bytes a key, twice "
        "while it reloads: 20M keys fit its 1 GiB; raise both together)",
    ),
    Setting(
        "PIPELINE_RUNNER",
        RUNNER_AUTO,
        _choice(RUNNER_AUTO, *BuildPath),
        "where big work runs: auto (dataflow on gcs, else direct), or always function/direct/dataflow",
    ),
    Setting(
        "PIPELINE_PYTHON",
        ".venv-beam/bin/python",
        _path,
        "interpreter with apache-beam for local DirectRunner pipelines (relative: to the repo root)",
    ),
    Setting("PIPELINE_DIRECT_WORKERS", "1", _int(1, 64), "parallel workers of a local DirectRunner pipeline"),
    Setting("DATAFLOW_PROJECT", "", _text, "GCP project of Dataflow jobs"),
    Setting("DATAFLOW_REGION", "us-central1", _text, "region of Dataflow jobs"),
    Setting("DATAFLOW_TEMP_LOCATION", "", _text, "gs:// folder for Dataflow temp and staging files"),
    Setting("DATAFLOW_SERVICE_ACCOUNT", "", _text, "service account email Dataflow workers run as"),
    Setting("DATAFLOW_TEMPLATE", "", _text, "gs:// path of the pipelines' Flex Template spec"),
    Setting("DATAFLOW_MAX_WORKERS", "10", _int(1, 1000), "most Dataflow workers a job may scale to"),
    Setting("DATAFLOW_MACHINE_TYPE", "n2-standard-4", _text, "machine type of Dataflow workers"),
    # local emulation
    Setting("PREDICT_PORT", "8080", _int(1, 65535), "local port of the predict function"),
    Setting("TRAIN_PORT", "8081", _int(1, 65535), "local port of the train function"),
    Setting("BUILD_TABLE_PORT", "8082", _int(1, 65535), "local port of the build_table function"),
    Setting(
        "BUILD_TABLE_EVENT_PORT", "8083", _int(1, 65535), "local port of build_table's event entry point"
    ),
    Setting(
        "LOCAL_DEADLETTER_DIR",
        ".local/deadletter",
        _path,
        "where the local router records events it gave up on",
    ),
    Setting("ROUTER_MAX_ATTEMPTS", "5", _int(1, 100), "deliveries of one event before it is dead-lettered"),
    Setting("ROUTER_MAX_IN_FLIGHT", "4", _int(1, 256), "events the local router delivers at once"),
    Setting(
        "ROUTER_BACKOFF_SECONDS",
        "0.5",
        _float(0.0),
        "first retry delay of the local router (doubles, with jitter)",
    ),
    Setting("SCHEDULE_SECONDS", "300", _float(1.0), "interval of the local scheduler's build_table call"),
    Setting(
        "ROUTER_QUIET_SECONDS",
        "0.5",
        _float(0.0),
        "a dropped file fires once its size and mtime have not changed for this long",
    ),
    Setting("ROUTER_TIMEOUT_SECONDS", "600", _float(1.0), "how long the local router waits for a function"),
)


@dataclass(frozen=True)
class Settings:
    """Parsed configuration; field names are the env var names in lower case."""

    storage_backend: str
    local_buckets_root: Path
    data_bucket: str
    artifacts_bucket: str
    log_format: str
    log_level: str
    max_file_bytes: int
    max_rows: int
    max_columns: int
    max_null_share: float
    unseen_category_policy: str
    drift_psi_threshold: float
    drift_policy: str
    training_strategy: str
    training_window_files: int
    training_window_rows: int
    promotion_tolerance: float
    holdout_fraction: float
    cas_max_attempts: int
    train_claim_seconds: float
    holdout_window_files: int
    train_crash_file: str
    estimator: str
    model_trusted_types: tuple[str, ...]
    random_seed: int
    serving_mode: str
    reload_seconds: float
    max_body_bytes: int
    max_instances: int
    max_model_bytes: int
    max_table_bytes: int
    traffic_flush_seconds: float
    traffic_sketch_size: int
    table_max_rows: int
    table_chunk_rows: int
    table_top_k: int
    table_function_budget_seconds: float
    pipeline_max_rows: int
    pipeline_runner: str
    pipeline_python: Path
    pipeline_direct_workers: int
    dataflow_project: str
    dataflow_region: str
    dataflow_temp_location: str
    dataflow_service_account: str
    dataflow_template: str
    dataflow_max_workers: int
    dataflow_machine_type: str
    predict_port: int
    train_port: int
    build_table_port: int
    build_table_event_port: int
    local_deadletter_dir: Path
    router_max_attempts: int
    router_max_in_flight: int
    router_backoff_seconds: float
    schedule_seconds: float
    router_quiet_seconds: float
    router_timeout_seconds: float


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every setting from ``environ`` (default ``os.environ``); empty means default.

    Raises ``ConfigError`` naming the first bad variable, its value and what was expected.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env, "")
        if raw.strip() == "" and setting.default != "":
            raw = setting.default
        try:
            values[setting.env.lower()] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"environment variable {setting.env}={raw!r} is invalid: {exc}") from None
    return Settings(**values)


@cache
def get_settings() -> Settings:
    """The process's settings, parsed once on first use."""
    return load_settings()


def _check_declarations() -> None:
    declared = {s.env.lower() for s in SETTINGS}
    typed = {f.name for f in fields(Settings)}
    if declared != typed:  # pragma: no cover - guards edits to this file
        raise AssertionError(f"SETTINGS and Settings disagree: {sorted(declared ^ typed)}")


_check_declarations()


def markdown_table() -> str:
    """The table of every variable, its default and meaning, for docs/configuration.md."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
