"""Build the static prediction table for the current model (docs/design.md sections 1 and 3).

One builder behind three callers: the build_table CloudEvent function (a model was promoted), its
HTTP function (a scheduler or a person) and ``prodml table build``. ``build_table``:

1. loads the current model in the form predict serves it (``shared.compiled.current``: its
   compiled ONNX graph when verified, else ``models/current.skops``) and remembers its generation;
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

Steps 2 and 3 are ``shared.tables.plan`` (with the request's parsing), step 5's switch and
pruning ``shared.tables.switch``; what a build answers is ``shared.tables.result``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shared.compiled.current import load_current
from shared.config import Settings
from shared.contracts import CURRENT_MODEL, BuildStatus, TableStrategy
from shared.errors import ModelNotReady, NotFound
from shared.logs import get_logger
from shared.schema import Schema
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.tables.format import build_blob, new_build_id, write_table
from shared.tables.keys import KeyChunk, code_chunks, full_chunks, non_key_defaults, score_keys, score_width
from shared.tables.plan import BuildPlan, BuildRequest, plan_or_skip
from shared.tables.result import BuildResult
from shared.tables.switch import prune_old_builds, switch_to_table

log = get_logger(__name__)


def build_table(artifacts: Bucket, settings: Settings, request: BuildRequest | None = None) -> BuildResult:
    """Build (or skip) the table of the current model; see the module docstring.

    Returns a result for every outcome a retry would not change (no model yet, nothing to build,
    already current). Raises ``BadRequest`` for a request that cannot be met (``full`` over
    ``TABLE_MAX_ROWS``) and lets storage faults propagate (transient: the caller retries).
    """
    request = request or BuildRequest()
    loaded = _load_current_model(artifacts, settings)
    if isinstance(loaded, BuildResult):
        return loaded
    bundle, generation = loaded
    plan = plan_or_skip(artifacts, settings, bundle.schema, (bundle.version, generation), request)
    if isinstance(plan, BuildResult):
        return plan

    codes, scores, seconds = _score(bundle, bundle.schema, plan, settings.table_chunk_rows)
    now = datetime.now(UTC)
    built_at = now.isoformat()
    # Its own object per build: a rebuild of this model never overwrites the table the pointer names.
    blob = build_blob(bundle.version, plan.strategy, new_build_id(now))
    write_table(artifacts, blob, codes, scores, _table_meta(bundle, generation, plan, seconds, built_at))
    switched, note = switch_to_table(artifacts, settings, bundle, generation, plan, built_at, blob)
    prune_old_builds(artifacts, bundle.version)
    return _built_result(bundle, generation, plan, blob, seconds, switched, note)


def _load_current_model(artifacts: Bucket, settings: Settings) -> tuple[Scorer, int] | BuildResult:
    """The serving model, in the form predict serves it (``shared.compiled.current``: the table's
    scores are then the very scores predict would give), and its generation; or the answer why
    there is nothing to build."""
    try:
        loaded = load_current(artifacts, settings)
    except NotFound:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            f"no model yet: {artifacts.name}/{CURRENT_MODEL} does not exist; train one first",
        )
    except ModelNotReady as exc:
        return BuildResult(BuildStatus.NOTHING_TO_BUILD, f"cannot load {CURRENT_MODEL}: {exc}")
    bundle, generation = loaded.scorer, loaded.info.generation
    build_blob(
        bundle.version, TableStrategy.FULL, new_build_id()
    )  # a version that cannot name a table fails now
    if not bundle.schema.key:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            "the model's schema has no key features: there is no table to build",
            model_version=bundle.version,
            model_generation=generation,
        )
    return bundle, generation


def _table_meta(
    bundle: Scorer, model_generation: int, plan: BuildPlan, seconds: float, built_at: str
) -> dict[str, Any]:
    """The metadata written inside the table object (``shared.tables.format.write_table``)."""
    schema = bundle.schema
    return {
        "rows": plan.rows,
        "model_version": bundle.version,
        "model_generation": model_generation,
        "model_form": str(bundle.form),  # the form that scored it: the one predict serves
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


def _built_result(
    bundle: Scorer,
    model_generation: int,
    plan: BuildPlan,
    blob: str,
    seconds: float,
    switched: bool,
    note: str,
) -> BuildResult:
    """Log the finished build and say what it did (``note``: what became of the pointer)."""
    base = {"model_version": bundle.version, "model_generation": model_generation}
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
        model_version=bundle.version,
        model_generation=model_generation,
    )


def _chunks(schema: Schema, plan: BuildPlan, chunk_rows: int) -> Iterator[KeyChunk]:
    """The planned keys in ascending code order (the table's order, for binary-search lookups)."""
    if plan.top is None:
        return full_chunks(schema, chunk_rows)
    return code_chunks(schema, np.sort(plan.top.codes), chunk_rows)


def _score(
    bundle: Scorer, schema: Schema, plan: BuildPlan, chunk_rows: int
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
