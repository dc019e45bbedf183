"""What the train function does with one "object finalized" event (docs/design.md sections 3 and 4).

``handle_event`` runs these steps; each is safe to run again after a crash at any point:

1. ignore objects outside ``incoming/`` of the data bucket (writes to ``quarantine/`` fire too);
2. skip a data file version already done (``registry/processed/...``, the "done" marker);
3. no ``schema.json`` (or a broken one): log a clear error and leave the file where it is, no
   marker, so ``prodml replay`` can run it again after the schema is fixed;
   then claim the file version (``registry/claims/...``, below), or do nothing if another
   delivery holds it;
4. validate (the stored object's size first, then the downloaded file; an event for an object
   or generation that is not there is ignored as ``gone``); a bad file is quarantined
   with its reason, marked done, and answered 2xx: retrying would not make it good;
5. test-then-train: score the current model on the file and measure input drift against the
   current model's reference statistics; write the monitoring record (drift may quarantine);
6. train a challenger, evaluate it and the champion on the same held-out rows, gate it, write
   the version (kept even when rejected), then compare-and-swap ``models/current.skops``.
   When another trainer promoted in between, redo 5-6 against the new current model, at most
   ``CAS_MAX_ATTEMPTS`` times; then give up with ``RetryLater`` (a 5xx: the platform redelivers).

Exactly once, with at-least-once delivery (Eventarc may deliver one event several times at the
same moment, under one ce-id or several): the work on one file version runs in one delivery at a
time, the holder of its claim. The claim is created only if absent, names the delivery's event id
and expires after ``TRAIN_CLAIM_SECONDS`` (longer than the function's timeout, so a live holder
never loses it). A delivery that finds a live claim trains nothing: one of another event answers
2xx (``claimed``; the holder finishes); one of the holder's own event answers 5xx
(``RetryLater``), because it may be the platform's redelivery after the holder died, and
acknowledging it would lose the work. Once the claim has expired, that redelivery takes it over,
with a compare-and-swap on the claim's generation, so of two takers one wins. A holder whose claim
was taken over (it outlived its expiry) notices at its next claim update and stops, having written
no version (``claimed``). The marker is written only after the work is done, then the claim deleted;
work that ends otherwise (a transient fault, no model) releases the claim at once.

Before training, the trainer checks whether the current model's lineage already holds this file
version (a promotion that happened before a crash): then it only writes the marker. Before writing
a version, its holder records it in the claim; a redelivery after a crash there takes the claim
over and, if the current model is still the one the version was trained against, promotes that
very version instead of training again.

Only transient faults raise (storage outages, contention): everything else is answered 2xx.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import Settings, get_settings
from shared.contracts import CardStatus
from shared.data import monitoring
from shared.data.quarantine import INCOMING_PREFIX, quarantine_object
from shared.data.validation import check_size, validate_file
from shared.errors import (
    ModelNotReady,
    NotFound,
    PreconditionFailed,
    ProdMLError,
    SchemaError,
    StorageError,
    ValidationFailed,
)
from shared.events import StorageObjectEvent
from shared.logs import get_logger
from shared.schema import Schema, load_schema
from shared.storage import Bucket, artifacts_bucket, data_bucket
from shared.training import ledger, promotion, registry
from shared.training.card import ModelCard
from shared.training.challenger import DataFile, build_challenger, make_data_file
from shared.training.ledger import Claim, ClaimLost, file_key
from shared.training.registry import Current

log = get_logger(__name__)

CLAIMED = "claimed"
"""The outcome of a delivery that found another delivery of the same file at work."""


class RetryLater(ProdMLError):
    """A transient condition (other trainers kept promoting first): the event should be redelivered."""

    http_status = 503


@dataclass(frozen=True)
class Outcome:
    """What one event came to; ``status`` is one of the values listed in ``handle_event``."""

    status: str
    message: str
    version: str | None = None
    rule: str | None = None
    seconds: dict[str, float] = field(default_factory=dict, compare=False)


class _Clock:
    """Seconds spent per phase of one event (read, evaluate, train, write; the rest is "other")."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def result(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        out = {name: round(value, 4) for name, value in self.seconds.items()}
        out["other"] = round(total - sum(self.seconds.values()), 4)
        out["total"] = round(total, 4)
        return out


