"""The shadow policy's decisions: start a shadow, promote it, stop it, and judge it on live labels.

Each decision changes two things, the pointer (``models/shadow.json``, by compare-and-swap:
``shared.training.shadow``) and the versions' cards, always the pointer first. The pointer then
says what the cards must say, so a run after a crash between the two finishes the cards
(``reconcile``) and every decision is idempotent: starting the version already running changes
nothing, ending a pointer that ended already is a no-op.

What each change does to the cards:

- ``started`` / ``replaced``: the version's card says ``shadow``; a replaced shadow's card says
  ``superseded`` ("replaced by <v>").
- ``promoted``: the shadow went through the one promotion path (``promotion.swap_in`` against
  the current model's generation: its card says ``promoted``), then the pointer ended. A crash
  between the two: the next evaluation finds the pointer's version current, and ends the pointer.
- ``rejected`` / ``expired``: the card says ``rejected``, with the live comparison's numbers.
- ``stopped``: by hand, the card goes back to ``pending`` (it passed the offline gate and was
  neither promoted nor rejected: `prodml shadow start` may run it again), its reason saying it
  was stopped; when the champion changed under the shadow (a rollback, another promotion), the
  card says ``superseded``.

``evaluate`` is the live decision the train function runs (PROMOTION_POLICY=shadow) after each
labels file and at each data file. Of two evaluations at once each compare-and-swap has one
winner; the other re-reads and finds nothing left to do, so a shadow is promoted once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings
from shared.contracts import CURRENT_MODEL, CURRENT_VERSION_METADATA, CardStatus, ShadowChange
from shared.errors import ModelNotReady, NotFound, PreconditionFailed, RegistryError, ShadowError
from shared.logs import get_logger
from shared.storage import Bucket
from shared.training import promotion, registry, shadow
from shared.training.card import ModelCard
from shared.training.shadow import ShadowPointer

log = get_logger(__name__)

NOTHING = "nothing"  # ShadowDecision.action when no shadow runs, or another evaluation decided
WAITING = "waiting"  # a shadow runs and the live evidence is not yet enough
# The statuses of a card that becomes the shadow: any but "shadow" and "promoted" (a version
# started by hand may have been rejected or superseded before).
_NOT_YET_SHADOW = (CardStatus.PENDING, CardStatus.REJECTED, CardStatus.SUPERSEDED, None)


@dataclass(frozen=True)
class ShadowDecision:
    """What one decision did: ``action`` is a ``ShadowChange`` value, ``waiting`` or ``nothing``."""

    action: str
    version: str | None
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON."""
        return dataclasses.asdict(self)


def start(artifacts: Bucket, card: ModelCard, *, champion: str | None, by: str, reason: str) -> ShadowPointer:
    """Put ``card``'s (written) version in shadow beside ``champion``; the pointer as it is now.

    A running older shadow is replaced (its card: superseded); the version already running is
    left as it is (its cards finished if a crash interrupted its start). ``PreconditionFailed``
    when another writer changed the pointer between our read and our swap.
    """
    pointer = shadow.read_pointer(artifacts)
    if pointer is not None and pointer.version == card.version:
        reconcile(artifacts, pointer)
        return pointer
    new = shadow.started(
        card.version,
        champion=champion,
        form=registry.served_form(card),
        by=by,
        reason=reason,
        previous=pointer if pointer is not None and pointer.running else None,
    )
    written = shadow.swap_pointer(artifacts, new, pointer.generation if pointer is not None else 0)
    reconcile(artifacts, written)
    return written


def stop(
    artifacts: Bucket,
    pointer: ShadowPointer,
    change: ShadowChange,
    *,
    by: str,
    reason: str,
    numbers: dict[str, Any] | None = None,
) -> ShadowPointer:
    """End ``pointer``'s shadow run with ``change`` (rejected, expired, stopped), then its card.

    ``PreconditionFailed`` when the pointer changed since ``pointer`` was read."""
    if not pointer.running:
        raise ShadowError("no version runs in shadow")
    ended = shadow.ended(pointer, change, by=by, reason=reason, numbers=numbers)
    written = shadow.swap_pointer(artifacts, ended, pointer.generation)
    reconcile(artifacts, written)
    return written


