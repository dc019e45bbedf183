"""What the train function does with one "object finalized" event (docs/design.md sections 3 and 4).

``handle_event`` runs these steps; each is safe to run again after a crash at any point:

1. ignore objects outside ``incoming/`` and ``labels/`` of the data bucket (writes to
   ``quarantine/`` fire too); a labels file follows steps 2-3, then ``shared.feedback.labels_event``
   validates and stores it for the join (it trains nothing);
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
   With ``PROMOTION_POLICY=shadow`` a challenger that passes the gate, when there is a champion,
   becomes the shadow instead (``event_shadow``); the running shadow is evaluated on live labels
   before the challenger is trained.

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

The steps live beside this module: ``event_job`` (the event at work, its outcome and records),
``event_checks`` (validation, test-then-train, quarantine), ``event_version`` (train or resume
the version), and the swap and "done" marker go through ``promotion``, as static training does.
"""

from __future__ import annotations

import os
import random
import signal
import time

from shared.config import Settings, get_settings
from shared.contracts import INCOMING_PREFIX, LABELS_PREFIX, CardStatus, EventOutcome, MonitoringDecision
from shared.data import monitoring
from shared.errors import (
    ClaimLost,
    ModelNotReady,
    PreconditionFailed,
    RetryLater,
    SchemaError,
    ValidationFailed,
)
from shared.events import StorageObjectEvent
from shared.feedback import emission
from shared.feedback.labels_event import handle_labels
from shared.logs import get_logger
from shared.schema import Schema, load_schema
from shared.storage import Bucket, artifacts_bucket, data_bucket
from shared.training import event_shadow, ledger, promotion, registry
from shared.training.event_checks import quarantine, read_and_validate, test_then_train
from shared.training.event_job import EventJob, Outcome, PhaseClock, current_version
from shared.training.event_version import (
    decision_reason,
    resume,
    supersede_unless_current,
    train_version,
)
from shared.training.ledger import Claim, file_key
from shared.training.registry import Current
from shared.training.window import DataFile

log = get_logger(__name__)


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
    in the bucket), ``quarantined``, ``promoted``, ``rejected``, ``shadow`` (passed the gate and
    runs in shadow, ``PROMOTION_POLICY=shadow``), ``already_trained`` (the current model holds
    it), ``model_error`` (the current model cannot be loaded; left for replay);
    ``labels_stored`` (a labels file, accepted and stored for the join).
    ``Outcome.seconds`` holds the time of each phase. Raises only for transient faults, among them
    ``RetryLater`` when a delivery of this very event holds a live claim (see the module doc).
    """
    settings = settings or get_settings()
    job = EventJob(
        event, settings, data or data_bucket(settings), artifacts or artifacts_bucket(settings), PhaseClock()
    )
    if (
        event.bucket != job.data.name
        or not event.name.startswith((INCOMING_PREFIX, LABELS_PREFIX))
        or event.name.endswith("/")
    ):
        where = f"{job.data.name}/{INCOMING_PREFIX} or {LABELS_PREFIX}"
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
        if event.name.startswith(LABELS_PREFIX):
            return handle_labels(job, schema)  # labels for the feedback loop, not training data
        return _claimed_work(job, schema)
    except ClaimLost as lost:  # this delivery outlived its claim: the taker finishes the work
        return job.done(Outcome(EventOutcome.CLAIMED, f"{job.key}: {lost}; that delivery finishes the work"))
    finally:
        job.release()


def _held_elsewhere(job: EventJob, claim: Claim) -> Outcome:
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
    return job.done(Outcome(EventOutcome.CLAIMED, message))


def _claimed_work(job: EventJob, schema: Schema) -> Outcome:
    """Validate, then train and promote, holding the file's claim."""
    event, settings = job.event, job.settings
    if ledger.is_processed(job.artifacts, event.bucket, event.name, event.generation):
        # Finished by another delivery between the check above and our claim.
        return job.done(Outcome(EventOutcome.DUPLICATE, f"{job.key} was processed already"))
    try:
        with job.clock.phase("read"):
            new_file = read_and_validate(event, schema, settings, job.data)
    except ValidationFailed as failure:
        return quarantine(job, failure, None)
    if new_file is None:
        message = f"{job.key} is not in the bucket (deleted, replaced or never written)"
        return job.done(Outcome(EventOutcome.GONE, message))
    new_file = emission.attach_origin(job.artifacts, new_file, settings)  # the loop's rows: say so
    # The shadow first (PROMOTION_POLICY=shadow): promoted on live labels, or stopped, before a
    # challenger is trained against the champion it may have replaced.
    note = event_shadow.evaluate_note(job)
    if note is not None:
        job.notes.append(note)

    for attempt in range(1, settings.cas_max_attempts + 1):
        started = time.perf_counter()
        outcome = _attempt(job, schema, new_file, attempt)
        if outcome is not None:
            return outcome
        pause = random.uniform(0, min(5.0, attempt * (time.perf_counter() - started)))
        log.info(
            f"another trainer promoted (or started a shadow) first; redoing {job.key} (attempt {attempt}) "
            f"after {pause:.2f} s",
            extra={"fields": job.fields},
        )
        time.sleep(pause)  # jitter, so that trainers who collided do not collide again at once
    raise RetryLater(
        f"{job.key}: other models were promoted first {settings.cas_max_attempts} times "
        "(CAS_MAX_ATTEMPTS); the event must be delivered again"
    )