@dataclass
class _Job:
    """One event being processed: its inputs, and where its outcome is recorded."""

    event: StorageObjectEvent
    settings: Settings
    data: Bucket
    artifacts: Bucket
    clock: _Clock
    claim: Claim | None = None  # held from before reading the file until the work ends

    @property
    def key(self) -> str:
        return file_key(self.event.bucket, self.event.name, self.event.generation)

    @property
    def fields(self) -> dict[str, Any]:
        e = self.event
        return {"bucket": e.bucket, "object": e.name, "generation": e.generation, "event_id": e.event_id}

    def done(self, outcome: Outcome) -> Outcome:
        """Log the outcome (with the phase times) and return it."""
        outcome = dataclasses.replace(outcome, seconds=self.clock.result())
        log.info(
            f"{outcome.status}: {outcome.message}",
            extra={
                "fields": {
                    **self.fields,
                    "outcome": outcome.status,
                    "version": outcome.version,
                    "rule": outcome.rule,
                    "seconds": outcome.seconds,
                }
            },
        )
        return outcome

    def finish(self, outcome: Outcome) -> Outcome:
        """Write the "done" record (marker only if absent; the claim is dropped), then ``done``."""
        e = self.event
        record = {"event_id": e.event_id, "outcome": outcome.status, "version": outcome.version}
        record.update({"message": outcome.message, **({"rule": outcome.rule} if outcome.rule else {})})
        with self.clock.phase("write"):
            promotion.mark_done(self.artifacts, e.bucket, e.name, e.generation, record, self.claim)
            self.claim = None
            _add_training_to_record(self.artifacts, e, outcome)
        return self.done(outcome)

    def release(self) -> None:
        """Give the claim up if still held (the work ended without a "done" marker)."""
        if self.claim is None:
            return
        try:
            ledger.release_claim(self.artifacts, self.claim)
        except StorageError as exc:  # it expires by itself; the original outcome matters more
            log.warning(f"could not release the claim on {self.key}: {exc}", extra={"fields": self.fields})
        self.claim = None


def handle_event(
    event: StorageObjectEvent,
    settings: Settings | None = None,
    *,
    data: Bucket | None = None,
    artifacts: Bucket | None = None,
) -> Outcome:
    """Process one data file event; return what happened.

    ``status``: ``ignored`` (not ours), ``duplicate`` (done before), ``no_schema``, ``claimed``
    (another delivery of it is at work: this one does nothing), ``gone`` (that generation is not
    in the bucket), ``quarantined``, ``promoted``, ``rejected``, ``already_trained`` (the current
    model holds it), ``model_error`` (the current model cannot be loaded; left for replay).
    ``Outcome.seconds`` holds the time of each phase. Raises only for transient faults, among them
    ``RetryLater`` when a delivery of this very event holds a live claim (see the module doc).
    """
    settings = settings or get_settings()
    job = _Job(
        event, settings, data or data_bucket(settings), artifacts or artifacts_bucket(settings), _Clock()
    )
    if (
        event.bucket != job.data.name
        or not event.name.startswith(INCOMING_PREFIX)
        or event.name.endswith("/")
    ):
        where = f"{job.data.name}/{INCOMING_PREFIX}"
        return job.done(Outcome("ignored", f"{event.bucket}/{event.name} is not under {where}"))
    if ledger.is_processed(job.artifacts, event.bucket, event.name, event.generation):
        return job.done(Outcome("duplicate", f"{job.key} was processed already"))
    try:
        schema = load_schema(job.artifacts)
    except SchemaError as exc:
        log.error(f"cannot process {job.key}: {exc}; the file is left in place", extra={"fields": job.fields})
        return job.done(Outcome("no_schema", str(exc)))
    claim, held = ledger.acquire_claim(
        job.artifacts,
        event.bucket,
        event.name,
        event.generation,
        event.event_id,
        settings.train_claim_seconds,
    )
    if not held:
        return _held_elsewhere(job, claim)
    job.claim = claim
    try:
        return _claimed_work(job, schema)
    except ClaimLost as lost:  # this delivery outlived its claim: the taker finishes the work
        return job.done(Outcome(CLAIMED, f"{job.key}: {lost}; that delivery finishes the work"))
    finally:
        job.release()


