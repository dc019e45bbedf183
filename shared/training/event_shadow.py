"""The train function's side of the shadow policy (``PROMOTION_POLICY=shadow``, issue 16).

- ``goes_to_shadow``: a challenger that passed the offline gate becomes the shadow instead of
  the serving model, when there is a champion to shadow (the first model ever is promoted).
- ``start_shadow``: start it (``shared.training.shadow_policy.start``) against the very pointer
  generation its carried lineage was read at and the current model it was trained against, and
  mark the file done, outcome ``shadow``; when either changed meanwhile its card is superseded
  and the file is trained again on top of the new state. A redelivery after a crash before the
  start resumes the written version from the claim (``event_version.resume``) and starts it
  under the same check.
- ``carried_lineage``: the files the shadow pointer keeps that the champion lacks (the running
  shadow's, or an ended run's ``carry``), which the next challenger must also be trained on, or
  their rows would be lost.
- ``evaluate_note``: the live decision (``shadow_policy.evaluate``) after each labels file and
  at each data file: a transient fault raises (redelivery), any other is logged and said in the
  outcome's message, never a 5xx loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.contracts import CardStatus, EventOutcome, PromotionPolicy
from shared.errors import PreconditionFailed, ProdMLError, is_transient
from shared.logs import get_logger
from shared.storage import Bucket, predictions_bucket
from shared.training import registry, shadow, shadow_policy
from shared.training.card import ModelCard
from shared.training.event_job import EventJob, Outcome
from shared.training.gate import PROMOTED_VERDICT
from shared.training.registry import Current
from shared.training.window import ref_key

log = get_logger(__name__)


def policy_is_shadow(settings: Settings) -> bool:
    """Whether challengers that pass the gate go to shadow (``PROMOTION_POLICY=shadow``)."""
    return settings.promotion_policy == PromotionPolicy.SHADOW


def goes_to_shadow(settings: Settings, current: Current | None) -> bool:
    """Whether a challenger that passed the gate becomes the shadow rather than the serving model."""
    return policy_is_shadow(settings) and current is not None


def start_shadow(job: EventJob, card: ModelCard, current: Current, reason: str) -> Outcome | None:
    """Put ``card``'s version in shadow beside ``current`` and mark the file done (``shadow``).

    None when the shadow pointer or the current model changed since the challenger was trained
    (another file's challenger started first, a promotion): its card is superseded and the
    caller trains again on top of the new state, as after a lost model swap, so the file that
    won is carried and none is lost."""
    # The gate's verdict says "promoted: ..."; here the challenger only passed it.
    if reason.startswith(PROMOTED_VERDICT):
        reason = "passed the offline gate: " + reason[len(PROMOTED_VERDICT) :]
    try:
        with job.clock.phase("write"):
            pointer = shadow_policy.start(
                job.artifacts,
                card,
                champion=current.version,
                by=f"train {job.key}",
                reason=reason,
                pointer_generation=card.shadow_pointer_generation,
                champion_generation=current.generation,
            )
    except PreconditionFailed as exc:
        log.info(f"{job.key}: not started in shadow ({exc}); training again", extra={"fields": job.fields})
        redo = f"the shadow or the serving model changed before it started in shadow ({exc}); redone on top"
        registry.set_decision(job.artifacts, card, CardStatus.SUPERSEDED, redo)
        return None
    replaced = f", replacing {pointer.previous}" if pointer.previous not in (None, card.version) else ""
    message = f"in shadow beside {current.version}{replaced} ({reason})"
    return job.finish(Outcome(EventOutcome.SHADOW, message, card.version))


@dataclass(frozen=True)
class Carried:
    """What a challenger carries from the shadow pointer: the files (lineage entries) and the
    pointer generation they were read at (None: not read, under the offline policy)."""

    refs: list[dict[str, Any]]
    pointer_generation: int | None


def carried_lineage(settings: Settings, artifacts: Bucket, current: Current | None) -> Carried:
    """The lineage entries the shadow pointer keeps that ``current`` lacks: the running shadow's
    (and its pointer's ``carry``), or an ended pointer's ``carry``, whatever champion the shadow
    ran beside; with the pointer's generation. None read without a current model or under the
    offline policy; a pointer object that is not a pointer carries nothing (its generation is kept,
    so the start replaces exactly that object)."""
    if current is None or not policy_is_shadow(settings):
        return Carried([], None)
    state = shadow.read_state(artifacts)  # a transient fault raises: the event is redelivered
    if state.problem is not None:
        log.warning(
            f"the shadow pointer cannot be read ({state.problem}); training on the champion's lineage"
        )
    try:
        refs = shadow_policy.pointer_lineage(artifacts, state.pointer)
    except ProdMLError as exc:
        if is_transient(exc):
            raise
        log.warning(f"the shadow's lineage cannot be read ({exc}); training on the champion's")
        refs = []
    held = {ref_key(ref) for ref in current.lineage}
    return Carried([ref for ref in refs if ref_key(ref) not in held], state.generation)


def evaluate_note(job: EventJob) -> str | None:
    """Run the live decision on the shadow (under the shadow policy); a note for the outcome's
    message, or None when there was nothing to say."""
    if not policy_is_shadow(job.settings):
        return None
    try:
        decision = shadow_policy.evaluate(
            job.settings, job.artifacts, predictions_bucket(job.settings), by=f"train {job.key}"
        )
    except Exception as exc:  # a bug in the comparison must not block the labels or the training
        if is_transient(exc):
            raise  # redelivered: every decision is safe to take again
        log.error(f"the shadow was not evaluated after {job.key}: {exc}", extra={"fields": job.fields})
        return f"the shadow was not evaluated: {exc}"
    if decision.action == shadow_policy.NOTHING:
        return None
    return f"shadow {decision.version}: {decision.action} ({decision.message})"
