"""Planning a table build: the request, the keys to score, and whether that table is already built.

``parse_build_request`` checks what a caller asks (an HTTP body, CLI flags); ``plan_build``
resolves the strategy (``auto``: full if every key fits in ``TABLE_MAX_ROWS``, else top_k if
there is traffic) and chooses the keys; ``is_same_build`` tells whether the pointer already holds
a table of this model generation built the same way (for top_k: from the same traffic), so that
``shared.tables.build.build_table`` and the Beam pipeline skip it. Nothing here scores a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.contracts import TRAFFIC_PREFIX, BuildStatus, TableStrategy
from shared.errors import BadRequest
from shared.schema import Schema
from shared.serving.traffic import read_traffic
from shared.storage import Bucket
from shared.tables.format import read_pointer
from shared.tables.keys import TopKeys, top_k, valid_key_counts
from shared.tables.result import BuildResult, skipped_result

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


def newest_traffic(artifacts: Bucket) -> str | None:
    """The last traffic object by name (names start with a timestamp), or None."""
    newest = None
    for info in artifacts.list(TRAFFIC_PREFIX):
        newest = info.name
    return newest


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_or_skip(
    artifacts: Bucket,
    settings: Settings,
    schema: Schema,
    model: tuple[str, int],
    request: BuildRequest,
) -> BuildPlan | BuildResult:
    """The plan of a build for ``model`` (its version and generation), or the result that ends it
    now: nothing to build, or ``skipped`` when the current table is already this very build
    (unless ``request.force``). The in-function builder and the Beam pipeline both start here."""
    version, generation = model
    plan = plan_build(artifacts, settings, schema, request)
    if isinstance(plan, BuildResult):
        plan.model_version, plan.model_generation = version, generation
        return plan
    pointer, _ = read_pointer(artifacts)
    if not request.force and pointer is not None and is_same_build(pointer, generation, plan):
        return skipped_result(pointer, generation, plan.strategy, version)
    return plan
