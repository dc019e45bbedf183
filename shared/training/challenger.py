"""Training one challenger and judging it against the champion on the same held-out rows.

Used by the train function (``shared.training.on_event``) and by ``prodml train``. Data files are the
``DataFile`` of this module: one validated file, its identity, and which of its rows are held out
(``fitting.holdout_mask``: the same rows for every model, so no model is compared on rows it
trained on).

The gate (``judge``) compares the primary metric (``monitoring.PRIMARY_METRIC``: log loss for
classification, RMSE for regression) row by row on the held-out rows of the most recent files
the champion was trained with (``HOLDOUT_WINDOW_FILES``): data that already passed the gate once.
The new file's own held-out rows are scored too and recorded, but do not decide: its labels are
the one thing not yet trusted, and a file whose labels are noise would make a noise-fitted
challenger look *better* there (it is less confident, so its log loss on noise is lower).
Measured on synthetic files: with them in the gate, a shuffled-labels file was rejected in 1 of
6 runs; without, in 6 of 6.

Each version stores those held-out rows for its successors (``holdout.parquet``), so an
incremental event reads one small table instead of reading and validating five files again.

``PROMOTION_TOLERANCE`` is in the metric's own units for classification (log loss is unitless:
0.01 is a hundredth of a nat) and a fraction of the champion's RMSE for regression, whose RMSE
is in the label's units (0.01 = 1 % worse). A challenger is rejected only when it is worse by
more than that with 95 % confidence (a paired one-sided bound over the held-out rows).
"""

from __future__ import annotations

import copy
import io
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import CardStatus, TrainingStrategy
from shared.data import monitoring
from shared.data.validation import validate_file
from shared.errors import NotFound, ValidationFailed
from shared.logs import get_logger
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.storage import Bucket
from shared.training import fitting
from shared.training.card import Decision, ModelCard
from shared.training.ledger import file_key
from shared.training.registry import Current, holdout_name, now_iso

log = get_logger(__name__)


@dataclass(frozen=True)
class DataFile:
    """One validated data file and its held-out rows."""

    bucket: str
    name: str
    generation: int
    frame: pd.DataFrame
    holdout: np.ndarray  # bool per row of frame: True = held out

    @property
    def key(self) -> str:
        """``bucket/name@generation``."""
        return file_key(self.bucket, self.name, self.generation)

    @property
    def train_rows(self) -> pd.DataFrame:
        """The rows models may learn from."""
        return self.frame[~self.holdout]

    @property
    def holdout_rows(self) -> pd.DataFrame:
        """The rows models are compared on."""
        return self.frame[self.holdout]

    def ref(self) -> dict[str, Any]:
        """This file as a lineage entry."""
        return {
            "bucket": self.bucket,
            "name": self.name,
            "generation": self.generation,
            "rows": len(self.frame),
            "holdout_rows": int(self.holdout.sum()),
        }


def make_data_file(
    bucket: str, name: str, generation: int, frame: pd.DataFrame, settings: Settings
) -> DataFile:
    """A ``DataFile`` with its deterministic held-out rows."""
    mask = fitting.holdout_mask(
        len(frame), f"{bucket}/{name}", settings.holdout_fraction, settings.random_seed
    )
    return DataFile(bucket, name, generation, frame, mask)


def load_lineage_files(
    data: Bucket, refs: list[dict[str, Any]], schema: Schema, settings: Settings
) -> tuple[list[DataFile], list[str]]:
    """Read and validate earlier accepted files; (the files, a note per file that was skipped).

    A file is skipped when it is gone, was replaced by a newer generation (its rows are no longer
    there to read), lives in another bucket, or no longer passes validation (a changed schema).
    """
    files: list[DataFile] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prodml-window-") as folder:
        for ref in refs:
            key = file_key(ref["bucket"], ref["name"], ref["generation"])
            if ref["bucket"] != data.name:
                skipped.append(f"{key}: not in data bucket {data.name!r}")
                continue
            path = Path(folder) / "data"
            try:
                info = data.download(ref["name"], path)
                if info.generation != int(ref["generation"]):
                    skipped.append(f"{key}: replaced by generation {info.generation}")
                    continue
                # Accepted before: only the schema's columns are parsed, so a file with many
                # extra columns does not slow every later retrain (issue 12).
                validated = validate_file(path, ref["name"], schema, settings, schema_columns_only=True)
            except NotFound:
                skipped.append(f"{key}: no longer in the bucket")
                continue
            except ValidationFailed as exc:
                skipped.append(f"{key}: no longer valid ({exc.rule}: {exc.message})")
                continue
            finally:
                path.unlink(missing_ok=True)
            files.append(
                make_data_file(ref["bucket"], ref["name"], int(ref["generation"]), validated.frame, settings)
            )
    for note in skipped:
        log.warning(f"training window: skipped {note}")
    return files, skipped