def _held_elsewhere(job: _Job, claim: Claim) -> Outcome:
    """Another delivery holds a live claim on this file: do nothing, and say so.

    A delivery of another event answers 2xx: the holder finishes the work, or, if it dies, the
    redelivery of the holder's own event takes the work over once the claim has expired. A
    delivery of the holder's own event may be that very redelivery (the holder died, the platform
    retried), so it asks to be delivered again (5xx) rather than let the event be acknowledged.
    """
    until = claim.expires.isoformat(timespec="seconds")
    if claim.event_id == job.event.event_id:
        log.warning(
            f"{job.key}: event {claim.event_id} is being processed already (claim until {until}): "
            "a duplicate delivery at the same moment, or a redelivery after that delivery died; "
            "asking to be delivered again, to take the work over if the claim expires unfinished",
            extra={"fields": {**job.fields, "outcome": "retry", "claim_expires": until}},
        )
        raise RetryLater(f"{job.key}: a delivery of this very event holds its claim until {until}")
    message = (
        f"{job.key} is being processed by the delivery of event {claim.event_id} (claim until "
        f"{until}); this delivery does nothing: that one finishes, or its redelivery takes over"
    )
    return job.done(Outcome(CLAIMED, message))


def _claimed_work(job: _Job, schema: Schema) -> Outcome:
    """Validate, then train and promote, holding the file's claim."""
    event, settings = job.event, job.settings
    if ledger.is_processed(job.artifacts, event.bucket, event.name, event.generation):
        # Finished by another delivery between the check above and our claim.
        return job.done(Outcome("duplicate", f"{job.key} was processed already"))
    try:
        with job.clock.phase("read"):
            new_file = _read_and_validate(event, schema, settings, job.data)
    except ValidationFailed as failure:
        return _quarantine(job, failure, None)
    if new_file is None:
        message = f"{job.key} is not in the bucket (deleted, replaced or never written)"
        return job.done(Outcome("gone", message))

    for attempt in range(1, settings.cas_max_attempts + 1):
        started = time.perf_counter()
        outcome = _attempt(job, schema, new_file, attempt)
        if outcome is not None:
            return outcome
        pause = random.uniform(0, min(5.0, attempt * (time.perf_counter() - started)))
        log.info(
            f"another trainer promoted first; redoing {job.key} (attempt {attempt}) after {pause:.2f} s",
            extra={"fields": job.fields},
        )
        time.sleep(pause)  # jitter, so that trainers who collided do not collide again at once
    raise RetryLater(
        f"{job.key}: other models were promoted first {settings.cas_max_attempts} times "
        "(CAS_MAX_ATTEMPTS); the event must be delivered again"
    )


def _attempt(job: _Job, schema: Schema, new_file: DataFile, attempt: int) -> Outcome | None:
    """Train against the current model and try to swap; None when another trainer swapped first."""
    artifacts = job.artifacts
    try:
        current = registry.read_current(artifacts, job.settings.model_trusted_types)
    except ModelNotReady as exc:
        log.error(
            f"cannot train on {job.key}: the current model cannot be loaded: {exc}",
            extra={"fields": job.fields},
        )
        # No "done" marker (replay runs it after a rollback), but a record `prodml monitor` shows.
        record = monitoring.make_record(
            job.event.name, job.event.generation, None, None, {}, [], "model_error", message=str(exc)
        )
        monitoring.write_record(artifacts, record)
        return job.done(Outcome("model_error", str(exc)))
    if current is not None and _in_lineage(current, new_file):
        if current.card is not None and current.card.status == CardStatus.PENDING:
            # Promoted just before a crash that kept the card from saying so.
            registry.set_decision(
                artifacts, current.card, CardStatus.PROMOTED, "promoted (recorded after a restart)"
            )
        message = f"{job.key} is in the lineage of the current model"
        return job.finish(Outcome("already_trained", message, current.version))
    if attempt == 1:
        try:
            with job.clock.phase("evaluate"):
                _test_then_train(job, new_file, current, schema)
        except ValidationFailed as failure:  # drift under DRIFT_POLICY=quarantine
            return _quarantine(job, failure, current)

    resumed = _resume(job, current)
    if resumed is not None:
        version, model_bytes, card = resumed
    else:
        try:
            version, model_bytes, card = _train(job, schema, new_file, current)
        except ValidationFailed as failure:  # the estimator refused the data (one class only, ...)
            return _quarantine(job, failure, current)
        if card.status == CardStatus.REJECTED:
            return job.finish(Outcome("rejected", _reason(card), version))
        _maybe_crash(job.settings)
    try:
        with job.clock.phase("write"):
            promotion.swap_in(
                artifacts,
                card,
                model_bytes,
                current.generation if current is not None else 0,
                previous=_version(current),
                reason=_reason(card),
                by=f"train {job.key}",
            )
    except PreconditionFailed:
        _supersede_unless_current(job, card)
        return None
    return job.finish(Outcome("promoted", _reason(card), version))


