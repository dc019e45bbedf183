"""Label maturity: when "no label yet" becomes a label (LABEL_WINDOW, LABEL_DEFAULT).

A joined prediction is ``labelled`` when its label arrived. Without one it is ``pending``, unless
LABEL_DEFAULT is set and the prediction is older than LABEL_WINDOW: then it is ``defaulted`` and
counts as LABEL_DEFAULT (a click that never converted within the window is a negative). Without
LABEL_DEFAULT unlabelled predictions stay pending however old. ``matured`` rows (labelled or
defaulted) are the rows the live metrics use.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import LabelState
from shared.errors import LabelDefaultError
from shared.feedback.join import TRUTH
from shared.schema import Schema

STATE = "state"
OUTCOME = "outcome"  # the label a matured row counts as: its own, or LABEL_DEFAULT


def label_default(schema: Schema, settings: Settings) -> str | float | None:
    """LABEL_DEFAULT as a label value of ``schema`` (a class's text, or a finite number for
    regression); None when empty; ``LabelDefaultError`` when it is not a label of the schema."""
    raw = settings.label_default
    if raw == "":
        return None
    if schema.label.task == "regression":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise LabelDefaultError(
                f"LABEL_DEFAULT={raw!r} is not a finite number (the label is a regression)"
            )
        return value
    classes = [str(c) for c in schema.label.classes]
    if raw not in classes:
        raise LabelDefaultError(f"LABEL_DEFAULT={raw!r} is not one of the label's classes {classes}")
    return raw


def mature(rows: pd.DataFrame, now: float, window: float, default: str | float | None) -> pd.DataFrame:
    """``rows`` (the join's) with ``STATE`` (a ``LabelState``) and ``OUTCOME`` for each row."""
    labelled = rows[TRUTH].notna().to_numpy(dtype=bool) if len(rows) else np.zeros(0, dtype=bool)
    old = (now - rows["time"].to_numpy(dtype=np.float64)) > window
    defaulted = ~labelled & old & (default is not None)
    state = np.where(labelled, LabelState.LABELLED.value, LabelState.PENDING.value).astype(object)
    state[defaulted] = LabelState.DEFAULTED.value
    outcome = rows[TRUTH].astype(object).to_numpy().copy()
    outcome[defaulted] = default
    return rows.assign(**{STATE: state, OUTCOME: outcome})
