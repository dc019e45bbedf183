"""Every environment variable of the system, in one place.

Each variable is declared once, as a field of ``Settings`` (its name, parser, default and
meaning, through ``_env``). ``load_settings`` parses them all at once and raises ``ConfigError``
naming the variable and its bad value; ``get_settings`` caches the result for the life of the
process (a function instance reads its environment once). docs/configuration.md (printed by
``python -m shared.config``) and the Terraform env vars are checked against ``SETTINGS``
(derived from those fields) by the tests.

Over 300 lines on purpose: the declaration of all settings is one list, read as one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from shared.contracts import (
    RUNNER_AUTO,
    BuildPath,
    DriftPolicy,
    LeakagePolicy,
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


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


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


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(raw: str) -> float:
    """Seconds from ``"604800"`` or a number with a unit: ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``."""
    value = raw.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError('expected seconds, or a number with s, m, h or d ("7d")') from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or seconds < 0:
        raise ValueError("expected a finite, non-negative duration")
    return seconds


def _names(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default, parser and what it means."""

    env: str
    default: str
    parse: Callable[[str], Any]
    help: str


_SETTING = "prodml.setting"  # the metadata key of a field's declaration


def _env(default: str, parse: Callable[[str], Any], help: str) -> Any:
    """Declare a ``Settings`` field's variable: its default (the raw string, as documented; empty
    for none), its parser and its meaning. The variable's name is the field's, in upper case."""
    # Typed Any: the field's annotation is the parsed type; the dataclass sees a field() here.
    return field(metadata={_SETTING: (default, parse, help)})


