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
from shared.contracts import DriftPolicy, EventOutcome, MonitoringDecision
from shared.data import monitoring
from shared.data.quarantine import quarantine_object
from shared.data.validation import check_size, validate_file
from shared.errors import NotFound, ValidationFailed
from shared.events import StorageObjectEvent
from shared.logs import get_logger
from shared.schema import Schema
from shared.storage import Bucket
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
    return make_data_file(event.bucket, event.name, event.generation, validated.frame, settings)


def quarantine(job: EventJob, failure: ValidationFailed, current: Current | None) -> Outcome:
    """Move the file to quarantine with its reason; record it; done (2xx)."""
    event = job.event
    target = quarantine_object(job.data, event.name, event.generation, failure)
    psi = failure.details.get("psi")
    columns = failure.details.get("columns")
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
        ),
    )
    return job.finish(
        Outcome(EventOutcome.QUARANTINED, f"{failure.rule}: {failure.message}", rule=failure.rule)
    )


def test_then_train(job: EventJob, new_file: DataFile, current: Current | None, schema: Schema) -> None:
    """The current model's quality on the new file before any training, and its input drift.

    Writes the monitoring record; raises ``ValidationFailed("drift")`` when drift is over the
    threshold and ``DRIFT_POLICY=quarantine``.
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
    record = monitoring.make_record(
        event.name,
        event.generation,
        current_version(current),
        metrics,
        psi,
        drifted,
        decision,
        rows=len(new_file.frame),
    )
    monitoring.write_record(job.artifacts, record)