def record_error(
    event: StorageObjectEvent,
    error: BaseException,
    settings: Settings | None = None,
    *,
    artifacts: Bucket | None = None,
) -> str:
    """Record a file the trainer gave up on with a non-transient error (a bug, a bad setting).

    Such an error is answered 2xx (retrying the same code on the same file fails the same way
    forever), so it must not vanish into the logs: the file's monitoring record (what `prodml
    monitor` shows) gets the decision ``error``, the error and the innermost frames of its
    traceback. No "done" marker is written: `prodml replay` runs the file again after the fix.
    Returns the record's name; a storage fault while writing it raises (then a retry can help).
    """
    settings = settings or get_settings()
    artifacts = artifacts or artifacts_bucket(settings)
    name = monitoring.record_name(event.name, event.generation)
    try:
        record = json.loads(artifacts.read(name))
    except (NotFound, ValueError):
        record = None
    if not isinstance(record, dict):
        record = monitoring.make_record(event.name, event.generation, None, None, {}, [], "error")
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    record.update(
        {
            "decision": "error",
            "message": f"{type(error).__name__}: {error}",
            "error": {
                "type": type(error).__name__,
                "message": str(error),
                "where": [f"{f.filename}:{f.lineno} in {f.name}" for f in frames],
                "event_id": event.event_id,
            },
            "time": registry.now_iso(),
        }
    )
    written = monitoring.write_record(artifacts, record)
    log.error(
        f"recorded the error on {file_key(event.bucket, event.name, event.generation)} in {written}; "
        "fix it, then `prodml replay`",
        extra={"fields": {"object": event.name, "generation": event.generation, "outcome": "error"}},
    )
    return written


def _reason(card: ModelCard) -> str:
    """The reason of the gate's decision on ``card``."""
    return card.decision.reason if card.decision is not None else ""


def _supersede_unless_current(job: _Job, card: ModelCard) -> None:
    """Mark a version that lost the swap "superseded", unless it is current after all.

    It can be: a duplicate delivery of the same event may have resumed this very version (from
    its claim) and swapped it in first; its card must then keep saying "promoted".
    """
    try:
        now = registry.read_current(job.artifacts, job.settings.model_trusted_types)
    except ModelNotReady:
        now = None
    if now is None or now.version != card.version:
        reason = "another model was promoted first; the work was redone on top of it"
        registry.set_decision(job.artifacts, card, CardStatus.SUPERSEDED, reason)


def _version(current: Current | None) -> str | None:
    return current.version if current is not None else None


def _add_training_to_record(artifacts: Bucket, event: StorageObjectEvent, outcome: Outcome) -> None:
    """The file's monitoring record gets the training outcome beside its test-then-train numbers."""
    name = monitoring.record_name(event.name, event.generation)
    try:
        record = json.loads(artifacts.read(name))
    except (NotFound, ValueError):
        return
    record["training"] = {"outcome": outcome.status, "version": outcome.version, "message": outcome.message}
    monitoring.write_record(artifacts, record)


def _read_and_validate(
    event: StorageObjectEvent, schema: Schema, settings: Settings, data: Bucket
) -> DataFile | None:
    """The validated file, None when that generation is gone; ``ValidationFailed`` if it is bad.

    The event is not trusted (anyone who can reach the function can forge one): the size and the
    generation checked are the stored object's, so an event for an object or a generation that is
    not there leaves no quarantine record behind, however large a size it claims.
    """
    try:
        stored = data.stat(event.name)
    except NotFound:
        return None
    if stored.generation != event.generation:
        return None  # replaced (a newer generation has its own event), or never written
    check_size(stored.size, settings)
    with tempfile.TemporaryDirectory(prefix="prodml-train-") as folder:
        path = Path(folder) / "data"
        try:
            info = data.download(event.name, path)
        except NotFound:
            return None
        if info.generation != event.generation:
            return None  # replaced since the stat: the newer generation has its own event
        validated = validate_file(path, event.name, schema, settings)
    return make_data_file(event.bucket, event.name, event.generation, validated.frame, settings)


def _quarantine(job: _Job, failure: ValidationFailed, current: Current | None) -> Outcome:
    """Move the file to quarantine with its reason; record it; done (2xx)."""
    event = job.event
    target = quarantine_object(job.data, event.name, event.generation, failure)
    psi = failure.details.get("psi")
    monitoring.write_record(
        job.artifacts,
        monitoring.make_record(
            event.name,
            event.generation,
            _version(current),
            None,
            psi if isinstance(psi, dict) else {},
            list(failure.details.get("columns", [])) if failure.rule == "drift" else [],
            "quarantined",
            rule=failure.rule,
            message=failure.message,
            quarantined_as=target,
        ),
    )
    return job.finish(Outcome("quarantined", f"{failure.rule}: {failure.message}", rule=failure.rule))


