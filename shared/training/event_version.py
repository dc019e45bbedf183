"""The version a train event promotes: trained now, or resumed from before a crash.

``train_version`` trains, evaluates and judges a challenger (``shared.training.challenger``) and
writes its version, recording it in the file's claim first; ``resume`` finds a version written
for the file before a crash (the claim names it) that is still valid against the current model;
``supersede_unless_current`` marks a version that lost the swap.
"""

from __future__ import annotations

import dataclasses
import time

from shared.contracts import CardStatus
from shared.errors import ModelNotReady, ProdMLError
from shared.logs import get_logger
from shared.schema import Schema
from shared.training import event_shadow, ledger, registry
from shared.training.card import ModelCard
from shared.training.challenger import ChallengerRequest, build_challenger
from shared.training.event_job import EventJob, current_version
from shared.training.registry import Current
from shared.training.window import DataFile

log = get_logger(__name__)


def decision_reason(card: ModelCard) -> str:
    """The reason of the gate's decision on ``card``."""
    return card.decision.reason if card.decision is not None else ""


def supersede_unless_current(job: EventJob, card: ModelCard) -> None:
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


def resume(job: EventJob, current: Current | None) -> tuple[str, bytes, ModelCard] | None:
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
    # A version put in shadow before a crash kept the file from being marked done is resumed too:
    # starting it again in shadow changes nothing.
    pending = card.status in (CardStatus.PENDING, CardStatus.SHADOW)
    if claim.parent != current_version(current) or not pending:
        if pending:
            registry.set_decision(
                artifacts, card, CardStatus.SUPERSEDED, "the current model changed before it was promoted"
            )
        return None
    log.info(f"resuming {job.key}: version {version}, written before an interruption")
    return version, model_bytes, card


def train_version(
    job: EventJob, schema: Schema, new_file: DataFile, current: Current | None
) -> tuple[str, bytes, ModelCard]:
    """Train, evaluate and judge a challenger; write its version; (version, model bytes, card)."""
    event = job.event
    version = registry.new_version_id()
    carried = event_shadow.carried_lineage(job.settings, job.artifacts, current)
    challenger = build_challenger(
        ChallengerRequest(
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
            carried_lineage=carried.refs,
        )
    )
    # The file's label leakage and served share (test-then-train) travel with the version, and
    # the shadow pointer generation its carried lineage was read at (its start is checked on it).
    challenger.card = dataclasses.replace(
        challenger.card, data_checks=job.data_checks, shadow_pointer_generation=carried.pointer_generation
    )
    for phase in ("read", "train", "evaluate"):
        job.clock.add(phase, challenger.card.seconds[phase])
    with job.clock.phase("write"):
        if job.claim is not None:
            # Recorded before the version is written, so a delivery whose claim was taken over
            # (ClaimLost) writes nothing, and a taker after a crash finds the version to resume.
            job.claim = ledger.record_claim_version(
                job.artifacts, job.claim, version, current_version(current), job.settings.train_claim_seconds
            )
        started = time.perf_counter()
        model_bytes = challenger.bundle.to_bytes()
        challenger.card.seconds["serialize"] = round(time.perf_counter() - started, 4)
        registry.write_version(
            job.artifacts,
            version,
            model_bytes,
            challenger.card,
            challenger.holdout_bytes,
            compiled=challenger.compiled_bytes,
        )
    return version, model_bytes, challenger.card
