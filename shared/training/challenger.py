"""Training one challenger and judging it against the champion on the same held-out rows.

Used by the train function (``shared.training.on_event``) and by static training
(``shared.training.static``). ``build_challenger`` runs named phases on a ``ChallengerRequest``:
plan and read the data window (``shared.training.window``), fit (``fit_challenger``), evaluate
both models and judge (``shared.training.gate``), and write the card (``ModelCard``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings
from shared.contracts import CardStatus, TrainingStrategy
from shared.data import monitoring
from shared.errors import IncrementalUnsupported, ValidationFailed
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.schema import Schema
from shared.storage import Bucket
from shared.training import fitting
from shared.training.card import Decision, ModelCard
from shared.training.compiling import compile_challenger
from shared.training.gate import copy_quality, judge, quality, row_losses, scores_by_model
from shared.training.registry import Current, holdout_name, now_iso
from shared.training.window import (
    DataFile,
    concat,
    holdout_cache_bytes,
    load_lineage_files,
    read_holdout_cache,
    recent_within_rows,
    ref_key,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class ChallengerRequest:
    """What to train a challenger on, against which champion, and how.

    ``accumulate_lineage=False`` (a static retrain by hand) trains on ``new_files`` alone and
    starts a fresh lineage. ``force_promote`` records the gate's verdict but promotes anyway.
    ``carried_lineage``: files the challenger must hold beside the champion's lineage (those of
    the running shadow it replaces that the champion lacks, ``PROMOTION_POLICY=shadow``): they
    join its lineage after the champion's and a full retrain reads them as the most recent earlier
    files (an incremental request that carries files is trained full, its ``fallback_reason``
    saying why: ``_full_when_carrying``).
    ``data`` (the data bucket) holds the champion's earlier files, ``artifacts`` its stored
    held-out rows; either may be None (then the window does without them).
    """

    version: str
    schema: Schema
    settings: Settings
    data: Bucket | None
    new_files: list[DataFile]
    champion: Current | None
    strategy: str
    event: dict[str, Any] | None  # the data file event trained for, recorded in the card
    by: str
    artifacts: Bucket | None = None
    accumulate_lineage: bool = True
    force_promote: bool = False
    carried_lineage: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Challenger:
    """A trained, evaluated, judged challenger: what goes into a version."""

    bundle: ModelBundle
    card: ModelCard
    promote: bool
    reason: str
    holdout_bytes: bytes = field(repr=False, default=b"")  # models/versions/<v>/holdout.parquet
    compiled_bytes: bytes | None = field(repr=False, default=None)  # models/versions/<v>/model.onnx


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
    carried: list[DataFile] | None = None,
) -> Fit:
    """Fit the challenger's estimator.

    ``full``: a fresh estimator on the training rows of ``window`` + ``new_files``.
    ``incremental``: a copy of the champion's estimator, ``partial_fit`` on ``carried`` (files of
    a replaced shadow the champion never learned) + ``new_files``; when that
    cannot be done (no champion, no ``partial_fit``, a class never seen) it falls back to full and
    says why in ``fallback_reason``. A ``ValueError`` of the estimator (one class only, ...)
    becomes ``ValidationFailed("untrainable")``.
    """
    started = time.perf_counter()
    fallback: str | None = None
    new_keys = {f.key for f in new_files}
    learned = [f for f in (carried or []) if f.key not in new_keys] + new_files
    try:
        if strategy == TrainingStrategy.INCREMENTAL:
            if champion is None:
                fallback = "incremental needs a current model"
            elif not fitting.supports_incremental(champion.bundle.estimator):
                fallback = "the current model has no partial_fit"
            else:
                estimator = copy.deepcopy(champion.bundle.estimator)
                try:
                    fitting.fit_incremental(estimator, concat([f.train_rows for f in learned]), schema)
                    seconds = time.perf_counter() - started
                    return Fit(estimator, TrainingStrategy.INCREMENTAL, None, learned, seconds)
                except IncrementalUnsupported as exc:
                    fallback = str(exc)
        window_keys = {f.key for f in window}
        trained_on = window + [f for f in learned if f.key not in window_keys]
        rows = concat([f.train_rows for f in trained_on])
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


@dataclass(frozen=True)
class _Window:
    """The earlier files read for one challenger: to train on, to judge on, and what was skipped."""

    prior: list[dict[str, Any]]  # the champion's lineage, without the new files
    train: list[DataFile]  # earlier files a full retrain learns from
    gate: list[DataFile]  # earlier files whose held-out rows decide
    carried: list[DataFile]  # of ``train``, the carried files (an incremental fit learns them too)
    skipped: list[str]
    seconds: float


@dataclass(frozen=True)
class _Verdict:
    """The evaluation of both models and the gate's decision."""

    metrics: dict[str, Any]
    promote: bool
    reason: str
    reference: dict[str, Any]  # training statistics of the challenger (drift's baseline)
    training_rows: int
    seconds: float


