"""The compatibility check of a new data file against the dataset contract (``schema.json``).

``validate_file`` reads the file (``shared.data.files``) and applies the rules below in order;
the first rule that fails raises ``ValidationFailed(rule, message, details)`` naming every column
that breaks it, the first bad rows (1-based data rows: row 1 is the line after a CSV header),
sample bad values and how many cells are bad. The train function quarantines the file with that
reason; nothing of it reaches a model. The value rules themselves, one function a rule, are in
``shared.data.validation_rules``.

=================  =====================================================================
rule               fails when
=================  =====================================================================
too_large          the file is over MAX_FILE_BYTES (``check_size``, before download)
unknown_format     the extension is not .csv, .jsonl, .json or .parquet
unreadable         the parser refuses it (binary junk, broken quoting, bad JSON line)
duplicate_columns  a column name occurs twice (in the CSV header, a Parquet schema, a JSON object)
too_many_columns   more than MAX_COLUMNS columns (from the header, before the rows are read)
empty              no data rows (0 bytes, a header only), or none left after dropping
too_many_rows      more than MAX_ROWS rows
missing_label      the label column is absent
missing_columns    a feature column is absent
null_share         a feature column has more missing values than MAX_NULL_SHARE
wrong_type         a number column holds text (or true/false)
not_integer        an integer column holds a fraction
non_finite         a number column holds an infinity
out_of_range       a number is below the feature's min or above its max
unseen_category    a category value outside the domain (UNSEEN_CATEGORY_POLICY=quarantine)
invalid_label      a label missing, NaN, infinite, text in a regression label, not a class
=================  =====================================================================

Decisions:

- Extra columns are allowed (a producer may add one before the schema does) and listed in
  ``ValidatedData.extra_columns``; they are not part of the frame. MAX_COLUMNS bounds them (it
  may not be below the schema's own columns: ``ConfigError``). A re-read of an accepted file (the
  training window) parses only the schema's columns: ``validate_file(schema_columns_only=True)``.
  One extra column is kept: an ``id`` column (the prediction log's id) becomes
  ``ValidatedData.ids``, one value per row of the frame, for the served share
  (``shared.feedback.served_share``).
- Sample values and column names in a message or ``details`` are cut to
  ``caps.MAX_VALUE_CHARS`` characters (marked as cut): one huge cell makes no huge reason.
- Missing feature values: a column whose missing share is at most MAX_NULL_SHARE passes, and
  the rows with a missing feature value are dropped (counted in ``dropped_rows``): the model has
  no imputation step, and a few incomplete rows say little. A missing label is never allowed: a
  row without its label cannot train or evaluate, and it usually means a broken join upstream.
- ``NaN`` (any spelling) in a number column is a missing value; an infinity is refused.
- Unseen categories under ``accept``: the rows are kept and the values recorded in
  ``unseen_categories``. The default pipeline one-hot encodes with ``handle_unknown="ignore"``,
  so the model sees such a value as "none of the known values" (all-zero indicators): it scores
  from the other features alone. The table never holds such keys (it enumerates the domain).
  Widen the domain in ``schema.json`` to learn from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.data.fault_details import details, names_listed
from shared.data.files import file_format, read_table
from shared.data.validation_rules import (
    MAX_SAMPLES,
    check_domains,
    check_label,
    check_masks,
    check_null_share,
    check_range,
    fractional,
    label_nulls,
)
from shared.data.values import category_strings, numeric_values
from shared.errors import ConfigError, ValidationFailed
from shared.feedback.log_format import ID_COLUMN
from shared.model import to_frame
from shared.schema import Schema


@dataclass(frozen=True)
class ValidatedData:
    """A file that passed validation, ready to score and train on.

    ``frame``: the schema's features (via ``shared.model.to_frame``) plus the label column, with
    the label typed as the schema's classes (int or str) or float64 for regression; only complete
    rows, index 0..len-1. ``rows``: data rows in the file (before dropping incomplete ones).
    """

    frame: pd.DataFrame
    rows: int
    unseen_categories: dict[str, list[str]]
    null_shares: dict[str, float]
    format: str
    extra_columns: list[str] = field(default_factory=list)
    dropped_rows: int = 0
    ids: pd.Series | None = None  # the file's ``id`` column, one per row of ``frame``; None without one


def check_size(size: int, settings: Settings) -> None:
    """Refuse a file over MAX_FILE_BYTES before downloading it (``size`` from the stored object)."""
    if size > settings.max_file_bytes:
        raise ValidationFailed(
            "too_large",
            f"file is {size} bytes, over MAX_FILE_BYTES={settings.max_file_bytes}",
            details(count=size, max_file_bytes=settings.max_file_bytes),
        )


def schema_columns(schema: Schema) -> list[str]:
    """The columns a data file must have: the schema's features and its label."""
    return [*schema.feature_names, schema.label.name]