def _in_lineage(current: Current, new_file: DataFile) -> bool:
    return any(file_key(r["bucket"], r["name"], r["generation"]) == new_file.key for r in current.lineage)


def _test_then_train(job: _Job, new_file: DataFile, current: Current | None, schema: Schema) -> None:
    """The current model's quality on the new file before any training, and its input drift.

    Writes the monitoring record; raises ``ValidationFailed("drift")`` when drift is over the
    threshold and ``DRIFT_POLICY=quarantine``.
    """
    event = job.event
    metrics = monitoring.evaluate(current.bundle, new_file.frame) if current is not None else None
    reference = current.card.reference if (current is not None and current.card is not None) else None
    psi = monitoring.psi(reference, new_file.frame, schema) if reference else {}
    drifted = monitoring.drift_check(psi, job.settings)
    decision = "accepted"
    if drifted:
        decision = "quarantined" if job.settings.drift_policy == "quarantine" else "warning"
        log.warning(
            f"input drift in {job.key}: {', '.join(f'{n} (PSI {psi[n]:.3f})' for n in drifted)}",
            extra={"fields": {**job.fields, "drifted": drifted}},
        )
    if decision == "quarantined":
        raise monitoring.drift_failure(drifted, psi)
    record = monitoring.make_record(
        event.name,
        event.generation,
        _version(current),
        metrics,
        psi,
        drifted,
        decision,
        rows=len(new_file.frame),
    )
    monitoring.write_record(job.artifacts, record)


def _resume(job: _Job, current: Current | None) -> tuple[str, bytes, ModelCard] | None:
    """A version written for this file before a crash, still valid against ``current``; or None.

    The held claim names it: a delivery that took the claim over kept the version recorded in it.
    """
    artifacts, claim = job.artifacts, job.claim
    if claim is None or claim.version is None:
        return None
    version = claim.version
    try:
        card = registry.read_card(artifacts, version)
        model_bytes = artifacts.read(registry.model_name(version))
    except ProdMLError:  # NotFound, or a card that is not JSON
        return None
    pending = card.status == CardStatus.PENDING
    if claim.parent != _version(current) or not pending:
        if pending:
            registry.set_decision(
                artifacts, card, CardStatus.SUPERSEDED, "the current model changed before it was promoted"
            )
        return None
    log.info(f"resuming {job.key}: promoting version {version}, written before an interruption")
    return version, model_bytes, card


def _train(
    job: _Job, schema: Schema, new_file: DataFile, current: Current | None
) -> tuple[str, bytes, ModelCard]:
    """Train, evaluate and judge a challenger; write its version; (version, model bytes, card)."""
    event = job.event
    version = registry.new_version_id()
    challenger = build_challenger(
        version=version,
        schema=schema,
        settings=job.settings,
        data=job.data,
        new_files=[new_file],
        champion=current,
        strategy=job.settings.training_strategy,
        event={
            "bucket": event.bucket,
            "name": event.name,
            "generation": event.generation,
            "event_id": event.event_id,
        },
        by="train function",
        artifacts=job.artifacts,
    )
    for phase in ("read", "train", "evaluate"):
        job.clock.add(phase, challenger.card.seconds[phase])
    with job.clock.phase("write"):
        if job.claim is not None:
            # Recorded before the version is written, so a delivery whose claim was taken over
            # (ClaimLost) writes nothing, and a taker after a crash finds the version to resume.
            job.claim = ledger.record_claim_version(
                job.artifacts, job.claim, version, _version(current), job.settings.train_claim_seconds
            )
        started = time.perf_counter()
        model_bytes = challenger.bundle.to_bytes()
        challenger.card.seconds["serialize"] = round(time.perf_counter() - started, 4)
        registry.write_version(job.artifacts, version, model_bytes, challenger.card, challenger.holdout_bytes)
    return version, model_bytes, challenger.card


def _maybe_crash(settings: Settings) -> None:
    """Tests only (``TRAIN_CRASH_FILE``): die here, once, as a killed instance would."""
    trigger = settings.train_crash_file
    if trigger and os.path.exists(trigger):
        os.unlink(trigger)
        log.warning("TRAIN_CRASH_FILE: killing this process between writing a version and promoting it")
        os.kill(os.getpid(), signal.SIGKILL)