def _attempt(job: EventJob, schema: Schema, new_file: DataFile, attempt: int) -> Outcome | None:
    """Train against the current model and try to swap; None when another trainer swapped first."""
    # One attempt is a linear sequence (read current, lineage check, test-then-train, train or
    # resume, claim the version, swap): it reads best whole, at a little over 60 lines.
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
            job.event.name,
            job.event.generation,
            None,
            None,
            {},
            [],
            MonitoringDecision.MODEL_ERROR,
            message=str(exc),
        )
        monitoring.write_record(artifacts, record)
        return job.done(Outcome(EventOutcome.MODEL_ERROR, str(exc)))
    if current is not None and _in_lineage(current, new_file):
        if current.card is not None and current.card.status == CardStatus.PENDING:
            # Promoted just before a crash that kept the card from saying so.
            registry.set_decision(
                artifacts, current.card, CardStatus.PROMOTED, "promoted (recorded after a restart)"
            )
        message = f"{job.key} is in the lineage of the current model"
        return job.finish(Outcome(EventOutcome.ALREADY_TRAINED, message, current.version))
    if attempt == 1:
        try:
            with job.clock.phase("evaluate"):
                test_then_train(job, new_file, current, schema)
        except ValidationFailed as failure:  # drift under DRIFT_POLICY=quarantine
            return quarantine(job, failure, current)

    resumed = resume(job, current)
    if resumed is not None:
        version, model_bytes, card = resumed
    else:
        try:
            version, model_bytes, card = train_version(job, schema, new_file, current)
        except ValidationFailed as failure:  # the estimator refused the data (one class only, ...)
            return quarantine(job, failure, current)
        if card.status == CardStatus.REJECTED:
            return job.finish(Outcome(EventOutcome.REJECTED, decision_reason(card), version))
        _maybe_crash(job.settings)
    if current is not None and event_shadow.goes_to_shadow(job.settings, current):
        return event_shadow.start_shadow(job, card, current, decision_reason(card))
    try:
        with job.clock.phase("write"):
            promotion.swap_in(
                artifacts,
                card,
                model_bytes,
                current.generation if current is not None else 0,
                previous=current_version(current),
                reason=decision_reason(card),
                by=f"train {job.key}",
            )
    except PreconditionFailed:
        supersede_unless_current(job, card)
        return None
    return job.finish(Outcome(EventOutcome.PROMOTED, decision_reason(card), version))


def _in_lineage(current: Current, new_file: DataFile) -> bool:
    """Whether the current model holds ``new_file`` already (promoted before a crash)."""
    return any(file_key(r["bucket"], r["name"], r["generation"]) == new_file.key for r in current.lineage)


def _maybe_crash(settings: Settings) -> None:
    """Tests only (``TRAIN_CRASH_FILE``): die here, once, as a killed instance would."""
    trigger = settings.train_crash_file
    if trigger and os.path.exists(trigger):
        os.unlink(trigger)
        log.warning("TRAIN_CRASH_FILE: killing this process between writing a version and promoting it")
        os.kill(os.getpid(), signal.SIGKILL)