def build_challenger(request: ChallengerRequest) -> Challenger:
    """Train a challenger on ``new_files`` (plus the window), evaluate it beside the champion, judge it.

    The window of earlier files comes from the champion's lineage (read from ``data``): the last
    ``TRAINING_WINDOW_FILES`` for a full retrain (no more of them than fit, with the new rows, in
    ``TRAINING_WINDOW_ROWS``), the last ``HOLDOUT_WINDOW_FILES`` for the gate.
    When the earlier files serve the gate only (incremental, or a retrain by hand), their
    held-out rows come from the champion's stored table in ``artifacts`` when it has them.
    """
    r, carried_fallback = _full_when_carrying(request)
    window = _read_window(r)
    # Incremental reads only the gate's rows; a fallback to full (no partial_fit, a new class)
    # trains on the new file plus what was read, not on the whole TRAINING_WINDOW_FILES.
    training_window = window.train[-r.settings.training_window_files :] if r.accumulate_lineage else []
    fit = fit_challenger(
        r.schema, r.settings, r.new_files, training_window, r.champion, r.strategy, window.carried
    )
    if carried_fallback is not None:
        fit = dataclasses.replace(fit, fallback_reason=carried_fallback)
    bundle = ModelBundle(r.version, fit.estimator, r.schema)
    verdict = _evaluate_and_judge(r, bundle, window.gate, fit)
    holdout_count = r.settings.holdout_window_files
    holdout_bytes = holdout_cache_bytes(
        ((window.gate if r.accumulate_lineage else []) + r.new_files)[-holdout_count:]
    )
    # Checked on the rows the gate judged it on, plus sampled keys (shared.compiled.compile).
    compilation = compile_challenger(
        bundle, concat([f.holdout_rows for f in (window.gate or r.new_files)]), r.settings
    )
    card = dataclasses.replace(_card(r, window, fit, verdict), compiled=compilation.form)
    card.seconds["compile"] = compilation.form.seconds
    return Challenger(
        bundle, card, verdict.promote, verdict.reason, holdout_bytes, compiled_bytes=compilation.onnx
    )


def _carried_refs(r: ChallengerRequest) -> list[dict[str, Any]]:
    """The carried lineage entries neither the champion's lineage nor the new files hold."""
    if not r.accumulate_lineage:
        return []
    prior = r.champion.lineage if r.champion is not None else []
    held = {ref_key(ref) for ref in prior} | {f.key for f in r.new_files}
    return [ref for ref in r.carried_lineage if ref_key(ref) not in held]


def _full_when_carrying(r: ChallengerRequest) -> tuple[ChallengerRequest, str | None]:
    """An incremental request that carries files, made full, and why (None: left as it is).

    An incremental fit learns the carried files whole, outside TRAINING_WINDOW_ROWS, so a stream
    of challengers replacing each other in shadow would read more at each file without bound; a
    full retrain reads them within the window's row bound."""
    carried = _carried_refs(r)
    if r.strategy != TrainingStrategy.INCREMENTAL or not carried:
        return r, None
    reason = (
        f"{len(carried)} files of the shadow it replaces are carried; a full retrain keeps them "
        "within TRAINING_WINDOW_ROWS"
    )
    return dataclasses.replace(r, strategy=TrainingStrategy.FULL), reason


def _read_window(r: ChallengerRequest) -> _Window:
    """Choose the earlier files to train and judge on, and read them (or their stored rows)."""
    started = time.perf_counter()
    settings, champion = r.settings, r.champion
    prior = champion.lineage if (champion is not None and r.accumulate_lineage) else []
    new_keys = {f.key for f in r.new_files}
    carried_refs = _carried_refs(r)
    prior = [ref for ref in prior if ref_key(ref) not in new_keys] + carried_refs
    holdout_count = settings.holdout_window_files
    if r.accumulate_lineage:
        gate_refs = prior[-holdout_count:]
    else:  # a retrain by hand is still compared with the champion on trusted rows
        gate_refs = champion.lineage[-holdout_count:] if champion is not None else []
    full = r.accumulate_lineage and r.strategy != TrainingStrategy.INCREMENTAL
    # A full retrain reads its earlier files whole: at most TRAINING_WINDOW_ROWS rows with the
    # new files, so the function's memory stays bounded however large the files are.
    budget = settings.training_window_rows - sum(len(f.frame) for f in r.new_files)
    train_refs = recent_within_rows(prior[-settings.training_window_files :], budget) if full else []
    train_keys = [ref_key(ref) for ref in train_refs]
    outside = [ref for ref in gate_refs if ref_key(ref) not in train_keys]  # the gate's rows only
    cached = (
        read_holdout_cache(r.artifacts, champion, r.schema)
        if (outside and r.artifacts is not None and champion is not None)
        else {}
    )
    uncached = [ref for ref in outside if ref_key(ref) not in cached]
    carried_keys = [ref_key(ref) for ref in carried_refs]
    # An incremental fit learns the carried files whole (their stored held-out rows are not enough).
    uncached_keys = {ref_key(ref) for ref in uncached}
    whole = [ref for ref in carried_refs if ref_key(ref) not in uncached_keys]
    extra_reads = [] if full else uncached + whole
    to_read = train_refs + extra_reads
    loaded, skipped = (
        load_lineage_files(r.data, to_read, r.schema, settings) if (to_read and r.data) else ([], [])
    )
    if full and uncached:
        # Reading them whole would break the row budget; without their stored held-out rows the
        # gate does without them.
        skipped += [
            f"{ref_key(ref)}: over TRAINING_WINDOW_ROWS and no stored held-out rows" for ref in uncached
        ]
    if full and len(train_refs) < len(prior[-settings.training_window_files :]):
        log.info(
            f"training window: {len(train_refs)} earlier files fit TRAINING_WINDOW_ROWS="
            f"{settings.training_window_rows} beside the new rows"
        )
    by_key = {**cached, **{f.key: f for f in loaded}}
    gate = [by_key[ref_key(ref)] for ref in gate_refs if ref_key(ref) in by_key]
    train = [by_key[key] for key in train_keys if key in by_key] if full else gate
    carried = [by_key[key] for key in carried_keys if key in by_key]
    return _Window(prior, train, gate, carried, skipped, time.perf_counter() - started)


