"""The last step of a table build: point ``tables/current.json`` at the new table object, unless a
newer model won, and prune old builds; and whether a promotion event is stale.

The table object is written before (``shared.tables.format.write_table``); the switch is a
compare-and-swap on the pointer, retried up to ``CAS_MAX_ATTEMPTS`` times, and it gives way to a
newer model: the finished table then stays in its own object and the newer one keeps (or will
win) the pointer.
"""

from __future__ import annotations

from shared.config import Settings
from shared.contracts import CURRENT_MODEL, TABLE_POINTER
from shared.errors import NotFound, PreconditionFailed
from shared.logs import get_logger
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.tables.format import prune_builds, read_pointer, switch_pointer
from shared.tables.plan import BuildPlan

log = get_logger(__name__)

KEEP_BUILDS = 3
"""Build objects kept per model version (the pointer's own is kept whatever its age); a few, so
builds still switching the pointer keep theirs, without every rebuild adding a table forever."""


def switch_to_table(
    artifacts: Bucket,
    settings: Settings,
    bundle: Scorer,
    model_generation: int,
    plan: BuildPlan,
    built_at: str,
    blob: str,
) -> tuple[bool, str]:
    """Point ``tables/current.json`` at the table object ``blob`` by compare-and-swap, unless a
    newer model won."""
    pointer_new = {
        "blob": blob,
        "version": bundle.version,
        "model_version": bundle.version,
        "model_generation": model_generation,
        "rows": plan.rows,
        "strategy": plan.strategy,
        "built_at": built_at,
        "key": list(bundle.schema.key),
        "k": plan.k,
        "expected_hit_rate": plan.expected_hit_rate,
        "traffic_through": plan.traffic_through,
    }
    kept = f"table kept as {blob}"
    for _ in range(settings.cas_max_attempts):
        try:
            live = artifacts.stat(CURRENT_MODEL).generation
        except NotFound:
            live = None
        if live != model_generation:
            return False, f"the model changed during the build (now generation {live}): {kept}, pointer left"
        pointer, generation = read_pointer(artifacts)
        if pointer is not None and int(pointer.get("model_generation", 0)) > model_generation:
            return False, f"the pointer holds a newer model's table ({pointer.get('version')!r}): {kept}"
        try:
            switch_pointer(artifacts, pointer_new, if_generation_match=generation)
        except PreconditionFailed:
            continue  # another builder switched first: look again
        return True, f"{TABLE_POINTER} switched"
    return False, f"{TABLE_POINTER} kept changing ({settings.cas_max_attempts} attempts): {kept}"


def prune_old_builds(artifacts: Bucket, model_version: str) -> None:
    """Keep the last ``KEEP_BUILDS`` tables of the model version (``table.prune_builds``).

    Housekeeping after the table is written and the pointer settled: a storage fault here is
    logged, not raised, so it never turns a finished build into a retry (the next build prunes).
    """
    try:
        deleted = prune_builds(artifacts, model_version, KEEP_BUILDS)
    except Exception as exc:  # any fault: the build itself succeeded
        log.warning(f"could not prune old tables of model {model_version!r}: {exc!r}")
        return
    if deleted:
        log.info(
            f"pruned {len(deleted)} old table(s) of model {model_version!r}",
            extra={"fields": {"deleted": deleted}},
        )


def superseded_by(artifacts: Bucket, model_generation: int) -> int | None:
    """The live generation of ``models/current.skops`` when it is newer than ``model_generation``.

    A promotion event for an older generation must not build: the builder always scores the
    *current* model, so a burst of promotions would build the same table once per event, all at
    once; the newer generation's own event builds it. None when the event is the live one (or
    the model is gone: the builder then says so). Storage faults propagate (the caller retries).
    """
    try:
        live = artifacts.stat(CURRENT_MODEL).generation
    except NotFound:
        return None
    return live if live > model_generation else None
