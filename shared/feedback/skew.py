"""Serving skew: each served feature's distribution (from the log) against the serving version's
training data (its card's ``reference``), by the population stability index, as input drift is
measured for data files (``shared.data.monitoring.psi``), flagged over DRIFT_PSI_THRESHOLD.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from shared.config import Settings
from shared.data.monitoring import drift_check, psi
from shared.feedback.join import served_features
from shared.schema import Schema


def serving_skew(
    rows: pd.DataFrame, schema: Schema, reference: dict[str, Any] | None, settings: Settings
) -> dict[str, Any]:
    """``{"reference": bool, "threshold", "features": {name: {"psi", "skewed"}}, "skewed": [...]}``
    for one version's served ``rows``; no features when its card holds no reference."""
    threshold = settings.drift_psi_threshold
    if not reference:
        return {"reference": False, "threshold": threshold, "features": {}, "skewed": []}
    by_feature = psi(reference, served_features(rows), schema)
    skewed = drift_check(by_feature, settings)  # the same rule, and order, as a data file's drift
    features = {
        name: {"psi": round(value, 6), "skewed": name in skewed} for name, value in by_feature.items()
    }
    return {"reference": True, "threshold": threshold, "features": features, "skewed": skewed}
