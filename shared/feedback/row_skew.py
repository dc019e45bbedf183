"""Feature skew row by row (issue 15 item 7b): a training row whose id was served, compared with
the features as served.

Google's lesson: the features a model is trained on must be the features it is served with. A
data file with an ``id`` column (``ValidatedData.ids``) whose ids predict served and logged says
exactly that for each of those rows: the row's feature values in the file against the values the
log holds for its id (the first served, as the join keeps it). A mismatch is a training-serving
skew of that feature: a pipeline that computes it differently offline, a default served for a
feature the request left out, a value changed after the fact.

Bounded as the served share is (``shared.feedback.served_share``): only the ``FEEDBACK_LOG_OBJECTS``
most recent log objects are read, and only their rows of the file's ids are kept. Categories
compare as text, numbers within a relative 1e-9 (the same decimal parses to the same float; a
number served through JSON and read back from CSV may differ in its last bit). Examples of
mismatches (``EXAMPLES`` per feature) carry values cut by ``shared.record_caps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.feedback.log_format import FEATURE_PREFIX, ID_COLUMN
from shared.feedback.served_share import RecentLog, id_text
from shared.record_caps import cut_value
from shared.schema import Feature, Schema

EXAMPLES = 3  # mismatching rows shown per feature
RELATIVE_TOLERANCE = 1e-9
_ROW = "__row__"


@dataclass(frozen=True)
class FeatureMismatch:
    """How often one feature of the served rows differs from the file's, with a few examples."""

    mismatches: int
    share: float
    examples: tuple[dict[str, Any], ...]  # {"id", "served", "trained"}


@dataclass(frozen=True)
class RowSkew:
    """The row-by-row comparison of one data file's served rows."""

    rows: int  # rows of the file whose id was found in the log read
    features: dict[str, FeatureMismatch]  # every schema feature, compared on those rows
    mismatched: tuple[str, ...]  # features with a mismatch, most mismatches first
    note: str

    def to_record(self) -> dict[str, Any]:
        """The comparison as a monitoring record and the card hold it (``row_skew``)."""
        return {
            "rows": self.rows,
            "features": {
                name: {"mismatches": f.mismatches, "share": round(f.share, 6), "examples": list(f.examples)}
                for name, f in self.features.items()
            },
            "mismatched": list(self.mismatched),
            "note": self.note,
        }

    def warning(self) -> str | None:
        """One sentence naming the mismatched features, or None when every served row agrees."""
        if not self.mismatched:
            return None
        shown = ", ".join(
            f"{name!r} ({self.features[name].mismatches} of {self.rows} rows)" for name in self.mismatched
        )
        return f"feature skew: {shown} differ from the features as served for the same ids"


def row_skew(frame: pd.DataFrame, ids: pd.Series, recent: RecentLog, schema: Schema) -> RowSkew:
    """Compare ``frame``'s rows (validated; ``ids`` its id column) with the log rows of their ids."""
    served = recent.rows.sort_values(["time", "object"], kind="stable").drop_duplicates(ID_COLUMN)
    trained = frame.copy()
    trained[ID_COLUMN] = [id_text(v) for v in ids]
    trained[_ROW] = np.arange(len(frame))
    trained = trained[trained[ID_COLUMN].notna()]
    pairs = trained.merge(served, on=ID_COLUMN, how="inner", suffixes=("", "__served"))
    features: dict[str, FeatureMismatch] = {}
    for feature in schema.features:
        features[feature.name] = _compare(pairs, feature)
    mismatched = sorted(
        (n for n, f in features.items() if f.mismatches), key=lambda n: -features[n].mismatches
    )
    note = (
        f"{len(pairs)} of {len(frame)} rows carry an id found in the {recent.read} most recent of "
        f"{recent.listed} prediction log objects (FEEDBACK_LOG_OBJECTS={recent.max_objects}); "
        "their features are compared with the features as served"
    )
    return RowSkew(len(pairs), features, tuple(mismatched), note)


def _compare(pairs: pd.DataFrame, feature: Feature) -> FeatureMismatch:
    """One feature's mismatches between the file (``name``) and the log (``f.name``)."""
    trained, served = pairs[feature.name], pairs[FEATURE_PREFIX + feature.name]
    if feature.type == "category":
        differs = trained.astype(str).to_numpy() != served.astype(str).to_numpy()
    else:
        a, b = trained.to_numpy(dtype=np.float64), served.to_numpy(dtype=np.float64)
        same = np.isclose(a, b, rtol=RELATIVE_TOLERANCE, atol=0.0) | (np.isnan(a) & np.isnan(b))
        differs = ~same
    count = int(differs.sum())
    shown = pairs[differs].sort_values(_ROW).head(EXAMPLES)
    examples = tuple(
        cut_value({"id": str(id_), "served": _plain(served_value), "trained": _plain(trained_value)})
        for id_, served_value, trained_value in zip(
            shown[ID_COLUMN], shown[FEATURE_PREFIX + feature.name], shown[feature.name], strict=True
        )
    )
    return FeatureMismatch(count, count / len(pairs) if len(pairs) else 0.0, examples)


def _plain(value: Any) -> Any:
    """A value as JSON holds it (a numpy scalar as a Python number, a category as text)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