def _evaluate_and_judge(
    r: ChallengerRequest, bundle: ModelBundle, gate_window: list[DataFile], fit: Fit
) -> _Verdict:
    """Score both models on the gate's rows and the new file's, and decide."""
    started = time.perf_counter()
    schema, champion, new_files = r.schema, r.champion, r.new_files
    gate_files = gate_window or new_files
    gate_rows = concat([f.holdout_rows for f in gate_files])
    new_rows = concat([f.holdout_rows for f in new_files])
    # Scoring is most of this step: each model scores each row set once, and the metrics and the
    # gate's per-row losses are both derived from those scores.
    models = {"challenger": bundle, "champion": champion.bundle if champion is not None else None}
    gate_scores = scores_by_model(models, gate_rows)
    same_rows = gate_files is new_files  # no earlier files: the gate's rows are the new file's
    new_scores = {} if same_rows else scores_by_model(models, new_rows)
    on_gate = {who: quality(models[who], gate_rows, gate_scores.get(who)) for who in models}
    on_new = {
        who: copy_quality(on_gate[who]) if same_rows else quality(models[who], new_rows, new_scores.get(who))
        for who in models
    }
    metrics: dict[str, Any] = {
        "primary": monitoring.PRIMARY_METRIC[schema.label.task][0],
        "holdout_files": [f.key for f in gate_files],
        "challenger": on_gate["challenger"],
        "champion": on_gate["champion"],
        "new_file_challenger": on_new["challenger"],
        "new_file_champion": on_new["champion"],
    }
    if metrics["challenger"] is None:
        promote, reason = (champion is None), "no held-out rows to compare on"
    else:
        promote, reason, metrics["gate"] = judge(
            schema.label.task,
            row_losses(bundle, gate_rows, gate_scores["challenger"]),
            row_losses(champion.bundle, gate_rows, gate_scores["champion"]) if champion is not None else None,
            r.settings.promotion_tolerance,
        )
    if r.force_promote and not promote:
        promote, reason = True, f"promoted by hand despite the gate ({reason})"
    train_frame = concat([f.train_rows for f in fit.trained_on])  # incremental: what this step learned
    reference = monitoring.reference_stats(train_frame, schema)
    return _Verdict(metrics, promote, reason, reference, int(len(train_frame)), time.perf_counter() - started)


def _card(r: ChallengerRequest, window: _Window, fit: Fit, verdict: _Verdict) -> ModelCard:
    """The challenger's card, its decision ``pending`` (to be swapped in) or ``rejected``."""
    status = CardStatus.PENDING if verdict.promote else CardStatus.REJECTED
    return ModelCard(
        version=r.version,
        created=now_iso(),
        by=r.by,
        parent=r.champion.version if r.champion is not None else None,
        task=r.schema.label.task,
        strategy=fit.strategy,
        fallback_reason=fit.fallback_reason,
        estimator=r.settings.estimator or "default (shared.training.fitting.default_pipeline)",
        event=r.event,
        lineage=window.prior + [dict(f.ref(), added_by=r.version) for f in r.new_files],
        trained_on=[f.key for f in fit.trained_on],
        training_rows=verdict.training_rows,
        skipped_files=window.skipped,
        metrics=verdict.metrics,
        reference=verdict.reference,
        holdout_cache=holdout_name(r.version),
        libraries=fitting.library_versions(),
        seconds={
            "read": round(window.seconds, 4),
            "train": round(fit.seconds, 4),
            "evaluate": round(verdict.seconds, 4),
        },
        training_seconds=round(fit.seconds, 4),
        decision=Decision(status, verdict.reason, now_iso()),
    )