def promote(
    artifacts: Bucket,
    pointer: ShadowPointer,
    *,
    by: str,
    reason: str,
    numbers: dict[str, Any] | None = None,
) -> ShadowPointer:
    """Make the shadow the serving model (``promotion.swap_in`` against the current model's
    generation), then end the pointer ``promoted`` with ``numbers``.

    ``PreconditionFailed`` when the current model or the pointer changed meanwhile (nothing more
    was written than what a re-run finishes)."""
    version = _running(pointer)
    current_version, generation = current_model(artifacts)
    if current_version != version:
        card = registry.read_card(artifacts, version)
        model_bytes = artifacts.read(registry.model_name(version))
        promotion.swap_in(
            artifacts, card, model_bytes, generation, previous=current_version, reason=reason, by=by
        )
    ended = shadow.ended(pointer, ShadowChange.PROMOTED, by=by, reason=reason, numbers=numbers)
    written = shadow.swap_pointer(artifacts, ended, pointer.generation)
    reconcile(artifacts, written)
    return written


def reconcile(artifacts: Bucket, pointer: ShadowPointer | None) -> None:
    """Make the cards say what the pointer's last change did (finishing a change a crash cut).

    Only a card that still says ``shadow`` is changed (or, for the version now in shadow, one that
    does not say so yet), so running it again changes nothing."""
    if pointer is None:
        return
    change = pointer.change
    if change in (ShadowChange.STARTED, ShadowChange.REPLACED) and pointer.version is not None:
        _set_if(artifacts, pointer.version, _NOT_YET_SHADOW, CardStatus.SHADOW, _started_reason(pointer))
        if pointer.previous is not None and pointer.previous != pointer.version:
            reason = f"replaced in shadow by {pointer.version}"
            _set_if(artifacts, pointer.previous, (CardStatus.SHADOW,), CardStatus.SUPERSEDED, reason)
        return
    if pointer.previous is None:
        return
    if change == ShadowChange.PROMOTED:
        if current_model(artifacts)[0] == pointer.previous:
            _set_if(artifacts, pointer.previous, (CardStatus.SHADOW,), CardStatus.PROMOTED, pointer.reason)
    elif change in (ShadowChange.REJECTED, ShadowChange.EXPIRED):
        reason = f"{change} in shadow: {pointer.reason}{_numbers_text(pointer.numbers)}"
        _set_if(artifacts, pointer.previous, (CardStatus.SHADOW,), CardStatus.REJECTED, reason)
    elif change == ShadowChange.STOPPED:
        if pointer.champion is not None and current_model(artifacts)[0] != pointer.champion:
            status, reason = CardStatus.SUPERSEDED, f"shadow stopped: {pointer.reason}"
        else:
            status = CardStatus.PENDING
            reason = (
                f"shadow stopped by {pointer.by}: {pointer.reason}; neither promoted nor rejected "
                f"(`prodml shadow start {pointer.previous}` runs it again)"
            )
        _set_if(artifacts, pointer.previous, (CardStatus.SHADOW,), status, reason)


def evaluate(settings: Settings, artifacts: Bucket, predictions: Bucket, by: str) -> ShadowDecision:
    """The live decision on the running shadow: finish a half-done change; stop a shadow whose
    champion is no longer current; expire one past ``SHADOW_MAX_AGE``; else compare it with the
    champion on matured live labels and promote it (not worse), reject it (worse) or wait.

    A lost compare-and-swap re-reads and decides again (at most ``CAS_MAX_ATTEMPTS`` times): the
    other evaluation did the change, and nothing is left to do."""
    for _ in range(settings.cas_max_attempts):
        try:
            return _evaluate_once(settings, artifacts, predictions, by)
        except PreconditionFailed:
            log.info("the shadow pointer or the current model changed during the evaluation; reading again")
    raise PreconditionFailed(f"{by}: the shadow pointer kept changing (CAS_MAX_ATTEMPTS)")


