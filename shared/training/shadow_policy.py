"""The shadow policy's decisions: start a shadow, promote it, stop it, and judge it on live labels.

Each decision changes two things, the pointer (``models/shadow.json``, by compare-and-swap:
``shared.training.shadow``) and the versions' cards, always the pointer first. The pointer then
says what the cards must say, so a run after a crash between the two finishes the cards
(``reconcile``) and every decision is idempotent: starting the version already running changes
nothing, ending a pointer that ended already is a no-op. An ended pointer keeps the run's files
the serving model lacks (``carry``, but for a rejected shadow's own file) for the next challenger.

What each change does to the cards:

- ``started`` / ``replaced``: the version's card says ``shadow``; a replaced shadow's card says
  ``superseded`` ("replaced by <v>").
- ``promoted``: the pointer ended first, so a stop that read the same pointer loses its
  compare-and-swap; then the shadow goes through the one promotion path (``promotion.swap_in``
  against the current model's generation, only while the current model is the pointer's
  champion: its card says ``promoted``; else ``superseded``). A crash between the two: the next
  ``reconcile`` (every evaluation and start runs one) swaps it in.
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
from shared.contracts import CURRENT_MODEL, CURRENT_VERSION_METADATA, SHADOW_POINTER, CardStatus, ShadowChange
from shared.errors import ModelNotReady, NotFound, PreconditionFailed, RegistryError, ShadowError
from shared.logs import get_logger
from shared.storage import Bucket
from shared.training import ledger, promotion, registry, shadow
from shared.training.card import ModelCard
from shared.training.shadow import ShadowPointer

log = get_logger(__name__)

NOTHING = "nothing"  # ShadowDecision.action when no shadow runs, or another evaluation decided
WAITING = "waiting"  # a shadow runs and the live evidence is not yet enough
# The statuses of a card that becomes the shadow: any but "shadow" and "promoted" (a version
# started by hand may have been rejected or superseded before).
_NOT_YET_SHADOW = (CardStatus.PENDING, CardStatus.REJECTED, CardStatus.SUPERSEDED, None)
# Reads of the current model a promotion's swap may take when other writers swap meanwhile.
_PROMOTION_READS = 3


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


def start(
    artifacts: Bucket,
    card: ModelCard,
    *,
    champion: str | None,
    by: str,
    reason: str,
    pointer_generation: int | None = None,
    champion_generation: int | None = None,
) -> ShadowPointer:
    """Put ``card``'s (written) version in shadow beside ``champion``; the pointer as it is now.

    A running older shadow is replaced (its card: superseded); the version already running is
    left as it is (its cards finished if a crash interrupted its start). A pointer object that is
    not a pointer is replaced as "none running" (logged). ``pointer_generation``: the pointer's
    generation the challenger's carried lineage was read at (its card's
    ``shadow_pointer_generation``); ``champion_generation``: the generation of
    ``models/current.skops`` it was trained against. ``PreconditionFailed`` when either changed
    since, or another writer changed the pointer between our read and our swap: nothing written.
    """
    state = shadow.read_state(artifacts)
    pointer = state.pointer
    if pointer is not None and not pointer.running:
        reconcile(artifacts, pointer)  # a promotion a crash cut is finished before it is replaced
    if pointer is not None and pointer.version == card.version:
        reconcile(artifacts, pointer)
        return pointer
    if pointer_generation is not None and state.generation != pointer_generation:
        raise PreconditionFailed(
            f"{SHADOW_POINTER} changed (generation {state.generation}) since {card.version}'s carried "
            f"lineage was read at generation {pointer_generation}"
        )
    if champion_generation is not None and current_generation(artifacts) != champion_generation:
        raise PreconditionFailed(f"{CURRENT_MODEL} changed since {card.version} was trained against it")
    _note_malformed(state, f"starting {card.version}")
    new = shadow.started(
        card.version,
        champion=champion,
        form=registry.served_form(card),
        by=by,
        reason=reason,
        previous=pointer if pointer is not None and pointer.running else None,
        carry=_minus(pointer_lineage(artifacts, pointer), card.lineage),
    )
    written = shadow.swap_pointer(artifacts, new, state.generation, replacing=pointer)
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

    The ended pointer carries the run's files the serving model lacks (``carry``), but for a
    rejected shadow's own file: worse on live evidence, it is not carried, as a file whose
    challenger the offline gate rejects is in no later lineage.
    ``PreconditionFailed`` when the pointer changed since ``pointer`` was read."""
    version = _running(pointer)
    carry = pointer_lineage(artifacts, pointer)
    if change == ShadowChange.REJECTED:
        carry = [ref for ref in carry if ref.get("added_by") != version]
    ended = shadow.ended(pointer, change, by=by, reason=reason, numbers=numbers, carry=carry)
    written = shadow.swap_pointer(artifacts, ended, pointer.generation, replacing=pointer)
    reconcile(artifacts, written)
    return written


def end_malformed(artifacts: Bucket, state: shadow.PointerState, *, by: str, reason: str) -> ShadowPointer:
    """Replace a pointer object that is not a pointer (``state.problem``) by an ended pointer
    saying so, swapped against the object's generation as it is (``prodml shadow stop``)."""
    if state.problem is None:
        raise ShadowError(f"{SHADOW_POINTER} is not malformed: nothing to repair")
    _note_malformed(state, "stopping")
    repaired = ShadowPointer(
        version=None,
        change=ShadowChange.STOPPED,
        time=registry.now_iso(),
        by=by,
        reason=f"replaced a malformed {SHADOW_POINTER} ({state.problem}): {reason}",
    )
    return shadow.swap_pointer(artifacts, repaired, state.generation)


