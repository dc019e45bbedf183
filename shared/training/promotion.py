"""Promotion: the one sequence that makes a written version the serving model, and marks its data
files done. The train function (``shared.training.on_event``), static training
(``shared.training.static``) and replay (which runs the train function's code) all go through it.

The sequence, each step safe to repeat after a crash (docs/design.md section 3):

1. ``swap_in``: compare-and-swap ``models/current.skops`` to the version's model against the
   generation of the model it replaces (recorded under ``registry/events/``), then record the
   decision ``promoted`` in its card. A lost race raises ``PreconditionFailed`` with nothing
   written: the trainer redoes its work on top of the winner; static training, which replaces
   whatever is current, swaps again (``swap_in_over_current``).
2. ``mark_done``: write each data file's "done" marker (only if absent), then drop the claim the
   work held on it, if any. The marker comes first: a crash between the two leaves a claim that
   expires, never a file that is trained twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.contracts import CardStatus
from shared.errors import ModelNotReady, PreconditionFailed, ProdMLError
from shared.storage import Bucket
from shared.training import ledger, registry
from shared.training.card import ModelCard
from shared.training.ledger import Claim


def swap_in(
    artifacts: Bucket,
    card: ModelCard,
    model_bytes: bytes,
    expected_generation: int,
    *,
    previous: str | None,
    reason: str,
    by: str,
) -> ModelCard:
    """Make ``card``'s version current if the current model is still the one read at
    ``expected_generation`` (0: none yet); record ``promoted`` with ``reason``; the updated card.

    ``PreconditionFailed`` when another writer swapped first: nothing was written.
    """
    registry.swap_current(
        artifacts,
        card.version,
        model_bytes,
        expected_generation,
        kind="promote",
        previous=previous,
        by=by,
        form=registry.served_form(card),
    )
    return registry.set_decision(artifacts, card, CardStatus.PROMOTED, reason)


def swap_in_over_current(
    artifacts: Bucket,
    card: ModelCard,
    model_bytes: bytes,
    *,
    reason: str,
    by: str,
    attempts: int,
    extra_trusted: Iterable[str] = (),
) -> tuple[str | None, ModelCard]:
    """``swap_in`` over whatever model is current, re-reading it when another writer won, at most
    ``attempts`` times; (the version replaced, the updated card). For promotions by hand, which
    replace the current model whatever it is (an unloadable one too: that is what they fix)."""
    for _ in range(attempts):
        try:
            current = registry.read_current(artifacts, extra_trusted)
        except ModelNotReady:
            current = None  # an unloadable current model is exactly what a retrain by hand replaces
        previous = current.version if current is not None else None
        expected = current.generation if current is not None else registry.current_generation(artifacts)
        try:
            promoted = swap_in(
                artifacts, card, model_bytes, expected, previous=previous, reason=reason, by=by
            )
        except PreconditionFailed:
            continue
        return previous, promoted
    raise ProdMLError(f"models/current.skops kept changing; {card.version} was written but not promoted")


def mark_done(
    artifacts: Bucket,
    bucket: str,
    name: str,
    generation: int,
    record: dict[str, Any],
    claim: Claim | None = None,
) -> bool:
    """Write a data file version's "done" marker (``record``: event id, outcome, version,
    message, rule), then delete ``claim`` if given; False when the marker was there already."""
    written = ledger.mark_processed(artifacts, bucket, name, generation, record)
    if claim is not None:
        ledger.delete_claim(artifacts, claim)
    return written
