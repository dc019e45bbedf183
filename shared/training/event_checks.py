"""The checks a train event runs on its data file before any training (docs/design.md section 4).

``read_and_validate``: the stored object's size, then the downloaded file against the schema.
``test_then_train``: the current model's quality on the new file and its input drift, written as
the file's monitoring record (drift may quarantine it). ``quarantine``: a bad file is moved to
``quarantine/`` with its reason, recorded, and marked done.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from shared.config import Settings
from shared.contracts import LEAKAGE_RULE, DriftPolicy, EventOutcome, LeakagePolicy, MonitoringDecision
from shared.data import monitoring
from shared.data.quarantine import quarantine_object
from shared.data.validation import check_size, validate_file
from shared.errors import NotFound, ValidationFailed
from shared.events import StorageObjectEvent
from shared.feedback.leakage import leakage_failure
from shared.feedback.pitfalls import PitfallReport, check_pitfalls
from shared.logs import get_logger
from shared.schema import Schema
from shared.storage import Bucket, predictions_bucket
from shared.training.event_job import EventJob, Outcome, current_version
from shared.training.registry import Current
from shared.training.window import DataFile, make_data_file

log = get_logger(__name__)


def read_and_validate(
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
    return make_data_file(
        event.bucket, event.name, event.generation, validated.frame, settings, ids=validated.ids
    )


def quarantine(job: EventJob, failure: ValidationFailed, current: Current | None) -> Outcome:
    """Move the file to quarantine with its reason; record it; done (2xx)."""
    event = job.event
    target = quarantine_object(job.data, event.name, event.generation, failure)
    psi = failure.details.get("psi")
    columns = failure.details.get("columns")
    leakage = failure.details.get("leakage")
    monitoring.write_record(
        job.artifacts,
        monitoring.make_record(
            event.name,
            event.generation,
            current_version(current),
            None,
            psi if isinstance(psi, dict) else {},
            list(columns) if failure.rule == "drift" and isinstance(columns, list) else [],
            MonitoringDecision.QUARANTINED,
            rule=failure.rule,
            message=failure.message,
            quarantined_as=target,
            **({"leakage": leakage} if failure.rule == LEAKAGE_RULE else {}),
        ),
    )
    return job.finish(
        Outcome(EventOutcome.QUARANTINED, f"{failure.rule}: {failure.message}", rule=failure.rule)
    )


def test_then_train(job: EventJob, new_file: DataFile, current: Current | None, schema: Schema) -> None:
    """The current model's quality on the new file before any training, its input drift, and two
    of Google's pitfalls (label leakage, the served share: ``shared.feedback.pitfalls``).

    Writes the monitoring record and keeps the pitfalls' record in ``job.data_checks`` for the
    card; raises ``ValidationFailed("drift")`` when drift is over the threshold and
    ``DRIFT_POLICY=quarantine``, ``ValidationFailed("leakage")`` when a feature leaks and
    ``LEAKAGE_POLICY=quarantine``.
    """
    event = job.event
    metrics = monitoring.evaluate(current.bundle, new_file.frame) if current is not None else None
    reference = current.card.reference if (current is not None and current.card is not None) else None
    psi = monitoring.psi(reference, new_file.frame, schema) if reference else {}
    drifted = monitoring.drift_check(psi, job.settings)
    decision = MonitoringDecision.ACCEPTED
    if drifted:
        quarantine = job.settings.drift_policy == DriftPolicy.QUARANTINE
        decision = MonitoringDecision.QUARANTINED if quarantine else MonitoringDecision.WARNING
        log.warning(
            f"input drift in {job.key}: {', '.join(f'{n} (PSI {psi[n]:.3f})' for n in drifted)}",
            extra={"fields": {**job.fields, "drifted": drifted}},
        )
    if decision == MonitoringDecision.QUARANTINED:
        raise monitoring.drift_failure(drifted, psi)
    pitfalls = _pitfalls(job, new_file, schema)
    if pitfalls.warnings and decision == MonitoringDecision.ACCEPTED:
        decision = MonitoringDecision.WARNING
    record = monitoring.make_record(
        event.name,
        event.generation,
        current_version(current),
        metrics,
        psi,
        drifted,
        decision,
        rows=len(new_file.frame),
        **pitfalls.to_record(),
    )
    monitoring.write_record(job.artifacts, record)


def _pitfalls(job: EventJob, new_file: DataFile, schema: Schema) -> PitfallReport:
    """Leakage and the served share of the new file, logged, kept for the card; raises the
    leakage failure under ``LEAKAGE_POLICY=quarantine``."""
    settings = job.settings
    pitfalls = check_pitfalls(
        new_file.frame, new_file.ids, schema, settings, lambda: predictions_bucket(settings)
    )
    for warning in pitfalls.warnings:
        log.warning(f"{job.key}: {warning}", extra={"fields": job.fields})
    if pitfalls.leakage.leaking and settings.leakage_policy == LeakagePolicy.QUARANTINE:
        raise leakage_failure(pitfalls.leakage)
    job.data_checks = {
        "object": job.event.name,
        "generation": job.event.generation,
        **pitfalls.to_record(),
    }
    return pitfalls
