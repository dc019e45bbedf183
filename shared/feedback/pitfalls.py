"""Two of Google's pitfalls, checked at each training file: label leakage and the feedback loop.

``check_pitfalls`` runs both on a validated data file (``shared.feedback.leakage``,
``shared.feedback.served_share``), and, for a file with an ``id`` column, compares its rows with
the features as served (``shared.feedback.row_skew``), and says what to warn about. The train function's
test-then-train step puts ``PitfallReport.to_record()`` into the file's monitoring record and the
card of the version trained on it, and quarantines a leaking file under
``LEAKAGE_POLICY=quarantine`` (rule ``leakage``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shared.config import Settings
from shared.feedback.leakage import LeakageCheck, check_leakage
from shared.feedback.row_skew import RowSkew, row_skew
from shared.feedback.served_share import ServedShare, id_text, read_recent_log, served_share, share_in
from shared.schema import Schema
from shared.storage import Bucket


@dataclass(frozen=True)
class PitfallReport:
    """Both checks on one data file, and the warnings they raise."""

    leakage: LeakageCheck
    served: ServedShare
    warnings: tuple[str, ...]
    skew: RowSkew | None = None  # None: the file has no id column

    def to_record(self) -> dict[str, Any]:
        """The fields a monitoring record carries (and the card, under ``data_checks``)."""
        return {
            "leakage": self.leakage.to_record(),
            "served_share": None if self.served.share is None else round(self.served.share, 6),
            "served": self.served.to_record(),
            "row_skew": None if self.skew is None else self.skew.to_record(),
            "warnings": list(self.warnings),
        }


def check_pitfalls(
    frame: pd.DataFrame,
    ids: pd.Series | None,
    schema: Schema,
    settings: Settings,
    predictions: Callable[[], Bucket],
) -> PitfallReport:
    """Leakage and the served share of one validated file (``ids``: its ``id`` column, or None)."""
    leakage = check_leakage(
        frame, schema, settings.leakage_auc, settings.leakage_sample_rows, settings.random_seed
    )
    served, skew = _served_and_skew(frame, ids, schema, settings, predictions)
    warnings = [
        f"label leakage: {leakage.describe(name)} alone predicts the label (LEAKAGE_AUC={leakage.threshold})"
        for name in leakage.leaking
    ]
    if served.share is not None and served.share > settings.feedback_share_warning:
        warnings.append(
            f"feedback loop: {served.share:.0%} of the rows carry an id this system served "
            f"(over FEEDBACK_SHARE_WARNING={settings.feedback_share_warning})"
        )
    if skew is not None and skew.warning() is not None:
        warnings.append(str(skew.warning()))
    return PitfallReport(leakage, served, tuple(warnings), skew)


def _served_and_skew(
    frame: pd.DataFrame,
    ids: pd.Series | None,
    schema: Schema,
    settings: Settings,
    predictions: Callable[[], Bucket],
) -> tuple[ServedShare, RowSkew | None]:
    """The served share and the row-by-row feature skew, from one read of the recent log."""
    limits = settings.feedback_log_objects, settings.max_table_bytes
    if ids is None:
        return served_share(None, predictions, *limits), None
    wanted = {text for text in (id_text(value) for value in ids) if text is not None}
    recent = read_recent_log(predictions(), wanted, *limits)
    return share_in(ids, recent), row_skew(frame, ids, recent, schema)