DEFAULT_MAX_MODEL_BYTES = 64 * 1024 * 1024  # a default model is KBs; a forest of deep trees tens of MB
DEFAULT_MAX_TABLE_BYTES = 384 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Parsed configuration: each field is one environment variable, its name in upper case.

    Each field declares its variable once: its default (the raw string, as documented), its
    parser and what it means (``_env``); ``SETTINGS`` and docs/configuration.md are derived."""

    # storage
    storage_backend: str = _env(
        StorageBackend.LOCAL, _choice(*StorageBackend), "where buckets live: local folders or Cloud Storage"
    )
    local_buckets_root: Path = _env(".local/buckets", _path, "folder holding one folder per local bucket")
    data_bucket: str = _env(
        "prodml-data", _bucket_name, "bucket where data files arrive (incoming/) and are quarantined"
    )
    artifacts_bucket: str = _env(
        "prodml-artifacts", _bucket_name, "bucket of schema, models, tables, traffic, registry"
    )
    predictions_bucket: str = _env(
        "prodml-predictions",
        _bucket_name,
        "bucket of predict's prediction log (no trigger on it: a flush fires no function)",
    )
    # logging
    log_format: str = _env(
        LogFormat.AUTO,
        _choice(*LogFormat),
        "json lines for Cloud Logging, text for a terminal; auto picks by isatty",
    )
    log_level: str = _env("info", _choice("debug", "info", "warning", "error"), "lowest severity logged")
    # validation and training
    # Sized for the train function's 2 GiB (infra/locals.tf): validating and training on a file of
    # 1,000,000 rows (8 columns, a 39 MB CSV) peaked at 880 MB RSS; see docs/configuration.md.
    max_file_bytes: int = _env(str(50 * 1024 * 1024), _int(1), "a data file larger than this is quarantined")
    max_rows: int = _env("1000000", _int(1), "a data file with more rows than this is quarantined")
    max_columns: int = _env(
        "1000",
        _int(1),
        "a data file with more columns than this is quarantined (checked on its header); "
        "at least the schema's features and label",
    )
    max_null_share: float = _env(
        "0.05", _float(0.0, 1.0), "largest share of missing values allowed in any column"
    )
    unseen_category_policy: str = _env(
        UnseenCategoryPolicy.QUARANTINE,
        _choice(*UnseenCategoryPolicy),
        "what to do with category values outside the schema's domain",
    )
    drift_psi_threshold: float = _env(
        "0.25", _float(0.0), "population stability index above which a feature counts as drifted"
    )
    drift_policy: str = _env(
        DriftPolicy.WARN, _choice(*DriftPolicy), "what drift over the threshold does to a file"
    )
    leakage_auc: float = _env(
        "0.99",
        _float(0.5, 1.0),
        "a feature whose univariate ROC AUC against the label (either direction; absolute Spearman for "
        "regression) reaches this alone predicts the label: a label leak",
    )
    leakage_policy: str = _env(
        LeakagePolicy.WARN, _choice(*LeakagePolicy), "what a leaking feature does to a file"
    )
    leakage_sample_rows: int = _env(
        "100000", _int(100), "the leakage check measures at most this many rows of a file (a seeded sample)"
    )
    feedback_share_warning: float = _env(
        "0.5",
        _float(0.0, 1.0),
        "a data file whose share of rows with an id this system served is above this is warned about",
    )
    feedback_log_objects: int = _env(
        "200",
        _int(1),
        "the served share looks ids up in at most this many most recent prediction log objects",
    )
    training_strategy: str = _env(
        TrainingStrategy.FULL,
        _choice(*TrainingStrategy),
        "retrain from scratch on the window, or partial_fit on the new file",
    )
    training_window_files: int = _env(
        "30", _int(1), "full retrains use the most recent this many accepted files"
    )
    training_window_rows: int = _env(
        "1000000",
        _int(1),
        "a full retrain reads only the most recent accepted files whose rows, with the new file's, "
        "fit in this many (bounds the train function's memory)",
    )
    promotion_tolerance: float = _env(
        "0.01", _float(0.0), "a challenger may be this much worse than the champion and still be promoted"
    )
    holdout_fraction: float = _env(
        "0.2", _float(0.01, 0.9), "share of each file held out to compare challenger and champion"
    )
    cas_max_attempts: int = _env(
        "5", _int(1, 100), "times a trainer redoes its work when another promoted first"
    )
    train_claim_seconds: float = _env(
        "900",
        _float(1.0),
        "how long a train delivery's claim on a data file version lasts (longer than the function's "
        "540 s timeout): meanwhile other deliveries of it train nothing; after it a redelivery takes over",
    )
    holdout_window_files: int = _env(
        "5", _int(1), "the gate compares models on the held-out rows of this many most recent accepted files"
    )
    train_crash_file: str = _env(
        "",
        _text,
        "tests only: when this file exists, a trainer deletes it and kills itself between "
        "writing a version and promoting it",
    )
    estimator: str = _env(
        "",
        _text,
        "module:function returning an unfitted scikit-learn estimator (empty: the default pipeline)",
    )
    model_trusted_types: tuple[str, ...] = _env(
        "", _names, "comma-separated extra types skops may load (for a plugged-in estimator)"
    )
    random_seed: int = _env("0", _int(0), "seed for splits and estimators, so runs repeat")
    compile_models: bool = _env(
        "true",
        _bool,
        "compile every new model version to ONNX and serve that form where it agrees with "
        "scikit-learn (false: versions are served by scikit-learn)",
    )
    # the feedback loop (docs/feedback.md)
    label_window: float = _env(
        "7d",
        _duration,
        "how long a prediction may wait for its label (seconds, or 90s, 30m, 12h, 7d); past it an "
        "unlabelled prediction counts as LABEL_DEFAULT",
    )
    label_default: str = _env(
        "",
        _text,
        "the label an unlabelled prediction counts as once older than LABEL_WINDOW (one of the schema's "
        "classes, or a number for regression); empty: unlabelled predictions stay pending",
    )
    join_max_rows: int = _env(
        "1000000",
        _int(1),
        "most prediction log rows plus label rows the join reads in a function or `prodml live`; "
        "beyond it the join is refused (run it as a Beam pipeline)",
    )
    feedback_training: bool = _env(
        "false",
        _bool,
        "write matured joined rows (features as served + label) back as data files into "
        "incoming/feedback/ after each labels file, so the model learns from live traffic",
    )
    feedback_min_rows: int = _env(
        "100",
        _int(1),
        "an emission of matured joined rows waits until at least this many rows not emitted before",
    )
    # serving
    serving_mode: str = _env(
        ServingMode.DYNAMIC,
        _choice(*ServingMode),
        "how predict answers: table only, model only, or table then model",
    )
    reload_seconds: float = _env("10", _float(0.0), "how often predict checks for a new model or table")
    threads: int = _env(
        "8",
        _int(1, 1000),
        "request threads of a function process: read by functions-framework's gunicorn, not by "
        "shared (unset, it takes 4 x the cores it sees); the Terraform sets predict's to its "
        "concurrency",
    )
    max_body_bytes: int = _env(str(1024 * 1024), _int(1), "largest predict request body")
    max_instances: int = _env("1000", _int(1), "most instances in one predict request")
    # Loading reads a zip member whole: these bound what a model or table file may decompress to,
    # so a small crafted file cannot grow an instance past its memory (shared/zip_limits.py).
    max_model_bytes: int = _env(
        str(DEFAULT_MAX_MODEL_BYTES),
        _int(1),
        "largest model loaded: its skops file's members uncompressed (a bigger or zip-bombed file is "
        "refused unread)",
    )
    max_table_bytes: int = _env(
        str(DEFAULT_MAX_TABLE_BYTES),
        _int(1),
        "largest table predict loads: its npz members uncompressed (a binary table of "
        "PIPELINE_MAX_ROWS keys is 320 MB)",
    )
    traffic_flush_seconds: float = _env(
        "60", _float(0.0), "how often predict writes its key counts to traffic/"
    )
    traffic_sketch_size: int = _env(
        "10000", _int(10), "keys a predict instance tracks (heavy-hitters sketch capacity)"
    )
    # The prediction log (shared/feedback/prediction_log.py): bounded memory whatever the traffic.
    prediction_log_rate: float = _env(
        "1.0",
        _float(0.0, 1.0),
        "share of served predictions predict logs to PREDICTIONS_BUCKET, chosen by a hash of the "
        "id (one id is always in or out); 0 turns the log off",
    )
    prediction_log_max_rows: int = _env(
        "50000",
        _int(1),
        "most logged predictions a predict instance holds before a flush; further ones are dropped "
        "and counted in /health",
    )
    prediction_log_batch_rows: int = _env(
        "5000", _int(1), "logged predictions that make predict flush the log at once"
    )
    prediction_log_flush_seconds: float = _env(
        "30",
        _float(0.05),
        "how often predict writes its waiting logged predictions (a kill -9 loses at most this "
        "interval's rows, or one batch)",
    )
    model_age_warning_seconds: float = _env(
        str(7 * 24 * 3600), _float(0.0), "/health warns when the served model is older than this"
    )
    table_age_warning_seconds: float = _env(
        str(7 * 24 * 3600),
        _float(0.0),
        "/health warns when the served table is older than this (or built from another model)",
    )
    dashboard_cache_seconds: float = _env(
        "5",
        _float(0.0),
        "how long the dashboard reuses a bucket listing and what it computed from it (0: never)",
    )
    # batch table
    table_max_rows: int = _env("2000000", _int(1), "largest key space a full table build enumerates")
    table_chunk_rows: int = _env("100000", _int(1), "rows scored per vectorized chunk in a table build")
    table_top_k: int = _env("100000", _int(1), "default K for top_k table builds")
    # scale-out pipelines (shared/pipelines, docs/scale-out.md)
    table_function_budget_seconds: float = _env(
        "300",
        _float(1.0),
        "a table build expected to take longer than this (measured rows/s) runs as a Beam pipeline",
    )
    pipeline_max_rows: int = _env(
        "20000000",
        _int(1),
        "largest key space a pipeline table build enumerates (predict holds 16 bytes a key, twice "
        "while it reloads: 20M keys fit its 1 GiB; raise both together)",
    )
    pipeline_runner: str = _env(
        RUNNER_AUTO,
        _choice(RUNNER_AUTO, *BuildPath),
        "where big work runs: auto (dataflow on gcs, else direct), or always function/direct/dataflow",
    )
    pipeline_python: Path = _env(
        ".venv-beam/bin/python",
        _path,
        "interpreter with apache-beam for local DirectRunner pipelines (relative: to the repo root)",
    )
    pipeline_direct_workers: int = _env("1", _int(1, 64), "parallel workers of a local DirectRunner pipeline")
    dataflow_project: str = _env("", _text, "GCP project of Dataflow jobs")
    dataflow_region: str = _env("us-central1", _text, "region of Dataflow jobs")
    dataflow_temp_location: str = _env("", _text, "gs:// folder for Dataflow temp and staging files")
    dataflow_service_account: str = _env("", _text, "service account email Dataflow workers run as")
    dataflow_template: str = _env("", _text, "gs:// path of the pipelines' Flex Template spec")
    dataflow_max_workers: int = _env("10", _int(1, 1000), "most Dataflow workers a job may scale to")
    dataflow_machine_type: str = _env("n2-standard-4", _text, "machine type of Dataflow workers")
    # local emulation
    predict_port: int = _env("8080", _int(1, 65535), "local port of the predict function")
    train_port: int = _env("8081", _int(1, 65535), "local port of the train function")
    build_table_port: int = _env("8082", _int(1, 65535), "local port of the build_table function")
    build_table_event_port: int = _env(
        "8083", _int(1, 65535), "local port of build_table's event entry point"
    )
    dashboard_port: int = _env("8084", _int(1, 65535), "local port of the dashboard function")
    local_deadletter_dir: Path = _env(
        ".local/deadletter", _path, "where the local router records events it gave up on"
    )
    router_max_attempts: int = _env("5", _int(1, 100), "deliveries of one event before it is dead-lettered")
    router_max_in_flight: int = _env("4", _int(1, 256), "events the local router delivers at once")
    router_backoff_seconds: float = _env(
        "0.5", _float(0.0), "first retry delay of the local router (doubles, with jitter)"
    )
    schedule_seconds: float = _env("300", _float(1.0), "interval of the local scheduler's build_table call")
    router_quiet_seconds: float = _env(
        "0.5", _float(0.0), "a dropped file fires once its size and mtime have not changed for this long"
    )
    router_timeout_seconds: float = _env("600", _float(1.0), "how long the local router waits for a function")


def _declared() -> tuple[Setting, ...]:
    """Every variable, in the order of the fields of ``Settings``."""
    declared = []
    for f in fields(Settings):
        default, parse, help = f.metadata[_SETTING]
        declared.append(Setting(f.name.upper(), default, parse, help))
    return tuple(declared)


SETTINGS: tuple[Setting, ...] = _declared()
"""Every variable as declared in ``Settings``: what the docs, Terraform checks and tests read."""


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


def markdown_table() -> str:
    """The table of every variable, its default and meaning, for docs/configuration.md."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
