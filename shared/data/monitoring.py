"""Model monitoring: the live model's quality on each new file, and drift of its inputs.

Test-then-train: before a file trains anything, the current model scores it (``evaluate``) and
its inputs are compared with the training data's reference statistics (``reference_stats``,
stored in the model card) by the population stability index (``psi``). One record per file goes
to ``monitoring/<object name>@<generation>.json`` in the artifacts bucket (``write_record``;
a name too long for that is shortened, see ``record_name``);
``prodml monitor`` lists them.

PSI of one feature is ``sum((a - r) * ln(a / r))`` over bins, ``r`` the reference share of a
bin and ``a`` the new file's, both floored at ``PSI_EPSILON`` so an empty bin counts as rare
rather than infinite. Numbers use 10 quantile bins of the reference (fewer when values repeat);
categories use one bin per value, plus one for values the reference never saw. Rules of thumb:
below 0.1 stable, 0.1-0.25 moderate shift, above 0.25 (DRIFT_PSI_THRESHOLD) drifted.

The module stays whole at about 360 lines: drift, quality and the record are the three parts of
one record a file gets, and its sections (marked below) read in that order.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from shared.config import Settings
from shared.contracts import INCOMING_PREFIX, MONITORING_PREFIX, MonitoringDecision
from shared.data.fault_details import details, jsonable
from shared.data.values import category_strings, numeric_values
from shared.errors import NotFound, SchemaError, ValidationFailed
from shared.logs import get_logger
from shared.model import ModelBundle, to_frame
from shared.record_caps import fit_record
from shared.schema import Schema, load_schema
from shared.storage import Bucket
from shared.storage.names import derived_name
from shared.training.ledger import is_processed

BINS = 10
PSI_EPSILON = 1e-4
OTHER = "__other__"  # the category bin of values the reference never saw
# What a record over caps.MAX_RECORD_BYTES keeps (strings cut): which file, what became of it.
RECORD_KEY_FIELDS = (
    "object",
    "generation",
    "model_version",
    "metrics",
    "decision",
    "rule",
    "message",
    "rows",
    "quarantined_as",
    "time",
    "served_share",
    "warnings",
)

# The metric the champion/challenger gate compares, and whether higher is better.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    "binary": ("log_loss", False),
    "multiclass": ("log_loss", False),
    "regression": ("rmse", False),
}

log = get_logger(__name__)


# --- reference statistics and drift ----------------------------------------------------------


def reference_stats(frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """Per feature, the bins and shares of ``frame`` (the training data), as plain JSON.

    Numbers: ``{"kind": "numeric", "edges": [...], "proportions": [...]}`` where ``edges`` are the
    inner quantile cut points (bin ``i`` holds values in ``(edges[i-1], edges[i]]``, the outer bins
    are open). Categories: ``{"kind": "category", "proportions": {value: share}}``.
    """
    features: dict[str, Any] = {}
    for feature in schema.features:
        if feature.name not in frame.columns:
            continue
        if feature.type == "category":
            values = category_strings(frame[feature.name]).dropna()
            shares = values.value_counts(normalize=True).sort_index()
            features[feature.name] = {
                "kind": "category",
                "proportions": {str(k): float(v) for k, v in shares.items()},
            }
        else:
            finite = _finite(frame[feature.name])
            if len(finite) == 0:
                continue
            # method="lower": edges are observed values, so repeated values (integers) give
            # one bin each instead of empty bins between interpolated edges.
            inner = np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1], method="lower")
            edges = sorted({float(e) for e in inner})
            features[feature.name] = {
                "kind": "numeric",
                "edges": edges,
                "proportions": _bin_shares(finite, edges).tolist(),
            }
    return {"bins": BINS, "rows": int(len(frame)), "features": features}


def psi(reference: dict[str, Any], frame: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Population stability index of each feature of ``frame`` against ``reference``.

    Features absent from either side, or with no values in ``frame``, are left out.
    """
    out: dict[str, float] = {}
    for feature in schema.features:
        ref = reference.get("features", {}).get(feature.name)
        if ref is None or feature.name not in frame.columns:
            continue
        if ref["kind"] == "category":
            values = category_strings(frame[feature.name]).dropna()
            if len(values) == 0:
                continue
            ref_shares = ref["proportions"]
            seen = values.where(values.isin(list(ref_shares)), OTHER)
            new_shares = seen.value_counts(normalize=True)
            bins = sorted(set(ref_shares) | set(new_shares.index))
            expected = np.array([ref_shares.get(b, 0.0) for b in bins])
            actual = np.array([float(new_shares.get(b, 0.0)) for b in bins])
        else:
            finite = _finite(frame[feature.name])
            if len(finite) == 0:
                continue
            expected = np.asarray(ref["proportions"], dtype="float64")
            actual = _bin_shares(finite, ref["edges"])
        out[feature.name] = _psi(expected, actual)
    return out


