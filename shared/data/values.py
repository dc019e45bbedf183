"""The one reading of a column's values, shared by validation, schema inference and monitoring.

- ``category_strings``: the canonical string of each value (``7``, ``7.0`` and ``"7"`` are all
  ``"7"``; booleans ``"True"``/``"False"``, as ``str()`` gives them for a JSON request), with
  missing values as ``None``.
- ``numeric_values``: the column as float64 plus a mask of cells holding text (or booleans)
  instead of a number; ``"NaN"``, ``"null"``, ``"NA"`` and friends are missing, not text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

# Text that means "no value" in a numeric column (compared lower-cased, stripped).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-nan"})


def category_strings(values: pd.Series) -> pd.Series:
    """Canonical strings of a category column (object dtype), ``None`` where missing."""
    if values.dtype == object and infer_dtype(values, skipna=False) == "string":
        # Already Python strings with nothing missing (a validated frame): each value is its own
        # canonical string, and mapping them one by one cost most of an event's drift statistics.
        return values.copy()
    missing = values.isna()
    if pd.api.types.is_bool_dtype(values.dtype):
        out = values.map({True: "True", False: "False"})
    elif pd.api.types.is_integer_dtype(values.dtype):
        out = values.astype(str)
    elif pd.api.types.is_float_dtype(values.dtype):
        out = values.map(_one_string)
    elif pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        out = values.astype(object)
    else:
        out = values.map(_one_string)
    out = out.astype(object)
    out[missing] = None
    return out


def _one_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float | np.floating):
        if value != value:
            return None
        if np.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return str(float(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def numeric_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(numbers, text)``: the column as float64 (NaN where missing or not a number) and a
    boolean mask of cells that hold something other than a number (text, booleans)."""
    dtype = values.dtype
    if (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
    ):
        return pd.Series(np.nan, index=values.index), values.notna()
    if pd.api.types.is_numeric_dtype(dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        # Only strings (or missing): parse each distinct value once (category-like columns
        # repeat a few values), then spread the results back by code; code -1 is missing.
        codes, uniques = pd.factorize(values)
        lowered = pd.Series(uniques, dtype=object).str.strip().str.lower()
        token = lowered.isin(MISSING_TOKENS).to_numpy(dtype=bool)
        parsed = pd.to_numeric(lowered.where(~token), errors="coerce").to_numpy(dtype="float64")
        parsed_text = ~token & np.isnan(parsed)
        present = codes >= 0
        safe = np.where(present, codes, 0)
        if len(parsed) == 0:  # every cell missing
            return pd.Series(np.nan, index=values.index), pd.Series(False, index=values.index)
        number_cells = np.where(present, parsed[safe], np.nan)
        text_cells = present & parsed_text[safe]
        return pd.Series(number_cells, index=values.index), pd.Series(text_cells, index=values.index)
    raw = values.astype(object)
    is_bool = raw.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
    as_text = raw.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    missing_token = as_text.map(lambda v: isinstance(v, str) and v in MISSING_TOKENS).astype(bool)
    candidates = as_text.where(~(is_bool | missing_token), None)
    numbers = pd.to_numeric(candidates, errors="coerce").astype("float64")
    text = (raw.notna() & ~missing_token & numbers.isna()) | is_bool
    return numbers, text.astype(bool)
