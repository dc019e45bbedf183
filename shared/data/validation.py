"""The compatibility check of a new data file against the dataset contract (``schema.json``).

``validate_file`` reads the file (``shared.data.files``) and applies the rules below in order;
the first rule that fails raises ``ValidationFailed(rule, message, details)`` naming every column
that breaks it, the first bad rows (1-based data rows: row 1 is the line after a CSV header),
sample bad values and how many cells are bad. The train function quarantines the file with that
reason; nothing of it reaches a model.

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
from typing import Any

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import UnseenCategoryPolicy
from shared.data.files import (
    category_strings,
    details,
    file_format,
    names_listed,
    numeric_values,
    read_table,
)
from shared.errors import ConfigError, ValidationFailed
from shared.model import to_frame
from shared.record_caps import cut_text
from shared.schema import Feature, Schema

MAX_SAMPLES = 5
MAX_ROWS_LISTED = 10


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
    rows = len(raw)
    if rows == 0:
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
    known = set(schema.feature_names) | {label.name}
    extra = [c for c in all_columns if c not in known]

    # Parse each feature once: category strings, or numbers plus a mask of text cells.
    strings: dict[str, pd.Series] = {}
    numbers: dict[str, pd.Series] = {}
    text: dict[str, pd.Series] = {}
    for feature in schema.features:
        if feature.type == "category":
            strings[feature.name] = category_strings(raw[feature.name])
        else:
            numbers[feature.name], text[feature.name] = numeric_values(raw[feature.name])

    null_masks = {
        f.name: (strings[f.name].isna() if f.type == "category" else numbers[f.name].isna() & ~text[f.name])
        for f in schema.features
    }
    label_nulls = _label_nulls(schema, raw[label.name])
    null_shares = {name: float(mask.mean()) for name, mask in null_masks.items()}
    null_shares[label.name] = float(label_nulls.mean())

    _check_null_share(object_name, null_masks, settings.max_null_share)
    _check_masks(
        object_name,
        "wrong_type",
        {n: t for n, t in text.items()},
        raw,
        "must hold numbers, found text",
    )
    integers = [f for f in schema.features if f.type == "integer"]
    _check_masks(
        object_name,
        "not_integer",
        {f.name: _fractional(numbers[f.name]) for f in integers},
        raw,
        "must hold whole numbers, found",
    )
    _check_masks(
        object_name,
        "non_finite",
        {n: pd.Series(np.isinf(v.to_numpy()), index=v.index) for n, v in numbers.items()},
        raw,
        "must hold finite numbers, found",
    )
    _check_range(object_name, schema, numbers, raw)
    unseen = _check_domains(object_name, schema, strings, raw, settings.unseen_category_policy)
    label_values = _check_label(object_name, schema, raw[label.name], label_nulls)

    keep = ~pd.concat(list(null_masks.values()), axis=1).any(axis=1)
    dropped = int((~keep).sum())
    if not keep.any():
        raise ValidationFailed(
            "empty",
            f"{object_name!r}: no complete rows left after dropping {dropped} rows with missing values",
            details(columns=[n for n, m in null_masks.items() if m.any()], count=dropped),
        )
    clean = pd.DataFrame(
        {
            f.name: (strings[f.name] if f.type == "category" else numbers[f.name])[keep]
            for f in schema.features
        }
    )
    frame = to_frame(schema, clean)
    frame[label.name] = label_values[keep]
    return ValidatedData(
        frame=frame.reset_index(drop=True),
        rows=rows,
        unseen_categories=unseen,
        null_shares=null_shares,
        format=fmt,
        extra_columns=extra,
        dropped_rows=dropped,
    )


# --- rules ---------------------------------------------------------------------------------


def _rows(mask: pd.Series) -> list[int]:
    return [int(i) + 1 for i in mask[mask].index[:MAX_ROWS_LISTED]]


def _samples(values: pd.Series, mask: pd.Series) -> list[Any]:
    """Up to MAX_SAMPLES distinct bad values, in order of appearance, each cut (``_sample``)."""
    out: list[Any] = []
    for value in values[mask]:
        if value not in out:
            out.append(value)
        if len(out) == MAX_SAMPLES:
            break
    return [_sample(v) for v in out]


def _sample(value: Any) -> Any:
    """A bad value as a message shows it: a number as it is, anything else as text cut to
    ``caps.MAX_VALUE_CHARS`` (a 10 MB cell, or a JSON list in a cell, is quoted by its start)."""
    if isinstance(value, str):
        return cut_text(value)
    if value is None or isinstance(value, bool | int | float | np.number | np.bool_):
        return value
    return cut_text(str(value))


def _fail_columns(
    object_name: str,
    rule: str,
    masks: dict[str, pd.Series],
    shown: dict[str, pd.Series],
    what: str,
    **extra: Any,
) -> None:
    """Raise ``rule`` for the columns whose mask has a True cell, naming values from ``shown``."""
    bad = {name: mask for name, mask in masks.items() if bool(mask.any())}
    if not bad:
        return
    first = next(iter(bad))
    samples = _samples(shown[first], bad[first])
    rows = _rows(bad[first])
    count = int(sum(int(m.sum()) for m in bad.values()))
    parts = [f"{name!r} ({int(m.sum())} {'row' if int(m.sum()) == 1 else 'rows'})" for name, m in bad.items()]
    shown = ", ".join(repr(s) for s in samples)
    where = f"{'row' if len(rows) == 1 else 'rows'} {', '.join(map(str, rows[:5]))}"
    raise ValidationFailed(
        rule,
        f"{object_name!r}: column {', '.join(parts)} {what} {shown} (in {first!r} at {where})",
        details(columns=list(bad), rows=rows, samples=samples, count=count, **extra),
    )


def _check_masks(
    object_name: str, rule: str, masks: dict[str, pd.Series], raw: pd.DataFrame, what: str
) -> None:
    _fail_columns(object_name, rule, masks, {n: raw[n] for n in masks}, what)


def _check_null_share(object_name: str, null_masks: dict[str, pd.Series], max_share: float) -> None:
    over = {n: m for n, m in null_masks.items() if float(m.mean()) > max_share}
    if not over:
        return
    shares = {n: round(float(m.mean()), 4) for n, m in over.items()}
    first = next(iter(over))
    raise ValidationFailed(
        "null_share",
        f"{object_name!r}: missing values over MAX_NULL_SHARE={max_share} in "
        + ", ".join(f"{n!r} ({s:.1%})" for n, s in shares.items()),
        details(
            columns=list(over),
            rows=_rows(over[first]),
            samples=[None],
            count=int(sum(int(m.sum()) for m in over.values())),
            shares=shares,
            max_null_share=max_share,
        ),
    )


def _fractional(values: pd.Series) -> pd.Series:
    finite = np.isfinite(values.to_numpy())
    arr = values.to_numpy()
    return pd.Series(
        finite & (np.floor(np.where(finite, arr, 0)) != np.where(finite, arr, 0)), index=values.index
    )


def _check_range(object_name: str, schema: Schema, numbers: dict[str, pd.Series], raw: pd.DataFrame) -> None:
    masks: dict[str, pd.Series] = {}
    bounds: dict[str, list[float | None]] = {}
    for name, values in numbers.items():
        feature: Feature = schema.feature(name)
        mask = pd.Series(False, index=values.index)
        if feature.min is not None:
            mask |= values < feature.min
        if feature.max is not None:
            mask |= values > feature.max
        masks[name] = mask
        bounds[name] = [feature.min, feature.max]
    bad = [n for n, m in masks.items() if m.any()]
    if bad:
        low, high = bounds[bad[0]]
        _fail_columns(
            object_name,
            "out_of_range",
            masks,
            {n: raw[n] for n in masks},
            f"must lie in [{low}, {high}], found",
            ranges={n: bounds[n] for n in bad},
        )


def _check_domains(
    object_name: str, schema: Schema, strings: dict[str, pd.Series], raw: pd.DataFrame, policy: str
) -> dict[str, list[str]]:
    masks = {
        name: values.notna() & ~values.isin(schema.feature(name).domain) for name, values in strings.items()
    }
    unseen = {
        name: sorted({str(v) for v in strings[name][mask]})
        for name, mask in masks.items()
        if bool(mask.any())
    }
    if policy == UnseenCategoryPolicy.QUARANTINE:
        _fail_columns(
            object_name,
            "unseen_category",
            masks,
            strings,
            "holds values outside the schema's domain (UNSEEN_CATEGORY_POLICY=quarantine), found",
            unseen={n: [cut_text(x) for x in v[:MAX_SAMPLES]] for n, v in unseen.items()},
        )
    return unseen


def _label_nulls(schema: Schema, values: pd.Series) -> pd.Series:
    """Missing labels: empty or NaN; for number labels also "NaN", "null" and friends as text
    (for string classes such text is just a value that is not a class)."""
    if schema.label.type == "category" and all(isinstance(c, str) for c in schema.label.classes):
        return values.isna()
    numbers, text = numeric_values(values)
    return numbers.isna() & ~text


def _check_label(object_name: str, schema: Schema, values: pd.Series, nulls: pd.Series) -> pd.Series:
    """The label column typed for training; ``invalid_label`` for anything that is not a label."""
    label = schema.label
    name = label.name

    def fail(mask: pd.Series, what: str) -> None:
        _fail_columns(object_name, "invalid_label", {name: mask}, {name: values}, what)

    fail(nulls, "is the label and must not be missing or NaN; found")
    if label.type == "float":
        numbers, text = numeric_values(values)
        fail(text, "is a regression label and must hold numbers, found text")
        fail(pd.Series(np.isinf(numbers.to_numpy()), index=values.index), "must be finite, found")
        out_of_range = pd.Series(False, index=values.index)
        if label.min is not None:
            out_of_range |= numbers < label.min
        if label.max is not None:
            out_of_range |= numbers > label.max
        fail(out_of_range, f"must lie in [{label.min}, {label.max}], found")
        return numbers
    if all(isinstance(c, str) for c in label.classes):
        as_strings = category_strings(values)
        fail(~as_strings.isin(label.classes), f"must be one of the classes {list(label.classes)}, found")
        return as_strings
    numbers, text = numeric_values(values)
    not_class = text | ~numbers.isin([float(c) for c in label.classes])
    fail(not_class, f"must be one of the classes {list(label.classes)}, found")
    return numbers.astype("int64")