def column_limit(schema: Schema, settings: Settings) -> int:
    """MAX_COLUMNS; a ``ConfigError`` naming both when it is below the schema's own columns."""
    needed = len(schema_columns(schema))
    if settings.max_columns < needed:
        raise ConfigError(
            f"MAX_COLUMNS={settings.max_columns} is below the schema's own {needed} columns "
            f"({needed - 1} features and the label): no file could pass; set MAX_COLUMNS to at "
            f"least {needed}"
        )
    return settings.max_columns


def validate_file(
    path: Path,
    object_name: str,
    schema: Schema,
    settings: Settings,
    *,
    schema_columns_only: bool = False,
) -> ValidatedData:
    """Read ``path`` and check it against ``schema``; ``ValidationFailed`` on the first broken rule.

    ``schema_columns_only``: parse only the schema's columns, for a file accepted before (the
    training window re-reads it: its extra columns must cost nothing). Not for a first read: the
    CSV parser then no longer refuses a row with more fields than the header.
    """
    fmt = file_format(object_name)
    check_size(path.stat().st_size, settings)  # the event's size may differ from what arrived
    table = read_table(
        path,
        object_name,
        settings.max_rows,
        max_columns=column_limit(schema, settings),
        wanted=schema_columns(schema) if schema_columns_only else None,
    )
    return validate_frame(table.frame, object_name, schema, settings, fmt, columns=table.columns)


def validate_frame(
    raw: pd.DataFrame,
    object_name: str,
    schema: Schema,
    settings: Settings,
    fmt: str = "frame",
    columns: list[str] | None = None,
) -> ValidatedData:
    """The rules after reading, on a frame as ``read_frame`` returns it (index 0..n-1).

    ``columns``: every column of the file, when ``raw`` holds only some of them.
    """
    all_columns = columns if columns is not None else [str(c) for c in raw.columns]
    _check_columns(raw, object_name, schema, all_columns)
    parsed = _parse_features(raw, schema)
    label_values, unseen = _check_values(raw, object_name, schema, settings, parsed)
    frame, dropped, keep = _complete_rows(object_name, schema, parsed, label_values)
    ids = raw[ID_COLUMN][keep].reset_index(drop=True) if ID_COLUMN in raw.columns else None
    known = set(schema.feature_names) | {schema.label.name}
    return ValidatedData(
        frame=frame,
        rows=len(raw),
        unseen_categories=unseen,
        null_shares=parsed.null_shares,
        format=fmt,
        extra_columns=[c for c in all_columns if c not in known],
        dropped_rows=dropped,
        ids=ids,
    )


@dataclass(frozen=True)
class _ParsedFeatures:
    """Each feature parsed once: category strings, or numbers plus a mask of text cells; and the
    masks of missing cells (features) and missing labels, which the rules and the drop share."""

    strings: dict[str, pd.Series]
    numbers: dict[str, pd.Series]
    text: dict[str, pd.Series]
    null_masks: dict[str, pd.Series]
    label_nulls: pd.Series
    null_shares: dict[str, float]


