"""A first ``schema.json`` from a data file, for a person to review (``prodml schema infer``).

How each column is read (values as ``shared.data.values`` reads them):

- text and true/false columns become ``category`` features, the domain the sorted distinct
  values (as canonical strings). A column with more than ``max_categories`` distinct values is
  most likely an identifier: it is left out (with a warning), and validation allows it as an
  extra column.
- whole-number columns with at most ``MAX_INTEGER_VALUES`` distinct values become ``integer``
  with the exact observed min/max (they are enumerable, so they can be table keys; widening
  would add keys never seen). Whole numbers with more distinct values are quantities, not codes:
  they become ``float``.
- other numbers become ``float`` with the observed range widened by ``RANGE_MARGIN`` (one whole
  span) on each side, but never across zero. A range is there to catch impossible values and
  unit mistakes (cents for dollars, a -999 sentinel), not shifts within plausible values: those
  are drift, measured by PSI and handled by DRIFT_POLICY. A tight range would quarantine a
  healthy file whose extremes are a little beyond today's; a non-negative quantity stays
  non-negative.
- the label is ``category`` when it is text, true/false, or whole numbers with at most
  ``MAX_INTEGER_VALUES`` distinct values (classes); otherwise ``float`` (regression, unbounded).
- the key (what a static table is keyed by) defaults to every category and integer feature; it
  is the first thing to review: the table holds the product of their cardinalities.
- features outside the key get a ``default`` (the median for numbers, the most frequent value
  for categories): a table build fills them with it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from shared.contracts import LABEL_NAMES
from shared.data.values import category_strings, numeric_values
from shared.errors import SchemaError
from shared.logs import get_logger
from shared.schema import Feature, Label, Scalar, Schema

MAX_INTEGER_VALUES = 50
RANGE_MARGIN = 1.0  # times the observed span, on each side

log = get_logger(__name__)


def default_label(columns: list[str]) -> str:
    """The label column when none is named: one called label/target/y (any case), else the last."""
    lowered = {c.lower(): c for c in columns}
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered[name]
    if not columns:
        raise SchemaError("cannot pick a label: the file has no columns")
    return columns[-1]


def infer_schema(
    frame: pd.DataFrame, label: str, key: list[str] | None = None, max_categories: int = 1000
) -> Schema:
    """Infer features, label and key from ``frame`` (see the module docstring for the rules).

    ``key`` None means every category and integer feature; ``[]`` means no key.
    Raises ``SchemaError`` naming the column when the label is absent or has a single value.
    """
    if label not in frame.columns:
        raise SchemaError(f"label column {label!r} is not in the data; columns are {list(frame.columns)}")
    drafts: list[Feature] = []
    for name in frame.columns:
        if name == label:
            continue
        feature = _infer_feature(str(name), frame[name], max_categories)
        if feature is not None:
            drafts.append(feature)
    if not drafts:
        raise SchemaError(f"no usable feature columns besides the label {label!r}")
    if key is None:
        key = [f.name for f in drafts if f.type in ("category", "integer")]
    missing = [k for k in key if k not in {f.name for f in drafts}]
    if missing:
        raise SchemaError(f"key column(s) {missing} are not features of the inferred schema")
    features = tuple(_with_default(f, frame[f.name]) if f.name not in key else f for f in drafts)
    return Schema(features=features, label=_infer_label(label, frame[label]), key=tuple(key))


def _infer_feature(name: str, values: pd.Series, max_categories: int) -> Feature | None:
    numbers, text = numeric_values(values)
    if bool(text.any()) or pd.api.types.is_bool_dtype(values.dtype):
        strings = category_strings(values).dropna()
        domain = sorted(set(strings))
        if not domain:
            _skip(name, "has no values")
            return None
        if len(domain) > max_categories:
            _skip(name, f"has {len(domain)} distinct values (> max_categories {max_categories})")
            return None
        return Feature(name, "category", domain=tuple(domain))
    present = numbers.dropna()
    present = present[np.isfinite(present.to_numpy())]
    if present.empty:
        _skip(name, "has no values")
        return None
    low, high = float(present.min()), float(present.max())
    whole = bool((present == np.floor(present)).all())
    if whole and present.nunique() <= MAX_INTEGER_VALUES:
        return Feature(name, "integer", min=int(low), max=int(high))
    span = high - low
    margin = RANGE_MARGIN * span
    widened_low = low - margin if low < 0 else max(0.0, low - margin)
    widened_high = high + margin if high > 0 else min(0.0, high + margin)
    return Feature(name, "float", min=_round(widened_low), max=_round(widened_high))


def _round(value: float) -> float:
    """Six significant digits: a readable schema.json (the margin makes the rest noise)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.6g}")


def _skip(name: str, why: str) -> None:
    log.warning(f"column {name!r} {why}: left out of the schema", extra={"fields": {"column": name}})


def _with_default(feature: Feature, values: pd.Series) -> Feature:
    if feature.type == "category":
        counts = category_strings(values).dropna().value_counts()
        # Most frequent; ties broken by the value so the schema does not depend on row order.
        top = sorted(counts[counts == counts.max()].index)[0]
        default: Scalar = str(top)
    else:
        numbers, _ = numeric_values(values)
        median = float(numbers[np.isfinite(numbers.to_numpy())].median())
        default = int(round(median)) if feature.type == "integer" else _round(median)
    return Feature(
        feature.name, feature.type, domain=feature.domain, min=feature.min, max=feature.max, default=default
    )


def _infer_label(name: str, values: pd.Series) -> Label:
    numbers, text = numeric_values(values)
    if bool(text.any()) or pd.api.types.is_bool_dtype(values.dtype):
        classes: list[Scalar] = sorted(set(category_strings(values).dropna()))
    else:
        present = numbers[np.isfinite(numbers.to_numpy())]
        whole = bool((present == np.floor(present)).all())
        if not (whole and present.nunique() <= MAX_INTEGER_VALUES):
            return Label(name, "float")
        classes = sorted(int(v) for v in present.unique())
    if len(classes) < 2:
        raise SchemaError(f"label {name!r} has a single value {classes!r}: nothing to learn")
    return Label(name, "category", classes=tuple(classes))
