"""The serving advisor: static, dynamic or hybrid serving, from cardinality and peakedness.

The lesson (docs/design.md section 1): precompute a table when every key fits in it (low
cardinality); run the model on each request when keys are many and traffic is spread thin; and
when keys are many but traffic piles up on a few of them (peaked), table those few and run the
model for the rest (hybrid).

What it measures:

- **cardinality**: the key space of the schema (product of the key features' cardinalities),
  and the distinct valid keys actually seen in ``traffic/``;
- **peakedness**: the share of requests that go to the top 1% and top 10% of the *seen* keys
  (uniform traffic gives 1% and 10%; a share of the whole key space would say little when almost
  all of it is never asked), and the coverage curve (share of requests answered by the K most
  requested keys, for every K);
- **expected hit rate of a top-K table**, measured out of sample: each key's count is split at
  random into two halves, keys are ranked on one half and the hit rate is read on the other. A
  key seen once is rarely seen again under flat traffic, so in-sample coverage would flatter a
  table; the held-out rate is what a table chosen from past traffic answers of future traffic;
- **cost**: table size in bytes (8 bytes a code plus 8 a score), build time from the scoring
  throughput measured on a sample chunk, and the model's latency for one instance (what every
  dynamic request pays).

The rule, with its thresholds as named constants below: cardinality <= ``TABLE_MAX_ROWS`` ->
static; else with too little traffic -> dynamic (no evidence of peaks yet); else K = the
fewest top keys whose held-out hit rate reaches ``TARGET_HIT_RATE`` (at most ``TABLE_MAX_ROWS``);
hybrid if that table answers at least ``MIN_HYBRID_HIT_RATE`` of held-out requests, else dynamic.

The module stays whole at about 340 lines: the rule, the numbers it reads and the words of its
reasons are one argument, best read together. The coverage plot is ``shared.tables.advisor_plot``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shared.compiled.current import load_current
from shared.config import Settings
from shared.contracts import ServingMode
from shared.errors import ModelNotReady, NotFound
from shared.schema import Schema, load_schema
from shared.scoring import Scorer
from shared.serving.traffic import read_traffic
from shared.storage import Bucket
from shared.tables.keys import decode_keys, score_keys, score_width, valid_key_counts

TARGET_HIT_RATE = 0.8
"""A hybrid table's K is the fewest top keys answering this share of (held-out) requests."""
MIN_HYBRID_HIT_RATE = 0.5
"""Below this held-out hit rate a top-K table saves too little: dynamic serving instead."""
MIN_TRAFFIC_REQUESTS = 200
"""Fewer counted requests than this are too little evidence to call traffic peaked."""
PEAK_SHARES = (0.01, 0.10)
"""The peakedness figures: share of requests to the top 1% and top 10% of seen keys."""
HOLDOUT_SEED = 0
"""Seed of the random split of counts into ranking and held-out halves (so advice repeats)."""
THROUGHPUT_SAMPLE_ROWS = 20_000
"""Keys scored (at most one build chunk) to measure build throughput."""
LATENCY_REPEATS = 15
"""Single-instance scorings timed for the model latency (the median is reported)."""
CODE_BYTES = SCORE_BYTES = 8
CURVE_POINTS = 200
"""Points of the coverage curve kept in the JSON report (the PNG uses every point)."""


@dataclass(frozen=True)
class ModelCost:
    """What scoring costs with this model on this machine."""

    version: str
    rows_per_second: float  # batch scoring throughput, i.e. table build speed
    latency_ms: float  # one instance scored alone (a dynamic request's model cost)
    score_width: int  # scores per key (1, or the number of classes)


@dataclass
class Advice:
    """The recommendation and every number behind it."""

    recommendation: str  # a ServingMode
    reason: str  # plain words, with the numbers
    k: int | None  # rows of the recommended table (None for dynamic)
    expected_hit_rate: float | None  # share of requests the recommended table answers
    cardinality: int
    table_max_rows: int
    requests: int  # counted requests (valid or not)
    invalid_requests: int
    distinct_keys_seen: int
    top_share: dict[str, float | None]  # "1%" / "10%" of seen keys -> share of requests
    full_table: dict[str, float | None]  # rows, bytes, build_seconds of every key
    recommended_table: dict[str, float | None]  # the same for the recommended table
    model: dict[str, Any] | None
    thresholds: dict[str, float]
    # Coverage curves: for K = 1..n (ranked keys), the share of requests answered.
    in_sample: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the curves thinned to at most ``CURVE_POINTS`` points each."""
        out = asdict(self)
        out["in_sample"] = _thin(self.in_sample)
        out["held_out"] = _thin(self.held_out)
        return out


def _thin(curve: np.ndarray) -> list[list[float]]:
    """``[[k, share], ...]`` at about ``CURVE_POINTS`` log-spaced K (first and last kept)."""
    if len(curve) == 0:
        return []
    ks = np.unique(np.geomspace(1, len(curve), num=min(CURVE_POINTS, len(curve))).round().astype(int))
    return [[int(k), round(float(curve[k - 1]), 6)] for k in ks]


def table_bytes(rows: int, width: int) -> int:
    """Bytes of a table's arrays: a code and ``width`` scores per row (npz headers aside)."""
    return rows * (CODE_BYTES + SCORE_BYTES * width)


