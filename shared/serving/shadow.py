"""The shadow a predict instance scores beside the champion (issue 16; docs/design.md section 5).

``models/shadow.json`` (``shared.training.shadow``) names at most one version and the form to
score it in. The reload loop (``shared.serving.state``) stats it with the model and the table
pointer; when its generation changes, ``read_slot`` loads the version it names in that form only
(``shared.compiled.current.load_version``: the compiled file with an eager ONNX Runtime session,
or the skops file where scikit-learn is importable), and ``scored_shadow`` decides whether it may
be scored beside the champion of the same state. The answer is always the champion's: the shadow
is scored later, off the request path, by the prediction log's flusher
(``shared.feedback.prediction_log``), which is why nothing is loaded where there is no log.

A pointer or version that cannot be loaded (malformed pointer, missing or corrupt file, unknown
version) becomes a slot without a scorer whose note says why: it is skipped until the pointer's
generation changes. A storage fault propagates, so the loader keeps what it had and tries again
at the next check. Neither ever touches the champion.

Static serving scores the shadow too: the log holds each instance as served, so the shadow's
score of it is as honest as in the other modes. Its session is made at load in every mode, so a
static instance starts ONNX Runtime when a shadow is loaded and never while none runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.compiled.current import load_version
from shared.config import Settings
from shared.contracts import SHADOW_POINTER, ModelForm
from shared.errors import ShadowError, is_transient
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.training.shadow import read_pointer

NEVER_WRITTEN = f"no shadow: {SHADOW_POINTER} was never written"
WAITING = "not loaded yet: the reload thread loads it, off the first request's path"
UNREAD = -1  # the generation of a slot not read yet: the next reload check reads the pointer


@dataclass(frozen=True)
class ShadowSlot:
    """The shadow as one read of ``models/shadow.json`` left it: the pointer's generation (0: none
    written), the version and form it names (None: no shadow runs), the loaded scorer (None: none
    runs, or it could not be loaded) and what happened, for ``/health``."""

    generation: int = 0
    version: str | None = None
    form: ModelForm | None = None
    scorer: Scorer | None = None
    note: str = NEVER_WRITTEN


def read_slot(artifacts: Bucket, settings: Settings, generation: int, off: str | None) -> ShadowSlot:
    """What the pointer (stat at ``generation``) names, loaded unless ``off`` says why not.

    A content fault is a slot without a scorer, its note saying why; a storage fault propagates.
    """
    try:
        pointer = read_pointer(artifacts)
    except ShadowError as exc:
        return ShadowSlot(generation, note=f"not loaded: {exc}")
    if pointer is None:  # deleted since the stat
        return ShadowSlot()
    if pointer.version is None:
        return ShadowSlot(pointer.generation, note=f"no shadow: the last one was {pointer.change}")
    named = ShadowSlot(pointer.generation, pointer.version, pointer.form)
    if off is not None:
        return _with(named, note=f"not scored: {off}")
    try:
        scorer = load_version(artifacts, settings, pointer.version, pointer.form)
    except Exception as exc:  # any content fault: the champion serves on, /health says why
        if is_transient(exc):
            raise
        return _with(named, note=f"not loaded: {type(exc).__name__}: {exc}"[:500])
    return _with(named, scorer=scorer, note=f"loaded ({pointer.form})")


def _with(slot: ShadowSlot, **changes: Any) -> ShadowSlot:
    return ShadowSlot(**{**vars(slot), **changes})


def scored_shadow(slot: ShadowSlot, champion: Scorer) -> tuple[Scorer | None, str]:
    """The scorer the flusher may score beside ``champion`` (None: none), and why (not).

    Not the champion's own version (a promoted shadow whose pointer was not ended yet: its scores
    would be the answers again), and only on the champion's schema: the log holds one row of
    features for both, and the comparison pairs their scores on the same instance.
    """
    scorer = slot.scorer
    if scorer is None:
        return None, slot.note
    if scorer.version == champion.version:
        return None, f"not scored: version {scorer.version!r} is the champion itself"
    if scorer.schema != champion.schema:
        return None, (
            f"not scored: its schema differs from the champion {champion.version!r}'s, so its "
            "scores cannot be logged beside the answers"
        )
    return scorer, f"scored in {scorer.form} beside the champion {champion.version!r}"


def shadow_health(
    slot: ShadowSlot | None, scored: Scorer | None, note: str, counters: dict[str, Any] | None
) -> dict[str, Any]:
    """``/health``'s ``shadow``: the pointer's version, form and generation (null: none), whether
    it is scored, why, and the flusher's counters (``rate``, ``scored_rows``, ``failures``,
    ``last_error``, ``seconds``; null without a prediction log)."""
    keys = ("rate", "scored_rows", "sampled_out", "failures", "last_error", "seconds")
    counts = counters or dict.fromkeys(keys)
    return {
        "version": slot.version if slot else None,
        "form": slot.form if slot else None,
        "generation": slot.generation if slot and slot.generation > 0 else None,
        "scoring": scored is not None,
        "note": note,
        **{key: counts.get(key) for key in keys},
    }
