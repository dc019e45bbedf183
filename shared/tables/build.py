"""Build the static prediction table for the current model (docs/design.md sections 1 and 3).

One builder behind three callers: the build_table CloudEvent function (a model was promoted), its
HTTP function (a scheduler or a person) and ``prodml table build``. ``build_table``:

1. loads ``models/current.skops`` (and remembers its generation);
2. chooses the keys: ``full`` (every key, when the key space has at most ``TABLE_MAX_ROWS``
   keys), ``top_k`` (the K most requested keys in ``traffic/``), or ``auto`` (full if it fits,
   else top_k if there is traffic, else nothing, said plainly);
3. skips the work when the pointer already holds a table of this model generation built the same
   way (for top_k: from the same traffic), unless forced;
4. scores the keys chunk by chunk into two preallocated arrays (codes and scores, n x 8 bytes
   each: that is the memory bound; one chunk's frame exists at a time), logging progress;
5. writes its own object ``tables/<model version>/<strategy>-<build id>.npz`` with its metadata
   (never the object the pointer names), then switches ``tables/current.json`` to it by
   compare-and-swap, unless the model changed during the build or the pointer already holds a
   newer model's table: then the finished table stays in its object and the newer one keeps
   (or will win) the pointer.

The metadata's ``expected_hit_rate`` is in sample: the share of the counted requests (in
``traffic/`` when the table was built) whose key the table holds (None without traffic). For a
forecast of future traffic, held out, see ``prodml advise``.

Concurrent duplicate deliveries may both compute the same table; the pointer ends the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.config import Settings
from shared.contracts import CURRENT_MODEL, TABLE_POINTER, TRAFFIC_PREFIX, BuildStatus, TableStrategy
from shared.errors import BadRequest, ModelNotReady, NotFound, PreconditionFailed
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.schema import Schema
from shared.serving.traffic import read_traffic
from shared.storage import Bucket
from shared.tables.format import (
    build_blob,
    new_build_id,
    pointer_blob,
    prune_builds,
    read_pointer,
    switch_pointer,
    write_table,
)
from shared.tables.keys import (
    KeyChunk,
    TopKeys,
    code_chunks,
    full_chunks,
    non_key_defaults,
    score_keys,
    score_width,
    top_k,
    valid_key_counts,
)

log = get_logger(__name__)

KEEP_BUILDS = 3
"""Build objects kept per model version (the pointer's own is kept whatever its age); a few, so
builds still switching the pointer keep theirs, without every rebuild adding a table forever."""
MAX_REQUEST_FIELDS = ("strategy", "k", "force")


@dataclass(frozen=True)
class BuildRequest:
    """What to build: ``strategy`` (auto, full, top_k), ``k`` for top_k, ``force`` to rebuild."""

    strategy: str = TableStrategy.AUTO
    k: int | None = None
    force: bool = False


def parse_build_request(raw: Any, max_rows: int) -> BuildRequest:
    """Check a request body (a decoded JSON value); ``BadRequest`` names the bad field and value.

    ``None`` (an empty body) means the defaults. ``k`` must be an integer in ``[1, max_rows]``
    and only goes with ``top_k`` or ``auto``.
    """
    if raw is None:
        return BuildRequest()
    if not isinstance(raw, dict):
        raise BadRequest(f"body must be a JSON object, got {_show(raw)}", code="invalid_body")
    unknown = sorted(set(raw) - set(MAX_REQUEST_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field {unknown[0]!r}: a body may hold {', '.join(MAX_REQUEST_FIELDS)}",
            code="unknown_field",
            field=unknown[0],
        )
    strategy = raw.get("strategy", TableStrategy.AUTO)
    if strategy not in tuple(TableStrategy):
        raise BadRequest(
            f"strategy must be one of {', '.join(TableStrategy)}, got {_show(strategy)}",
            code="invalid_value",
            field="strategy",
        )
    k = raw.get("k")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_rows:
            raise BadRequest(
                f"k must be an integer from 1 to TABLE_MAX_ROWS={max_rows}, got {_show(k)}",
                code="invalid_value",
                field="k",
            )
        if strategy == TableStrategy.FULL:
            raise BadRequest(
                f"k={k} applies to strategy top_k or auto, not full (a full table holds every key)",
                code="invalid_value",
                field="k",
            )
    force = raw.get("force", False)
    if not isinstance(force, bool):
        raise BadRequest(
            f"force must be true or false, got {_show(force)}", code="invalid_value", field="force"
        )
    return BuildRequest(strategy=strategy, k=k, force=force)


@dataclass
class BuildResult:
    """What a build did, for the log, the HTTP answer and the CLI."""

    status: str  # a BuildStatus
    message: str
    strategy: str | None = None
    model_version: str | None = None
    model_generation: int | None = None
    table: str | None = None  # blob name of the table written (or found current)
    rows: int = 0
    build_seconds: float | None = None
    rows_per_second: float | None = None
    expected_hit_rate: float | None = None
    pointer_switched: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return asdict(self)


@dataclass(frozen=True)
class BuildPlan:
    """The keys chosen for a build, with what the traffic says of them."""

    strategy: str
    rows: int
    top: TopKeys | None  # for top_k
    expected_hit_rate: float | None
    traffic_requests: int
    traffic_through: str | None  # newest traffic object read (top_k builds depend on it)
    k: int | None


def build_table(artifacts: Bucket, settings: Settings, request: BuildRequest | None = None) -> BuildResult:
    """Build (or skip) the table of the current model; see the module docstring.

    Returns a result for every outcome a retry would not change (no model yet, nothing to build,
    already current). Raises ``BadRequest`` for a request that cannot be met (``full`` over
    ``TABLE_MAX_ROWS``) and lets storage faults propagate (transient: the caller retries).
    """
    request = request or BuildRequest()
    try:
        data, info = artifacts.read_with_info(CURRENT_MODEL)
    except NotFound:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            f"no model yet: {artifacts.name}/{CURRENT_MODEL} does not exist; train one first",
        )
    try:
        bundle = ModelBundle.from_bytes(
            data, settings.model_trusted_types, max_bytes=settings.max_model_bytes
        )
    except ModelNotReady as exc:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD, f"cannot load {CURRENT_MODEL} generation {info.generation}: {exc}"
        )
    schema = bundle.schema
    base = {"model_version": bundle.version, "model_generation": info.generation}
    build_blob(
        bundle.version, TableStrategy.FULL, new_build_id()
    )  # a version that cannot name a table fails now
    if not schema.key:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            "the model's schema has no key features: there is no table to build",
            **base,
        )

    plan = plan_build(artifacts, settings, schema, request)
    if isinstance(plan, BuildResult):
        plan.model_version, plan.model_generation = bundle.version, info.generation
        return plan

    pointer, _ = read_pointer(artifacts)
    if not request.force and is_same_build(pointer, info.generation, plan):
        assert pointer is not None
        return skipped_result(pointer, info.generation, plan.strategy, bundle.version)

    codes, scores, seconds = _score(bundle, schema, plan, settings.table_chunk_rows)
    now = datetime.now(UTC)
    built_at = now.isoformat()
    # Its own object per build: a rebuild of this model never overwrites the table the pointer names.
    blob = build_blob(bundle.version, plan.strategy, new_build_id(now))
    meta = {
        "rows": plan.rows,
        "model_version": bundle.version,
        "model_generation": info.generation,
        "key": list(schema.key),
        "strategy": plan.strategy,
        "k": plan.k,
        "cardinality": schema.key_cardinality,
        "build_seconds": round(seconds, 3),
        "expected_hit_rate": plan.expected_hit_rate,
        "traffic_requests": plan.traffic_requests,
        "traffic_through": plan.traffic_through,
        "non_key_defaults": non_key_defaults(schema),
        "built_at": built_at,
    }
    write_table(artifacts, blob, codes, scores, meta)
    switched, note = switch_to_table(artifacts, settings, bundle, info.generation, plan, built_at, blob)
    prune_old_builds(artifacts, bundle.version)
    rate = plan.rows / seconds if seconds > 0 else None
    log.info(
        "table built",
        extra={"fields": {**base, "rows": plan.rows, "seconds": round(seconds, 3), "switched": switched}},
    )
    return BuildResult(
        BuildStatus.BUILT,
        f"built {plan.rows} rows ({plan.strategy}) for model {bundle.version!r} in {seconds:.1f} s; {note}",
        strategy=plan.strategy,
        table=blob,
        rows=plan.rows,
        build_seconds=round(seconds, 3),
        rows_per_second=round(rate, 1) if rate else None,
        expected_hit_rate=plan.expected_hit_rate,
        pointer_switched=switched,
        details={"k": plan.k, "traffic_requests": plan.traffic_requests},
        **base,
    )


def plan_build(
    artifacts: Bucket, settings: Settings, schema: Schema, request: BuildRequest
) -> BuildPlan | BuildResult:
    """Resolve the strategy and choose the keys, or say why there is nothing to build."""
    cardinality = schema.key_cardinality
    fits = cardinality <= settings.table_max_rows
    if request.strategy == TableStrategy.FULL and not fits:
        raise BadRequest(
            f"strategy full would enumerate {cardinality} keys, over TABLE_MAX_ROWS="
            f"{settings.table_max_rows}: use top_k",
            code="too_many_keys",
            field="strategy",
        )
    # Newest traffic file first, counts second: a file landing in between makes the recorded
    # marker older than the counts, so the next run rebuilds rather than missing it.
    through = newest_traffic(artifacts)
    counts = read_traffic(artifacts, key=list(schema.key))
    strategy = request.strategy
    if strategy == TableStrategy.AUTO:
        strategy = TableStrategy.FULL if fits else TableStrategy.TOP_K
    if strategy == TableStrategy.FULL:
        _, valid_counts, invalid = valid_key_counts(schema, counts)
        total = int(valid_counts.sum()) + invalid
        hit = (total - invalid) / total if total else None
        return BuildPlan(TableStrategy.FULL, cardinality, None, hit, total, through, None)

    k = min(request.k or settings.table_top_k, settings.table_max_rows)
    top = top_k(schema, counts, k)
    if top.distinct_valid_keys == 0:
        why = (
            "no traffic counted yet"
            if top.total_requests == 0
            else f"none of the {top.total_requests} counted requests has a key valid under the schema"
        )
        too_many = (
            ""
            if fits
            else f" and the key space has {cardinality} keys, over TABLE_MAX_ROWS={settings.table_max_rows}"
        )
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            f"nothing to build: {why}{too_many}; serve with SERVING_MODE=dynamic until predict has "
            f"flushed traffic to {TRAFFIC_PREFIX}",
            strategy=TableStrategy.TOP_K,
        )
    return BuildPlan(TableStrategy.TOP_K, len(top.codes), top, top.hit_rate, top.total_requests, through, k)


def is_same_build(pointer: dict[str, Any] | None, model_generation: int, plan: BuildPlan) -> bool:
    """Whether the current pointer already holds this build (same generation, strategy, inputs)."""
    return holds_build(pointer, model_generation, plan.strategy, plan.k, plan.traffic_through)


def holds_build(
    pointer: dict[str, Any] | None,
    model_generation: int,
    strategy: str,
    k: int | None,
    traffic_through: str | None,
) -> bool:
    """``is_same_build`` from the plan's inputs alone: no traffic counts read, nothing scored."""
    if pointer is None or pointer.get("model_generation") != model_generation:
        return False
    if pointer.get("strategy") != strategy:
        return False
    # A top-K table depends on the traffic it was chosen from: new traffic files make it stale.
    return strategy == TableStrategy.FULL or (
        pointer.get("traffic_through") == traffic_through and pointer.get("k") == k
    )


def skipped_result(
    pointer: dict[str, Any], model_generation: int, strategy: str, model_version: str
) -> BuildResult:
    """The answer when the pointer already holds this build: it names the current table object."""
    return BuildResult(
        BuildStatus.SKIPPED,
        f"table {pointer.get('version')!r} of model generation {model_generation} "
        f"({strategy}) is already current; pass force to rebuild",
        strategy=strategy,
        model_version=model_version,
        model_generation=model_generation,
        table=pointer_blob(pointer),
        rows=int(pointer.get("rows", 0)),
    )


def _chunks(schema: Schema, plan: BuildPlan, chunk_rows: int) -> Iterator[KeyChunk]:
    """The planned keys in ascending code order (the table's order, for binary-search lookups)."""
    if plan.top is None:
        return full_chunks(schema, chunk_rows)
    return code_chunks(schema, np.sort(plan.top.codes), chunk_rows)


def _score(
    bundle: ModelBundle, schema: Schema, plan: BuildPlan, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Score every planned key into preallocated arrays, one chunk at a time; log progress."""
    width = score_width(bundle)
    codes = np.empty(plan.rows, dtype=np.int64)
    scores = np.empty((plan.rows, width) if width > 1 else plan.rows, dtype=np.float64)
    start = time.perf_counter()
    done = 0
    for chunk in _chunks(schema, plan, chunk_rows):
        end = done + len(chunk)
        codes[done:end] = chunk.codes
        scores[done:end] = score_keys(bundle, schema, chunk.columns)
        done = end
        elapsed = time.perf_counter() - start
        log.info(
            f"table build: {done}/{plan.rows} rows, {done / elapsed if elapsed else 0:.0f} rows/s",
            extra={"fields": {"rows_done": done, "rows_total": plan.rows, "seconds": round(elapsed, 3)}},
        )
    return codes, scores, time.perf_counter() - start


def switch_to_table(
    artifacts: Bucket,
    settings: Settings,
    bundle: ModelBundle,
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


def newest_traffic(artifacts: Bucket) -> str | None:
    """The last traffic object by name (names start with a timestamp), or None."""
    newest = None
    for info in artifacts.list(TRAFFIC_PREFIX):
        newest = info.name
    return newest


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