def _ref_key(ref: dict[str, Any]) -> str:
    return file_key(ref["bucket"], ref["name"], ref["generation"])


def recent_within_rows(refs: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The most recent of ``refs`` (oldest first) whose recorded rows add up to at most ``budget``."""
    chosen: list[dict[str, Any]] = []
    total = 0
    for ref in reversed(refs):
        total += int(ref.get("rows", 0))
        if total > budget:
            break
        chosen.append(ref)
    return chosen[::-1]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


HOLDOUT_KEY_COLUMN = "__prodml_file__"


def holdout_cache_bytes(files: list[DataFile]) -> bytes:
    """The held-out rows of ``files`` as one Parquet table, each row tagged with its file's key.

    Stored with each version (``models/versions/<v>/holdout.parquet``): the next incremental
    event compares models on these rows without reading and validating the files again, which
    keeps its cost flat however much data the model holds (and the gate working when old files
    are deleted from the bucket).
    """
    frames = []
    for f in files:
        rows = f.holdout_rows.copy()
        rows[HOLDOUT_KEY_COLUMN] = f.key
        frames.append(rows)
    buffer = io.BytesIO()
    _concat(frames).to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_holdout_cache(artifacts: Bucket, champion: Current, schema: Schema) -> dict[str, DataFile]:
    """The champion's stored held-out rows by file key (every row held out); empty if unusable."""
    name = champion.card.holdout_cache if champion.card is not None else None
    if not isinstance(name, str):
        return {}
    try:
        frame = pd.read_parquet(io.BytesIO(artifacts.read(name)))
        out: dict[str, DataFile] = {}
        for key, rows in frame.groupby(HOLDOUT_KEY_COLUMN, sort=False):
            rows = rows.drop(columns=[HOLDOUT_KEY_COLUMN]).reset_index(drop=True)
            typed = to_frame(schema, rows)
            typed[schema.label.name] = fitting.labels(rows, schema)
            bucket, rest = str(key).split("/", 1)
            object_name, generation = rest.rsplit("@", 1)
            out[str(key)] = DataFile(bucket, object_name, int(generation), typed, np.ones(len(typed), bool))
    except (NotFound, KeyError, ValueError, TypeError, OSError) as exc:
        # Gone, or written under another schema: the files themselves are read instead.
        log.warning(f"held-out rows of {champion.version} not usable ({exc!r}); reading the files")
        return {}
    return out


@dataclass
class Challenger:
    """A trained, evaluated, judged challenger: what goes into a version."""

    bundle: ModelBundle
    card: ModelCard
    promote: bool
    reason: str
    holdout_bytes: bytes = field(repr=False, default=b"")  # models/versions/<v>/holdout.parquet


@dataclass(frozen=True)
class Fit:
    """A fitted challenger estimator, how it was trained, and on what."""

    estimator: Any
    strategy: str  # "full" or "incremental": what was done
    fallback_reason: str | None  # why an incremental training was done as full instead
    trained_on: list[DataFile]
    seconds: float


def fit_challenger(
    schema: Schema,
    settings: Settings,
    new_files: list[DataFile],
    window: list[DataFile],
    champion: Current | None,
    strategy: str,
) -> Fit:
    """Fit the challenger's estimator.

    ``full``: a fresh estimator on the training rows of ``window`` + ``new_files``.
    ``incremental``: a copy of the champion's estimator, ``partial_fit`` on ``new_files``; when that
    cannot be done (no champion, no ``partial_fit``, a class never seen) it falls back to full and
    says why in ``fallback_reason``. A ``ValueError`` of the estimator (one class only, ...)
    becomes ``ValidationFailed("untrainable")``.
    """
    started = time.perf_counter()
    fallback: str | None = None
    try:
        if strategy == TrainingStrategy.INCREMENTAL:
            if champion is None:
                fallback = "incremental needs a current model"
            elif not fitting.supports_incremental(champion.bundle.estimator):
                fallback = "the current model has no partial_fit"
            else:
                estimator = copy.deepcopy(champion.bundle.estimator)
                try:
                    fitting.fit_incremental(estimator, _concat([f.train_rows for f in new_files]), schema)
                    seconds = time.perf_counter() - started
                    return Fit(estimator, TrainingStrategy.INCREMENTAL, None, new_files, seconds)
                except fitting.IncrementalUnsupported as exc:
                    fallback = str(exc)
        trained_on = window + new_files
        rows = _concat([f.train_rows for f in trained_on])
        estimator = fitting.fit_full(fitting.new_estimator(schema, settings), rows, schema)
    except ValueError as exc:
        names = ", ".join(f.name for f in new_files)
        raise ValidationFailed(
            "untrainable",
            f"the model cannot be trained on {names}: {exc}",
            {"columns": [schema.label.name], "count": sum(len(f.frame) for f in new_files)},
        ) from None
    used = TrainingStrategy.FULL if fallback is not None else strategy
    return Fit(estimator, used, fallback, trained_on, time.perf_counter() - started)


Z_ONE_SIDED_95 = 1.645  # the gate rejects only what is worse with 95 % confidence


def row_losses(bundle: ModelBundle, frame: pd.DataFrame, scores: np.ndarray | None = None) -> np.ndarray:
    """Each row's share of the primary metric: -log p(true class), or the squared error.

    The mean over rows is the log loss (the MSE, whose root is the RMSE) that ``evaluate`` reports.
    ``scores``: the model's scores of ``frame`` (``monitoring.model_scores``) when already computed.
    """
    schema = bundle.schema
    if scores is None:
        scores = bundle.scores(fitting.features(frame, schema))
    elif len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores given for {len(frame)} rows")
    truth = fitting.labels(frame, schema)
    if bundle.task == "regression":
        return np.asarray((scores - truth) ** 2, dtype="float64")
    if bundle.task == "binary":
        positive = truth == schema.label.positive_class
        p_true = np.where(positive, scores, 1.0 - scores)
    else:
        proba = np.clip(scores, 1e-15, None)
        proba = proba / proba.sum(axis=1, keepdims=True)
        index = {c: i for i, c in enumerate(schema.label.classes)}
        p_true = proba[np.arange(len(truth)), [index[c] for c in truth]]
    return -np.log(np.clip(p_true, 1e-15, 1.0))


def judge(
    task: str, challenger: np.ndarray, champion: np.ndarray | None, tolerance: float
) -> tuple[bool, str, dict[str, float]]:
    """Promote or not, why, and the numbers: a paired comparison over the same held-out rows.

    ``challenger`` and ``champion`` are the per-row losses (``row_losses``) on the same rows. The
    challenger is rejected when its mean loss exceeds the champion's by more than the tolerance
    even at the low end of a one-sided 95 % confidence interval of the paired difference: a few
    dozen held-out rows differ by a hundredth of log loss between two equally good models, and the
    gate must not reject on that noise; a file of shuffled labels costs clearly more.
    """
    name, _ = monitoring.PRIMARY_METRIC[task]
    if champion is None:
        return True, "no current model: the first model is promoted", {}
    diff = challenger - champion
    rows = len(diff)
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(rows)) if rows > 1 else 0.0
    if task == "regression":
        # RMSE_c <= (1 + t) RMSE_k  <=>  MSE_c - MSE_k <= ((1 + t)^2 - 1) MSE_k
        allowed = ((1.0 + tolerance) ** 2 - 1.0) * float(champion.mean())
        unit = "squared error"
    else:
        allowed = tolerance
        unit = name
    bound = mean - Z_ONE_SIDED_95 * se
    numbers = {
        "rows": rows,
        "mean_difference": mean,
        "standard_error": se,
        "lower_bound": bound,
        "allowed": allowed,
    }
    verdict = (
        f"{unit} worse by {mean:+.4f} (95% lower bound {bound:+.4f}) than the champion "
        f"on {rows} held-out rows; tolerance {allowed:.4f}"
    )
    if bound <= allowed:
        return True, "promoted: " + verdict, numbers
    return False, "rejected: " + verdict, numbers