def coverage(counts: np.ndarray) -> np.ndarray:
    """Cumulative share of requests of keys sorted by count (descending); empty if no requests."""
    total = counts.sum()
    if total <= 0:
        return np.zeros(0)
    shares: np.ndarray = np.cumsum(np.sort(counts)[::-1]) / total  # numpy types this as Any
    return shares


def held_out_coverage(codes: np.ndarray, counts: np.ndarray, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """For K = 1..n: the held-out share of requests answered by the top K keys of the other half.

    Each key's count is split binomially in two; keys are ranked by their first-half count
    (ties by code) and only keys seen in the first half can be chosen. Empty if the held-out
    half has no requests.
    """
    rng = np.random.default_rng(seed)
    first = rng.binomial(counts, 0.5)
    second = counts - first
    held_total = second.sum()
    chosen = first > 0
    if held_total <= 0 or not chosen.any():
        return np.zeros(0)
    order = np.lexsort((codes[chosen], -first[chosen]))
    shares: np.ndarray = np.cumsum(second[chosen][order]) / held_total  # numpy types this as Any
    return shares


def analyze(
    cardinality: int,
    codes: np.ndarray,
    counts: np.ndarray,
    invalid_requests: int,
    table_max_rows: int,
    cost: ModelCost | None,
) -> Advice:
    """The recommendation for a key space and its traffic (valid key codes and their counts).

    Pure: no storage and no model, so the rule can be checked on synthetic workloads.
    """
    requests = int(counts.sum()) + invalid_requests
    held = held_out_coverage(codes, counts)
    common = _measurements(cardinality, codes, counts, invalid_requests, table_max_rows, cost, held)
    words = _describe(cardinality, len(codes), requests, common["top_share"], table_max_rows)
    if cardinality <= table_max_rows:
        full = common["full_table"]
        valid_share = (requests - invalid_requests) / requests if requests else None
        reason = (
            f"static: all {cardinality:,} keys fit in one table (TABLE_MAX_ROWS={table_max_rows:,}), "
            f"{_size(full)}; every request with a valid key is a lookup. {words}"
        )
        return Advice(ServingMode.STATIC, reason, cardinality, valid_share, recommended_table=full, **common)
    if requests < MIN_TRAFFIC_REQUESTS:
        reason = (
            f"dynamic: {cardinality:,} keys are over TABLE_MAX_ROWS={table_max_rows:,}, and {requests:,} "
            f"counted requests are too few (need {MIN_TRAFFIC_REQUESTS:,}) to find peaks; serve "
            f"dynamic, let predict count traffic, and ask again. {words}"
        )
        return Advice(
            ServingMode.DYNAMIC, reason, None, None, recommended_table=_table_cost(0, cost), **common
        )
    return _top_k_advice(cardinality, requests, invalid_requests, table_max_rows, cost, held, words, common)


def _measurements(
    cardinality: int,
    codes: np.ndarray,
    counts: np.ndarray,
    invalid_requests: int,
    table_max_rows: int,
    cost: ModelCost | None,
    held: np.ndarray,
) -> dict[str, Any]:
    """The fields of ``Advice`` every recommendation carries: the numbers behind it."""
    in_sample = coverage(counts)
    seen = len(codes)
    top_share: dict[str, float | None] = {}
    for share in PEAK_SHARES:
        n = math.ceil(share * seen)
        top_share[f"{share:.0%}"] = round(float(in_sample[n - 1]), 4) if seen else None
    return {
        "cardinality": cardinality,
        "table_max_rows": table_max_rows,
        "requests": int(counts.sum()) + invalid_requests,
        "invalid_requests": invalid_requests,
        "distinct_keys_seen": seen,
        "top_share": top_share,
        "full_table": _table_cost(cardinality, cost),
        "model": asdict(cost) if cost else None,
        "thresholds": {
            "table_max_rows": table_max_rows,
            "target_hit_rate": TARGET_HIT_RATE,
            "min_hybrid_hit_rate": MIN_HYBRID_HIT_RATE,
            "min_traffic_requests": MIN_TRAFFIC_REQUESTS,
        },
        "in_sample": in_sample,
        "held_out": held,
    }


def _table_cost(rows: int, cost: ModelCost | None) -> dict[str, float | None]:
    """Rows, bytes and (with a measured model) build seconds of a table of ``rows`` keys."""
    width = cost.score_width if cost else 1
    seconds = rows / cost.rows_per_second if cost and cost.rows_per_second > 0 else None
    return {"rows": rows, "bytes": table_bytes(rows, width), "build_seconds": seconds}


def _top_k_advice(
    cardinality: int,
    requests: int,
    invalid_requests: int,
    table_max_rows: int,
    cost: ModelCost | None,
    held: np.ndarray,
    words: str,
    common: dict[str, Any],
) -> Advice:
    """Too many keys for a full table, enough traffic: hybrid with the smallest K that pays, or
    dynamic when even the best top-K table within ``TABLE_MAX_ROWS`` answers too little."""
    cap = min(len(held), table_max_rows)
    if cap == 0:
        k, hit = 0, 0.0
    else:
        reached = np.flatnonzero(held[:cap] >= TARGET_HIT_RATE)
        k = int(reached[0]) + 1 if len(reached) else cap
        hit = float(held[k - 1])
    # The hit rate is of valid-key requests; requests for invalid keys are misses anyway.
    hit_all = hit * (requests - invalid_requests) / requests
    limit = "TABLE_MAX_ROWS" if k == table_max_rows else "every key seen in the ranking half"
    if k and hit_all >= MIN_HYBRID_HIT_RATE:
        recommended = _table_cost(k, cost)
        reason = (
            f"hybrid: {cardinality:,} keys are too many for a full table, but traffic is peaked: "
            f"a table of the {k:,} most requested keys ({k / cardinality:.2%} of the key space, "
            f"{_size(recommended)}) answered {hit_all:.0%} of held-out requests ("
            + (
                f"the fewest keys reaching the target of {TARGET_HIT_RATE:.0%}"
                if hit >= TARGET_HIT_RATE
                else f"short of the {TARGET_HIT_RATE:.0%} target: K is {limit}"
            )
            + f"); the model serves the rest. Build it with "
            f"`prodml table build --strategy top_k --k {k}`. {words}"
        )
        return Advice(
            ServingMode.HYBRID, reason, k, round(hit_all, 4), recommended_table=recommended, **common
        )
    reason = (
        f"dynamic: {cardinality:,} keys are too many for a full table and traffic is flat: the best "
        f"top-K table within TABLE_MAX_ROWS (K={k:,}) answered only {hit_all:.0%} of held-out "
        f"requests (a table pays from {MIN_HYBRID_HIT_RATE:.0%}). {words}"
    )
    return Advice(ServingMode.DYNAMIC, reason, None, None, recommended_table=_table_cost(0, cost), **common)


def _describe(
    cardinality: int, seen: int, requests: int, top_share: Mapping[str, float | None], max_rows: int
) -> str:
    if not requests:
        return "No traffic counted yet."
    if not seen:
        return f"Traffic: {requests:,} requests, none with a key valid under the schema."
    return (
        f"Traffic: {requests:,} requests over {seen:,} distinct valid keys; the top 1% of seen keys "
        f"got {top_share['1%']:.0%} of them and the top 10% got {top_share['10%']:.0%} "
        f"(perfectly flat traffic would give 1% and 10%)."
    )


def human_bytes(size: float) -> str:
    """``size`` in B, KiB, MiB or GiB, whichever reads best."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GiB"


def _size(table: Mapping[str, float | None]) -> str:
    build = table["build_seconds"]
    return human_bytes(table["bytes"] or 0) + (
        f", about {build:,.1f} s to build" if build is not None else ""
    )


def measure_model(bundle: Scorer, sample_rows: int = THROUGHPUT_SAMPLE_ROWS, seed: int = 0) -> ModelCost:
    """Scoring throughput on a sample chunk of random keys, and single-instance latency (median)."""
    schema = bundle.schema
    rng = np.random.default_rng(seed)
    n = max(1, min(sample_rows, schema.key_cardinality))
    codes = rng.integers(0, schema.key_cardinality, size=n, dtype=np.int64)
    columns = decode_keys(schema, codes)
    score_keys(bundle, schema, {k: v[:1] for k, v in columns.items()})  # warm caches before timing
    times = []
    for _ in range(3):
        start = time.perf_counter()
        score_keys(bundle, schema, columns)
        times.append(time.perf_counter() - start)
    rows_per_second = n / float(np.median(times))
    single = []
    for i in range(LATENCY_REPEATS):
        one = {k: v[i % n : i % n + 1] for k, v in columns.items()}
        start = time.perf_counter()
        score_keys(bundle, schema, one)
        single.append(time.perf_counter() - start)
    return ModelCost(
        bundle.version,
        round(rows_per_second, 1),
        round(float(np.median(single)) * 1e3, 3),
        score_width(bundle),
    )


def advise(artifacts: Bucket, settings: Settings, *, measure: bool = True) -> Advice:
    """Read the model (if any), the schema and the traffic; measure; recommend.

    Without a model the schema comes from ``schema.json`` and the costs are left out; so they are
    with ``measure=False`` (the dashboard: no model is loaded or timed on a page request, and the
    recommendation, which depends on the key space and the traffic only, is the same).
    """
    bundle: Scorer | None = None
    try:
        # The form predict serves (compiled, where verified): the cost the advice is about.
        bundle = load_current(artifacts, settings).scorer if measure else None
    except (NotFound, ModelNotReady):
        bundle = None
    schema: Schema = bundle.schema if bundle else load_schema(artifacts)
    codes, counts, invalid = valid_key_counts(schema, read_traffic(artifacts, key=list(schema.key)))
    cost = measure_model(bundle, min(THROUGHPUT_SAMPLE_ROWS, settings.table_chunk_rows)) if bundle else None
    return analyze(schema.key_cardinality, codes, counts, invalid, settings.table_max_rows, cost)
