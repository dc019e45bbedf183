"""The train function's side of the shadow policy (``PROMOTION_POLICY=shadow``, issue 16).

- ``goes_to_shadow``: a challenger that passed the offline gate becomes the shadow instead of
  the serving model, when there is a champion to shadow (the first model ever is promoted).
- ``start_shadow``: start it (``shared.training.shadow_policy.start``) and mark the file done,
  outcome ``shadow``; a redelivery after a crash before the start resumes the written version
  from the claim (``event_version.resume``) and starts it.
- ``carried_lineage``: the running shadow's files that the champion lacks, which a newer
  challenger replacing that shadow must also be trained on, or their rows would be lost.
- ``evaluate_note``: the live decision (``shadow_policy.evaluate``) after each labels file and
  at each data file: a transient fault raises (redelivery), any other is logged and said in the
  outcome's message, never a 5xx loop.
"""

from __future__ import annotations

from typing import Any

from shared.config import Settings
from shared.contracts import EventOutcome, PromotionPolicy
from shared.errors import ProdMLError, is_transient
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


def start_shadow(job: EventJob, card: ModelCard, current: Current, reason: str) -> Outcome:
    """Put ``card``'s version in shadow beside ``current`` and mark the file done (``shadow``)."""
    # The gate's verdict says "promoted: ..."; here the challenger only passed it.
    if reason.startswith(PROMOTED_VERDICT):
        reason = "passed the offline gate: " + reason[len(PROMOTED_VERDICT) :]
    with job.clock.phase("write"):
        pointer = shadow_policy.start(
            job.artifacts, card, champion=current.version, by=f"train {job.key}", reason=reason
        )
    replaced = f", replacing {pointer.previous}" if pointer.previous not in (None, card.version) else ""
    message = f"in shadow beside {current.version}{replaced} ({reason})"
    return job.finish(Outcome(EventOutcome.SHADOW, message, card.version))


def carried_lineage(settings: Settings, artifacts: Bucket, current: Current | None) -> list[dict[str, Any]]:
    """The lineage entries of the running shadow that ``current`` lacks (empty without a shadow,
    under the offline policy, or when the shadow was started against another champion)."""
    if current is None or not policy_is_shadow(settings):
        return []
    try:
        pointer = shadow.read_pointer(artifacts)
        if pointer is None or pointer.version is None or pointer.champion != current.version:
            return []
        card = registry.read_card(artifacts, pointer.version)
    except ProdMLError as exc:
        if is_transient(exc):
            raise
        log.warning(f"the running shadow's lineage cannot be read ({exc}); training on the champion's")
        return []
    held = {ref_key(ref) for ref in current.lineage}
    return [ref for ref in card.lineage if ref_key(ref) not in held]


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
