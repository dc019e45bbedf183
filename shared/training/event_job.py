"""One train event at work: its inputs, the time of each phase, and how its outcome is recorded.

``shared.training.on_event`` runs the steps; an ``EventJob`` carries what they share (the event,
the buckets, the claim held on the data file version) and ends the work: ``done`` logs the
outcome, ``finish`` also marks the file done through the promotion path
(``shared.training.promotion.mark_done``), ``release`` gives the claim up without finishing.
``record_error`` records a file the trainer gave up on, for ``prodml monitor`` and replay.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings, get_settings
from shared.contracts import EventOutcome, MonitoringDecision
from shared.data import monitoring
from shared.errors import StorageError
from shared.events import StorageObjectEvent
from shared.logs import get_logger
from shared.storage import Bucket, artifacts_bucket
from shared.training import ledger, promotion, registry
from shared.training.ledger import Claim, file_key
from shared.training.registry import Current

log = get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one event came to; ``status`` is one of the values listed in ``handle_event``."""

    status: str
    message: str
    version: str | None = None
    rule: str | None = None
    seconds: dict[str, float] = field(default_factory=dict, compare=False)


class PhaseClock:
    """Seconds spent per phase of one event (read, evaluate, train, write; the rest is "other")."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` more for ``phase``."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def result(self) -> dict[str, float]:
        """Each phase's seconds, the rest as ``other``, and the ``total``."""
        total = time.perf_counter() - self.started
        out = {name: round(value, 4) for name, value in self.seconds.items()}
        out["other"] = round(total - sum(self.seconds.values()), 4)
        out["total"] = round(total, 4)
        return out


@dataclass
class EventJob:
    """One event being processed: its inputs, and where its outcome is recorded."""

    event: StorageObjectEvent
    settings: Settings
    data: Bucket
    artifacts: Bucket
    clock: PhaseClock
    claim: Claim | None = None  # held from before reading the file until the work ends
    # The file's pitfall checks (test-then-train), for the card of the version trained on it.
    data_checks: dict[str, Any] | None = None
    # What else happened during the work (the shadow's evaluation), added to the outcome's message.
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The data file version's key (``bucket/name@generation``)."""
        return file_key(self.event.bucket, self.event.name, self.event.generation)

    @property
    def fields(self) -> dict[str, Any]:
        """The log fields naming the event."""
        e = self.event
        return {"bucket": e.bucket, "object": e.name, "generation": e.generation, "event_id": e.event_id}

    def done(self, outcome: Outcome) -> Outcome:
        """Log the outcome (with the phase times and the notes) and return it."""
        outcome = dataclasses.replace(self._noted(outcome), seconds=self.clock.result())
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
        outcome = self._noted(outcome)
        e = self.event
        record = {"event_id": e.event_id, "outcome": outcome.status, "version": outcome.version}
        record.update({"message": outcome.message, **({"rule": outcome.rule} if outcome.rule else {})})
        with self.clock.phase("write"):
            promotion.mark_done(self.artifacts, e.bucket, e.name, e.generation, record, self.claim)
            self.claim = None
            add_training_to_record(self.artifacts, e, outcome)
        return self.done(outcome)

    def _noted(self, outcome: Outcome) -> Outcome:
        """``outcome`` with the notes added to its message (each note once)."""
        if not self.notes:
            return outcome
        message = "; ".join([outcome.message, *self.notes])
        self.notes = []
        return dataclasses.replace(outcome, message=message)

    def release(self) -> None:
        """Give the claim up if still held (the work ended without a "done" marker)."""
        if self.claim is None:
            return
        try:
            ledger.release_claim(self.artifacts, self.claim)
        except StorageError as exc:  # it expires by itself; the original outcome matters more
            log.warning(f"could not release the claim on {self.key}: {exc}", extra={"fields": self.fields})
        self.claim = None


def current_version(current: Current | None) -> str | None:
    """The version of ``current``; None when there is no current model."""
    return current.version if current is not None else None


def add_training_to_record(artifacts: Bucket, event: StorageObjectEvent, outcome: Outcome) -> None:
    """The file's monitoring record gets the training outcome beside its test-then-train numbers."""
    record = monitoring.read_record(artifacts, event.name, event.generation)
    if record is None:
        return
    record["training"] = {"outcome": outcome.status, "version": outcome.version, "message": outcome.message}
    monitoring.write_record(artifacts, record)


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
    record = monitoring.read_record(artifacts, event.name, event.generation)
    if record is None:
        record = monitoring.make_record(
            event.name, event.generation, None, None, {}, [], MonitoringDecision.ERROR
        )
    frames = traceback.extract_tb(error.__traceback__)[-3:]
    record.update(
        {
            "decision": MonitoringDecision.ERROR,
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
        extra={
            "fields": {"object": event.name, "generation": event.generation, "outcome": EventOutcome.ERROR}
        },
    )
    return written