def _check_columns(raw: pd.DataFrame, object_name: str, schema: Schema, all_columns: list[str]) -> None:
    """The rules on the frame's shape: ``empty``, ``missing_label``, ``missing_columns``."""
    if len(raw) == 0:
        raise ValidationFailed("empty", f"{object_name!r} has no data rows", details(count=0))
    label = schema.label
    if label.name not in raw.columns:
        raise ValidationFailed(
            "missing_label",
            f"{object_name!r} has no label column {label.name!r}; columns are {names_listed(all_columns)}",
            details(columns=[label.name], samples=list(all_columns[:MAX_SAMPLES])),
        )
    missing = [f.name for f in schema.features if f.name not in raw.columns]
    if missing:
        raise ValidationFailed(
            "missing_columns",
            f"{object_name!r} lacks feature column(s) {names_listed(missing)}; "
            f"columns are {names_listed(all_columns)}",
            details(columns=missing, count=len(missing)),
        )


def _parse_features(raw: pd.DataFrame, schema: Schema) -> _ParsedFeatures:
    """Parse every feature column once, and find the missing cells of each and of the label."""
    strings: dict[str, pd.Series] = {}
    numbers: dict[str, pd.Series] = {}
    text: dict[str, pd.Series] = {}
    for feature in schema.features:
        if feature.type == "category":
            strings[feature.name] = category_strings(raw[feature.name])
        else:
            numbers[feature.name], text[feature.name] = numeric_values(raw[feature.name])
    # A text cell in a number column is not missing: it is wrong_type, a rule of its own.
    null_masks = {
        f.name: (strings[f.name].isna() if f.type == "category" else numbers[f.name].isna() & ~text[f.name])
        for f in schema.features
    }
    nulls = label_nulls(schema, raw[schema.label.name])
    null_shares = {name: float(mask.mean()) for name, mask in null_masks.items()}
    null_shares[schema.label.name] = float(nulls.mean())
    return _ParsedFeatures(strings, numbers, text, null_masks, nulls, null_shares)


def _check_values(
    raw: pd.DataFrame, object_name: str, schema: Schema, settings: Settings, parsed: _ParsedFeatures
) -> tuple[pd.Series, dict[str, list[str]]]:
    """The value rules in the module docstring's order; the typed label and the unseen categories."""
    numbers = parsed.numbers
    check_null_share(object_name, parsed.null_masks, settings.max_null_share)
    check_masks(object_name, "wrong_type", dict(parsed.text), raw, "must hold numbers, found text")
    integers = [f for f in schema.features if f.type == "integer"]
    check_masks(
        object_name,
        "not_integer",
        {f.name: fractional(numbers[f.name]) for f in integers},
        raw,
        "must hold whole numbers, found",
    )
    check_masks(
        object_name,
        "non_finite",
        {n: pd.Series(np.isinf(v.to_numpy()), index=v.index) for n, v in numbers.items()},
        raw,
        "must hold finite numbers, found",
    )
    check_range(object_name, schema, numbers, raw)
    unseen = check_domains(object_name, schema, parsed.strings, raw, settings.unseen_category_policy)
    label_values = check_label(object_name, schema, raw[schema.label.name], parsed.label_nulls)
    return label_values, unseen


def _complete_rows(
    object_name: str, schema: Schema, parsed: _ParsedFeatures, label_values: pd.Series
) -> tuple[pd.DataFrame, int, pd.Series]:
    """The frame of the complete rows (index 0..len-1), how many rows were dropped, and the mask
    of the rows kept."""
    keep = ~pd.concat(list(parsed.null_masks.values()), axis=1).any(axis=1)
    dropped = int((~keep).sum())
    if not keep.any():
        raise ValidationFailed(
            "empty",
            f"{object_name!r}: no complete rows left after dropping {dropped} rows with missing values",
            details(columns=[n for n, m in parsed.null_masks.items() if m.any()], count=dropped),
        )
    clean = pd.DataFrame(
        {
            f.name: (parsed.strings[f.name] if f.type == "category" else parsed.numbers[f.name])[keep]
            for f in schema.features
        }
    )
    frame = to_frame(schema, clean)
    frame[schema.label.name] = label_values[keep]
    return frame.reset_index(drop=True), dropped, keep