def _scores(models: dict[str, ModelBundle | None], rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each present model's scores of ``rows`` (none when there are no rows)."""
    if not len(rows):
        return {}
    return {who: monitoring.model_scores(model, rows) for who, model in models.items() if model is not None}


def _evaluate(
    model: ModelBundle | None, rows: pd.DataFrame, scores: np.ndarray | None
) -> dict[str, float | None] | None:
    """``monitoring.evaluate`` from the model's scores of ``rows``; None without a model or rows."""
    if model is None or scores is None:
        return None
    return monitoring.evaluate(model, rows, scores)


def _copy(quality: dict[str, float | None] | None) -> dict[str, float | None] | None:
    return dict(quality) if quality is not None else None


def build_challenger(
    *,
    version: str,
    schema: Schema,
    settings: Settings,
    data: Bucket | None,
    new_files: list[DataFile],
    champion: Current | None,
    strategy: str,
    event: dict[str, Any] | None,
    by: str,
    artifacts: Bucket | None = None,
    accumulate_lineage: bool = True,
    force_promote: bool = False,
) -> Challenger:
    """Train a challenger on ``new_files`` (plus the window), evaluate it beside the champion, judge it.

    The window of earlier files comes from the champion's lineage (read from ``data``): the last
    ``TRAINING_WINDOW_FILES`` for a full retrain (no more of them than fit, with the new rows, in
    ``TRAINING_WINDOW_ROWS``), the last ``HOLDOUT_WINDOW_FILES`` for the gate.
    When the earlier files serve the gate only (incremental, or a retrain by hand), their
    held-out rows come from the champion's stored table in ``artifacts`` when it has them.
    ``accumulate_lineage=False`` (a static retrain by hand) trains on ``new_files`` alone and
    starts a fresh lineage. ``force_promote`` records the gate's verdict but promotes anyway.
    """
    started = time.perf_counter()
    prior = champion.lineage if (champion is not None and accumulate_lineage) else []
    new_keys = {f.key for f in new_files}
    prior = [r for r in prior if file_key(r["bucket"], r["name"], r["generation"]) not in new_keys]
    holdout_count = settings.holdout_window_files
    if accumulate_lineage:
        gate_refs = prior[-holdout_count:]
    else:  # a retrain by hand is still compared with the champion on trusted rows
        gate_refs = champion.lineage[-holdout_count:] if champion is not None else []
    full = accumulate_lineage and strategy != "incremental"
    # A full retrain reads its earlier files whole: at most TRAINING_WINDOW_ROWS rows with the
    # new files, so the function's memory stays bounded however large the files are.
    budget = settings.training_window_rows - sum(len(f.frame) for f in new_files)
    train_refs = recent_within_rows(prior[-settings.training_window_files :], budget) if full else []
    train_keys = [_ref_key(r) for r in train_refs]
    outside = [r for r in gate_refs if _ref_key(r) not in train_keys]  # the gate's rows only
    cached = (
        read_holdout_cache(artifacts, champion, schema)
        if (outside and artifacts is not None and champion is not None)
        else {}
    )
    uncached = [r for r in outside if _ref_key(r) not in cached]
    to_read = train_refs + ([] if full else uncached)
    loaded, skipped = load_lineage_files(data, to_read, schema, settings) if (to_read and data) else ([], [])
    if full and uncached:
        # Reading them whole would break the row budget; without their stored held-out rows the
        # gate does without them.
        skipped += [f"{_ref_key(r)}: over TRAINING_WINDOW_ROWS and no stored held-out rows" for r in uncached]
    if full and len(train_refs) < len(prior[-settings.training_window_files :]):
        log.info(
            f"training window: {len(train_refs)} earlier files fit TRAINING_WINDOW_ROWS="
            f"{settings.training_window_rows} beside the new rows"
        )
    by_key = {**cached, **{f.key: f for f in loaded}}
    gate_window = [by_key[_ref_key(r)] for r in gate_refs if _ref_key(r) in by_key]
    window = [by_key[key] for key in train_keys if key in by_key] if full else gate_window
    read_seconds = time.perf_counter() - started

    # Incremental reads only the gate's rows; a fallback to full (no partial_fit, a new class)
    # trains on the new file plus what was read, not on the whole TRAINING_WINDOW_FILES.
    training_window = window[-settings.training_window_files :] if accumulate_lineage else []
    fit = fit_challenger(schema, settings, new_files, training_window, champion, strategy)
    used, trained_on, fit_seconds = fit.strategy, fit.trained_on, fit.seconds
    bundle = ModelBundle(version, fit.estimator, schema)

    started_eval = time.perf_counter()
    gate_files = gate_window or new_files
    gate_rows = _concat([f.holdout_rows for f in gate_files])
    new_rows = _concat([f.holdout_rows for f in new_files])
    # Scoring is most of this step: each model scores each row set once, and the metrics and the
    # gate's per-row losses are both derived from those scores.
    models = {"challenger": bundle, "champion": champion.bundle if champion is not None else None}
    gate_scores = _scores(models, gate_rows)
    same_rows = gate_files is new_files  # no earlier files: the gate's rows are the new file's
    new_scores = {} if same_rows else _scores(models, new_rows)
    quality = {who: _evaluate(models[who], gate_rows, gate_scores.get(who)) for who in models}
    new_quality = {
        who: _copy(quality[who]) if same_rows else _evaluate(models[who], new_rows, new_scores.get(who))
        for who in models
    }
    metrics: dict[str, Any] = {
        "primary": monitoring.PRIMARY_METRIC[schema.label.task][0],
        "holdout_files": [f.key for f in gate_files],
        "challenger": quality["challenger"],
        "champion": quality["champion"],
        "new_file_challenger": new_quality["challenger"],
        "new_file_champion": new_quality["champion"],
    }
    if metrics["challenger"] is None:
        promote, reason = (champion is None), "no held-out rows to compare on"
    else:
        promote, reason, metrics["gate"] = judge(
            schema.label.task,
            row_losses(bundle, gate_rows, gate_scores["challenger"]),
            row_losses(champion.bundle, gate_rows, gate_scores["champion"]) if champion is not None else None,
            settings.promotion_tolerance,
        )
    if force_promote and not promote:
        promote, reason = True, f"promoted by hand despite the gate ({reason})"
    train_frame = _concat([f.train_rows for f in (trained_on if used != "incremental" else new_files)])
    reference = monitoring.reference_stats(train_frame, schema)
    eval_seconds = time.perf_counter() - started_eval

    lineage = prior + [dict(f.ref(), added_by=version) for f in new_files]
    holdout_bytes = holdout_cache_bytes(
        ((gate_window if accumulate_lineage else []) + new_files)[-holdout_count:]
    )
    status = CardStatus.PENDING if promote else CardStatus.REJECTED
    card = ModelCard(
        version=version,
        created=now_iso(),
        by=by,
        parent=champion.version if champion is not None else None,
        task=schema.label.task,
        strategy=used,
        fallback_reason=fit.fallback_reason,
        estimator=settings.estimator or "default (shared.training.fitting.default_pipeline)",
        event=event,
        lineage=lineage,
        trained_on=[f.key for f in trained_on] if used != "incremental" else [f.key for f in new_files],
        training_rows=int(len(train_frame)),
        skipped_files=skipped,
        metrics=metrics,
        reference=reference,
        holdout_cache=holdout_name(version),
        libraries=fitting.library_versions(),
        seconds={
            "read": round(read_seconds, 4),
            "train": round(fit_seconds, 4),
            "evaluate": round(eval_seconds, 4),
        },
        training_seconds=round(fit_seconds, 4),
        decision=Decision(status, reason, now_iso()),
    )
    return Challenger(bundle=bundle, card=card, promote=promote, reason=reason, holdout_bytes=holdout_bytes)