def promote(
    artifacts: Bucket,
    pointer: ShadowPointer,
    *,
    by: str,
    reason: str,
    numbers: dict[str, Any] | None = None,
) -> ShadowPointer:
    """End the pointer ``promoted`` with ``numbers``, then make the shadow the serving model
    (``reconcile``: ``promotion.swap_in`` against the current model's generation).

    The pointer is decided first, so a stop that read the same pointer loses its compare-and-swap
    and a later one finds nothing running: the history never says stopped while the version
    serves. ``ShadowError`` when the serving model is no longer the shadow's champion (nothing
    written); ``PreconditionFailed`` when the pointer changed since ``pointer`` was read."""
    version = _running(pointer)
    current_version, _ = current_model(artifacts)
    if current_version not in (version, pointer.champion):
        raise ShadowError(
            f"{version} was compared with {pointer.champion or 'no model'}, but the serving model is "
            f"now {current_version or 'none'}: not promoted (`prodml shadow stop` ends the run)"
        )
    carry = pointer_lineage(artifacts, pointer)  # empty against the lineage once it is current
    ended = shadow.ended(pointer, ShadowChange.PROMOTED, by=by, reason=reason, numbers=numbers, carry=carry)
    written = shadow.swap_pointer(artifacts, ended, pointer.generation, replacing=pointer)
    reconcile(artifacts, written)
    return written


def pointer_lineage(artifacts: Bucket, pointer: ShadowPointer | None) -> list[dict[str, Any]]:
    """The lineage entries a pointer keeps for the next challenger, less the serving model's: a
    running shadow's card lineage and the pointer's ``carry``; an ended pointer's ``carry``.

    A running shadow whose card cannot be read keeps its ``carry`` alone (logged)."""
    if pointer is None:
        return []
    refs = list(pointer.carry)
    if pointer.version is not None:
        try:
            refs = registry.read_card(artifacts, pointer.version).lineage + refs
        except (NotFound, RegistryError) as exc:
            log.warning(f"shadow: the lineage of {pointer.version} cannot be read ({exc}); not carried")
    current_version, _ = current_model(artifacts)
    held: list[dict[str, Any]] = []
    if current_version is not None:
        try:
            held = registry.read_card(artifacts, current_version).lineage
        except (NotFound, RegistryError) as exc:
            log.warning(f"shadow: the lineage of the serving model {current_version} cannot be read ({exc})")
    return _minus(refs, held)


def _minus(refs: list[dict[str, Any]], held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``refs`` (each file once) whose file is not in ``held``."""
    seen = {_ref_key(ref) for ref in held}
    kept: list[dict[str, Any]] = []
    for ref in refs:
        if _ref_key(ref) not in seen:
            seen.add(_ref_key(ref))
            kept.append(ref)
    return kept


def _ref_key(ref: dict[str, Any]) -> str:
    # The key shared.training.window.ref_key gives, without importing window (and pandas).
    return ledger.file_key(ref["bucket"], ref["name"], ref["generation"])


def _note_malformed(state: shadow.PointerState, doing: str) -> None:
    """Log what a start or stop replaces when the pointer object is not a pointer."""
    if state.problem is not None:
        log.warning(
            f"{doing}: replacing {SHADOW_POINTER} generation {state.generation}, which is not a pointer "
            f"({state.problem}); read as no shadow running",
            extra={"fields": {"generation": state.generation, "problem": state.problem}},
        )


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
        _finish_promotion(artifacts, pointer, pointer.previous)
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


def _finish_promotion(artifacts: Bucket, pointer: ShadowPointer, version: str) -> None:
    """Make a ``promoted`` pointer's version the serving model if it is not yet (swapped in against
    the current generation, only while the current model is the shadow's champion and its card
    still says ``shadow``); its card says ``promoted``, or ``superseded`` when the champion changed
    before the swap. Another writer's swap meanwhile is read again."""
    for _ in range(_PROMOTION_READS):
        current_version, generation = current_model(artifacts)
        if current_version == version:
            _set_if(artifacts, version, (CardStatus.SHADOW,), CardStatus.PROMOTED, pointer.reason)
            return
        if current_version != pointer.champion:
            reason = (
                f"promoted in shadow, but the serving model changed to {current_version or 'none'} "
                f"before it was swapped in (the shadow was compared with {pointer.champion or 'no model'}): "
                "not promoted"
            )
            _set_if(artifacts, version, (CardStatus.SHADOW,), CardStatus.SUPERSEDED, reason)
            return
        try:
            card = registry.read_card(artifacts, version)
            if card.status != CardStatus.SHADOW:  # decided since (superseded, or promoted and rolled back)
                return
            model_bytes = artifacts.read(registry.model_name(version))
        except (NotFound, RegistryError) as exc:
            log.error(f"shadow: {version} was promoted in shadow but cannot be swapped in: {exc}")
            return
        try:
            promotion.swap_in(
                artifacts,
                card,
                model_bytes,
                generation,
                previous=current_version,
                reason=pointer.reason,
                by=pointer.by,
            )
            return
        except PreconditionFailed:
            log.info(f"{CURRENT_MODEL} changed while {version} was being swapped in; reading it again")
    raise PreconditionFailed(f"{CURRENT_MODEL} kept changing while {version} was being promoted")


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


def current_generation(artifacts: Bucket) -> int:
    """The generation of ``models/current.skops`` (0: none), from one stat."""
    try:
        return artifacts.stat(CURRENT_MODEL).generation
    except NotFound:
        return 0


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