def _evaluate_once(settings: Settings, artifacts: Bucket, predictions: Bucket, by: str) -> ShadowDecision:
    pointer = shadow.read_pointer(artifacts)
    reconcile(artifacts, pointer)
    if pointer is None or pointer.version is None:
        return ShadowDecision(NOTHING, None, "no version runs in shadow")
    version = pointer.version
    current_version, _ = current_model(artifacts)
    if current_version == version:  # promoted before a crash kept the pointer from saying so
        reason = "promoted (the pointer ended after a restart)"
        promote(artifacts, pointer, by=by, reason=reason, numbers=pointer.numbers)
        return ShadowDecision(ShadowChange.PROMOTED, version, reason)
    if current_version != pointer.champion:
        reason = (
            f"the serving model changed under the shadow (now {current_version or 'none'}, "
            f"the shadow was compared with {pointer.champion or 'none'})"
        )
        stop(artifacts, pointer, ShadowChange.STOPPED, by=by, reason=reason)
        return ShadowDecision(ShadowChange.STOPPED, version, reason)
    age = shadow.age_seconds(pointer)
    if age is not None and age > settings.shadow_max_age:
        reason = f"undecided after {age:.0f} s (SHADOW_MAX_AGE={settings.shadow_max_age:g} s)"
        stop(artifacts, pointer, ShadowChange.EXPIRED, by=by, reason=reason)
        return ShadowDecision(ShadowChange.EXPIRED, version, reason)
    return _judge(settings, artifacts, predictions, pointer, by)


def _judge(
    settings: Settings, artifacts: Bucket, predictions: Bucket, pointer: ShadowPointer, by: str
) -> ShadowDecision:
    """Compare the shadow with its champion on live labels, and act on the comparison's decision."""
    # Imported here: the comparison reads the prediction log with pandas (the join).
    from shared.feedback.shadow_compare import compare

    live = compare(settings, pointer, artifacts=artifacts, predictions=predictions).live
    version = _running(pointer)
    numbers = {**live.numbers, "rows": live.rows, "min_rows": live.min_rows, "metric": live.metric}
    numbers |= {"champion_metric": live.champion_metric, "shadow_metric": live.shadow_metric}
    if live.decision == "not_worse":
        reason = f"promoted on live labels: {live.reason}"
        promote(artifacts, pointer, by=by, reason=reason, numbers=numbers)
        return ShadowDecision(ShadowChange.PROMOTED, version, reason, numbers)
    if live.decision == "worse":
        reason = f"worse on live labels: {live.reason}"
        stop(artifacts, pointer, ShadowChange.REJECTED, by=by, reason=reason, numbers=numbers)
        return ShadowDecision(ShadowChange.REJECTED, version, reason, numbers)
    return ShadowDecision(WAITING, version, live.reason, numbers)


def _running(pointer: ShadowPointer) -> str:
    if pointer.version is None:
        raise ShadowError("no version runs in shadow")
    return pointer.version


def current_model(artifacts: Bucket) -> tuple[str | None, int]:
    """The current model's version (None: none) and its blob's generation, from one stat.

    A blob without the version's metadata (written before compiled serving) is read whole."""
    try:
        info = artifacts.stat(CURRENT_MODEL)
    except NotFound:
        return None, 0
    version = (info.metadata or {}).get(CURRENT_VERSION_METADATA)
    if version:
        return version, info.generation
    try:
        current = registry.read_current(artifacts)
    except ModelNotReady:
        return None, info.generation
    return (current.version, current.generation) if current is not None else (None, 0)


def _set_if(
    artifacts: Bucket, version: str, when: tuple[CardStatus | None, ...], status: CardStatus, reason: str
) -> None:
    """Record ``status`` in ``version``'s card if its status is one of ``when``."""
    try:
        card = registry.read_card(artifacts, version)
    except (NotFound, RegistryError) as exc:  # a card gone or broken: the pointer still says it
        log.warning(f"shadow: the card of {version} cannot be updated to {status}: {exc}")
        return
    if card.status in when:
        registry.set_decision(artifacts, card, status, reason)


def _started_reason(pointer: ShadowPointer) -> str:
    return f"in shadow beside {pointer.champion or 'no model'} since {pointer.started}: {pointer.reason}"


def _numbers_text(numbers: dict[str, Any]) -> str:
    if not numbers:
        return ""
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items())
    return f" ({shown})"
