"""The value rules of ``validate_frame`` (``shared.data.validation``), one function a rule.

Each ``check_*`` raises ``ValidationFailed`` for the columns whose mask of bad cells has a True
cell, naming the first bad rows (1-based data rows), up to ``MAX_SAMPLES`` distinct bad values
(each cut to ``caps.MAX_VALUE_CHARS``) and how many cells are bad. The order in which they run,
and so which rule a file with several faults is quarantined for, is ``validate_frame``'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shared.contracts import UnseenCategoryPolicy
from shared.data.fault_details import details
from shared.data.values import category_strings, numeric_values
from shared.errors import ValidationFailed
from shared.record_caps import cut_text
from shared.schema import Feature, Schema

MAX_SAMPLES = 5
MAX_ROWS_LISTED = 10


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
    sample_text = ", ".join(repr(s) for s in samples)
    where = f"{'row' if len(rows) == 1 else 'rows'} {', '.join(map(str, rows[:5]))}"
    raise ValidationFailed(
        rule,
        f"{object_name!r}: column {', '.join(parts)} {what} {sample_text} (in {first!r} at {where})",
        details(columns=list(bad), rows=rows, samples=samples, count=count, **extra),
    )


def check_masks(
    object_name: str, rule: str, masks: dict[str, pd.Series], raw: pd.DataFrame, what: str
) -> None:
    """Raise ``rule`` for the columns of ``raw`` whose mask has a True cell, quoting raw cells."""
    _fail_columns(object_name, rule, masks, {n: raw[n] for n in masks}, what)


def check_null_share(object_name: str, null_masks: dict[str, pd.Series], max_share: float) -> None:
    """``null_share`` for the columns whose share of missing cells is over ``max_share``."""
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


def fractional(values: pd.Series) -> pd.Series:
    """The mask of finite cells that are not whole numbers (``not_integer``)."""
    finite = np.isfinite(values.to_numpy())
    arr = values.to_numpy()
    return pd.Series(
        finite & (np.floor(np.where(finite, arr, 0)) != np.where(finite, arr, 0)), index=values.index
    )


def check_range(object_name: str, schema: Schema, numbers: dict[str, pd.Series], raw: pd.DataFrame) -> None:
    """``out_of_range`` for numbers below a feature's min or above its max."""
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


def check_domains(
    object_name: str, schema: Schema, strings: dict[str, pd.Series], raw: pd.DataFrame, policy: str
) -> dict[str, list[str]]:
    """The values outside each category's domain; ``unseen_category`` for any under ``quarantine``."""
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


def label_nulls(schema: Schema, values: pd.Series) -> pd.Series:
    """Missing labels: empty or NaN; for number labels also "NaN", "null" and friends as text
    (for string classes such text is just a value that is not a class)."""
    if schema.label.type == "category" and all(isinstance(c, str) for c in schema.label.classes):
        return values.isna()
    numbers, text = numeric_values(values)
    return numbers.isna() & ~text


def check_label(object_name: str, schema: Schema, values: pd.Series, nulls: pd.Series) -> pd.Series:
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