def _finite(values: pd.Series) -> np.ndarray:
    numbers, _ = numeric_values(values)
    arr = numbers.to_numpy(dtype="float64")
    finite: np.ndarray = arr[np.isfinite(arr)]  # numpy types a masked index as Any
    return finite


def _bin_shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    # side="left": a value equal to an edge falls in the bin that edge closes, (lo, hi].
    index = np.searchsorted(np.asarray(edges, dtype="float64"), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return counts / max(1, len(values))


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, PSI_EPSILON, None)
    a = np.clip(actual, PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_check(psi_by_feature: dict[str, float], settings: Settings) -> list[str]:
    """Features whose PSI is over DRIFT_PSI_THRESHOLD, most drifted first."""
    over = [(v, k) for k, v in psi_by_feature.items() if v > settings.drift_psi_threshold]
    return [k for _, k in sorted(over, key=lambda t: (-t[0], t[1]))]


def drift_failure(drifted: list[str], psi_by_feature: dict[str, float]) -> ValidationFailed:
    """The quarantine reason for a drifted file (DRIFT_POLICY=quarantine)."""
    shown = ", ".join(f"{name!r} (PSI {psi_by_feature[name]:.3f})" for name in drifted)
    return ValidationFailed(
        "drift",
        f"input drift against the training data in {shown}",
        details(
            columns=list(drifted),
            samples=[round(psi_by_feature[name], 4) for name in drifted],
            count=len(drifted),
            psi={k: round(v, 4) for k, v in psi_by_feature.items()},
        ),
    )


# --- model quality -------------------------------------------------------------------------


def model_scores(bundle: ModelBundle, frame: pd.DataFrame) -> np.ndarray:
    """The model's scores of the rows of ``frame`` (features + label column): what ``evaluate`` scores."""
    return bundle.scores(to_frame(bundle.schema, frame))


def evaluate(
    bundle: ModelBundle, frame: pd.DataFrame, scores: np.ndarray | None = None
) -> dict[str, float | None]:
    """The model's quality on ``frame`` (features + label column, as ``ValidatedData.frame``).

    Classification: ``log_loss`` (over all the schema's classes), ``roc_auc`` (binary; macro
    one-vs-rest for multiclass; None when fewer than two classes are present), ``accuracy``.
    Regression: ``mae``, ``rmse``. Also ``rows``.

    ``scores``: the model's scores of ``frame`` (``model_scores``) when the caller has them
    already (the gate scores the same rows for its per-row losses): scoring is most of the cost.
    """
    schema = bundle.schema
    y = frame[schema.label.name]
    if scores is None:
        scores = model_scores(bundle, frame)
    elif len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores given for {len(frame)} rows")
    if bundle.task == "regression":
        return quality_of_scores(schema, y.to_numpy(dtype="float64"), scores, None)
    return quality_of_scores(schema, y.to_numpy(), scores, np.asarray(bundle.labels(scores), dtype=object))


def quality_of_scores(
    schema: Schema, truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray | None
) -> dict[str, float | None]:
    """``evaluate``'s metrics from scores already served: ``truth`` typed as the schema's classes
    (float64 for regression), ``predicted`` the labels answered (None for regression). The live
    report (``shared.feedback.live``) measures served predictions with it."""
    out: dict[str, float | None] = {"rows": float(len(truth))}
    task = schema.label.task
    if task == "regression":
        out["mae"] = float(metrics.mean_absolute_error(truth, scores))
        out["rmse"] = float(math.sqrt(metrics.mean_squared_error(truth, scores)))
        return out
    classes = list(schema.label.classes)
    present = [c for c in classes if bool((truth == c).any())]
    if task == "binary":
        p = np.clip(scores, 0.0, 1.0)
        out["log_loss"] = float(metrics.log_loss(truth, p, labels=classes))
        positive = schema.label.positive_class
        out["roc_auc"] = float(metrics.roc_auc_score(truth == positive, p)) if len(present) == 2 else None
    else:
        proba = _normalized(scores)
        out["log_loss"] = float(metrics.log_loss(truth, proba, labels=classes))
        out["roc_auc"] = _multiclass_auc(truth, proba, classes, present)
    if predicted is not None:
        out["accuracy"] = float(np.mean(np.asarray(predicted, dtype=object) == truth.astype(object)))
    return out


def _normalized(proba: np.ndarray) -> np.ndarray:
    # A class the model never saw scores 0 in ModelBundle.scores; rows must sum to one for sklearn.
    clipped = np.clip(proba, 1e-15, None)
    normalized: np.ndarray = clipped / clipped.sum(axis=1, keepdims=True)  # numpy types this as Any
    return normalized


def _multiclass_auc(
    truth: np.ndarray, proba: np.ndarray, classes: list[Any], present: list[Any]
) -> float | None:
    if len(present) < 2:
        return None
    if len(present) == len(classes):
        return float(metrics.roc_auc_score(truth, proba, multi_class="ovr", average="macro", labels=classes))
    # sklearn's OvR needs every class present; average one-vs-rest over the classes that are.
    aucs = [metrics.roc_auc_score(truth == c, proba[:, classes.index(c)]) for c in present]
    return float(np.mean(aucs))


# --- records -------------------------------------------------------------------------------


def make_record(
    object_name: str,
    generation: int,
    model_version: str | None,
    metrics_: dict[str, float | None] | None,
    psi_by_feature: dict[str, float],
    drifted: list[str],
    decision: str,
    **extra: Any,
) -> dict[str, Any]:
    """A monitoring record (decision: ``accepted``, ``quarantined`` or ``warning``)."""
    return {
        "object": object_name,
        "generation": int(generation),
        "model_version": model_version,
        "metrics": metrics_ or {},
        "psi": psi_by_feature,
        "drifted": list(drifted),
        "decision": decision,
        "time": _now(),
        **extra,
    }


def record_name(object_name: str, generation: int) -> str:
    """``monitoring/<object name>@<generation>.json``, kept within GCS's name limit for any data
    file name (``derived_name``: a long one is shortened with a hash; the record holds it whole)."""
    return derived_name(MONITORING_PREFIX, object_name, f"@{int(generation)}.json")


def write_record(artifacts: Bucket, record: dict[str, Any]) -> str:
    """Write ``record`` (needs ``object`` and ``generation``; ``time`` added if absent); return its name.

    Written again for the same object generation (a redelivered event), it is replaced. A record
    over ``caps.MAX_RECORD_BYTES`` is cut to fit (``caps.fit_record``), keeping RECORD_KEY_FIELDS.
    """
    record = dict(record)
    record.setdefault("time", _now())
    name = record_name(str(record["object"]), int(record["generation"]))
    body = fit_record(jsonable(record), RECORD_KEY_FIELDS, _render) + "\n"
    artifacts.write(name, body.encode(), content_type="application/json")
    return name


def _render(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, allow_nan=False)


def list_records(artifacts: Bucket) -> list[dict[str, Any]]:
    """Every monitoring record, in time order (unreadable ones skipped, logged)."""
    records: list[dict[str, Any]] = []
    for info in artifacts.list(MONITORING_PREFIX):
        if not info.name.endswith(".json"):
            continue
        try:
            record = json.loads(artifacts.read(info.name))
        except NotFound:
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning(f"monitoring record {info.name!r} is not valid JSON: {exc}")
            continue
        if isinstance(record, dict):
            records.append(record)
    return sorted(records, key=lambda r: (str(r.get("time", "")), str(r.get("object", ""))))


# The reason of a file in incoming/ with no outcome yet, when nothing else explains it.
NOT_YET = "not yet processed: no event reached the train function yet, or it is still running"


def unprocessed_files(data: Bucket, artifacts: Bucket, prefix: str = INCOMING_PREFIX) -> list[dict[str, Any]]:
    """Every file under ``prefix`` with no outcome (no "done" marker), and why, in name order:
    ``{"object", "generation", "decision": MonitoringDecision.NOT_PROCESSED, "reason"}``.

    The reason is the error recorded for it (``error: ...``, ``model_error: ...``), a schema that
    cannot be loaded (``no schema: ...``), or ``NOT_YET``; on the local backend also files no
    object name reaches, which never fire (``name refused: ...``; ``object`` is then the file's
    path, ``generation`` None). Nothing waits in ``incoming/`` without a word.
    """
    try:
        load_schema(artifacts)
        schema_problem = None
    except SchemaError as exc:
        schema_problem = f"no schema: {exc}"
    rows: list[dict[str, Any]] = []
    for info in data.list(prefix):
        if is_processed(artifacts, data.name, info.name, info.generation):
            continue
        record = _read_record(artifacts, record_name(info.name, info.generation))
        failed = (MonitoringDecision.ERROR, MonitoringDecision.MODEL_ERROR)
        if record is not None and record.get("decision") in failed:
            # model_error: the current model could not be loaded; replay trains it after a rollback.
            reason = f"{record.get('decision')}: {record.get('message')}"
        else:
            reason = schema_problem or NOT_YET
        rows.append({"object": info.name, "generation": info.generation, "reason": reason})
    # The local backend's files no name reaches; asked by attribute, not by class, so a caching
    # view of the bucket (shared.dashboard.cache) shows them too.
    unreachable = getattr(data, "unreachable", None)
    if callable(unreachable):
        for found in unreachable(prefix):
            rows.append({"object": found.path, "generation": None, "reason": found.reason})
    return [
        {**row, "decision": MonitoringDecision.NOT_PROCESSED}
        for row in sorted(rows, key=lambda r: r["object"])
    ]


def read_record(artifacts: Bucket, object_name: str, generation: int) -> dict[str, Any] | None:
    """The monitoring record of a data file version, or None when there is none (or it is not a
    JSON object: written over by hand, cut short)."""
    return _read_record(artifacts, record_name(object_name, generation))


def _read_record(artifacts: Bucket, name: str) -> dict[str, Any] | None:
    try:
        record = json.loads(artifacts.read(name))
    except (NotFound, ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
