"""What the train function does with a labels file (``labels/`` of the data bucket).

``shared.training.on_event.handle_event`` takes it like a data file up to the claim (the "done"
marker, the schema, the claim on the file version: a labels file delivered twice, or twice at
once, is stored once), then hands it here: validate it (``shared.feedback.labels``), quarantine
a bad one with its reason exactly as a bad data file, or store it for the join; refresh the live
report (``feedback/live.json``) so a dashboard reads it without recomputing; under
``PROMOTION_POLICY=shadow``, judge the running shadow on the labels (``event_shadow``); with
``FEEDBACK_TRAINING``, emit the matured joined rows never emitted before as a data file
(``shared.feedback.emission``); mark the file done.
"""

from __future__ import annotations

from shared.contracts import EventOutcome
from shared.errors import ProdMLError, ValidationFailed, is_transient
from shared.feedback import emission, labels, report
from shared.logs import get_logger
from shared.schema import Schema
from shared.storage import predictions_bucket
from shared.training import event_shadow, ledger
from shared.training.event_checks import quarantine
from shared.training.event_job import EventJob, Outcome

log = get_logger(__name__)


def handle_labels(job: EventJob, schema: Schema) -> Outcome:
    """Validate and store one labels file version, holding its claim; return what happened."""
    event = job.event
    if ledger.is_processed(job.artifacts, event.bucket, event.name, event.generation):
        return job.done(Outcome(EventOutcome.DUPLICATE, f"{job.key} was processed already"))
    try:
        with job.clock.phase("read"):
            rows = labels.read_labels_object(job.data, event.name, event.generation, schema, job.settings)
    except ValidationFailed as failure:
        return quarantine(job, failure, None)
    if rows is None:
        message = f"{job.key} is not in the bucket (deleted, replaced or never written)"
        return job.done(Outcome(EventOutcome.GONE, message))
    with job.clock.phase("write"):
        stored, _ = labels.store_labels(job.artifacts, rows, schema.label.name, schema.label.task)
    with job.clock.phase("evaluate"):
        refreshed = _refresh_report(job)
    message = f"{len(rows)} labels of {job.key} stored as {stored}"
    if refreshed is not None:
        message += f"; {refreshed}"
    with job.clock.phase("evaluate"):
        judged = event_shadow.evaluate_note(job)  # new labels may decide the shadow
    if judged is not None:
        message += f"; {judged}"
    if job.settings.feedback_training:
        with job.clock.phase("write"):
            message += f"; {_emit(job)}"
    return job.finish(Outcome(EventOutcome.LABELS_STORED, message))


def _emit(job: EventJob) -> str:
    """Emit the matured joined rows not emitted before (FEEDBACK_TRAINING); what happened.

    A transient fault raises (redelivered: the labels are stored, the emission is tried again and
    finishes an unfinished one first); any other fault is logged: the rows wait for the next
    labels file or `prodml feedback emit`."""
    try:
        result = emission.emit(
            job.settings,
            data=job.data,
            artifacts=job.artifacts,
            predictions=predictions_bucket(job.settings),
            by=f"train {job.key}",
        )
    except ProdMLError as exc:
        if is_transient(exc):
            raise
        log.error(f"no feedback rows emitted after {job.key}: {exc}", extra={"fields": job.fields})
        return f"no feedback rows emitted: {exc}"
    return result.note


def _refresh_report(job: EventJob) -> str | None:
    """Write the live report; None when written, else why not (for the outcome's message).

    A fault a retry cannot fix (the join over ``JOIN_MAX_ROWS``, ...) is logged and said in the
    outcome, not raised: the labels are stored, and `prodml live` (or `prodml pipeline join`, past
    the function's bound) says the same thing when asked."""
    try:
        report.write_report(job.artifacts, report.build_report(job.settings, artifacts=job.artifacts))
    except ProdMLError as exc:
        if is_transient(exc):
            raise  # redelivered: storing again writes nothing, the report is tried again
        log.error(f"the live report was not refreshed after {job.key}: {exc}", extra={"fields": job.fields})
        return f"the live report (feedback/live.json) was not refreshed: {exc}"
    return None
