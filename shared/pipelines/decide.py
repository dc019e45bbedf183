"""Who builds the table: the function itself, or a Beam pipeline (and on which runner), and why.

A function instance has a timeout and one machine. The table build stays in the function when
the key space fits its budget, measured rather than guessed:

- rows: at most ``TABLE_MAX_ROWS`` keys (the builder's memory bound: 16 bytes a key), and
- time: ``rows / measured rows per second`` at most ``TABLE_FUNCTION_BUDGET_SECONDS``, where the
  rate is measured on the spot by scoring a sample of real keys with the real model through
  ``shared.tables.keys.score_keys`` (the builder's own scoring path; a bigger model is slower, and the
  measurement sees it).

Otherwise the build goes to the pipeline: a DirectRunner subprocess locally
(``STORAGE_BACKEND=local``), a Dataflow job on GCP (``STORAGE_BACKEND=gcs``); ``PIPELINE_RUNNER``
or ``--runner`` can force any path. A ``Decision`` carries the path and a sentence saying why, for
the log, ``prodml table build`` and ``prodml advise``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

from shared.config import Settings
from shared.contracts import RUNNER_AUTO, BuildPath, StorageBackend, TableStrategy
from shared.scoring import Scorer
from shared.tables.keys import full_chunks, score_keys

SAMPLE_KEYS = 5000  # enough for a stable rate (per-call overhead amortized), a few ms to tens of ms


@dataclass(frozen=True)
class Decision:
    """Where a table build runs and why."""

    path: str  # a BuildPath
    reason: str
    strategy: str  # the strategy the rows were counted for
    rows: int
    rows_per_second: float | None
    expected_seconds: float | None
    budget_seconds: float

    @property
    def in_function(self) -> bool:
        """Whether the function builds the table itself."""
        return self.path == BuildPath.FUNCTION

    def line(self) -> str:
        """One line for a log or a terminal: the path and why."""
        where = (
            "in-process (the in-function builder)"
            if self.in_function
            else f"as a Beam pipeline ({self.path} runner)"
        )
        return f"table build {where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def measure_rows_per_second(bundle: Scorer, sample_keys: int = SAMPLE_KEYS) -> float:
    """Keys per second the model scores in this process, timed on the first ``sample_keys`` keys."""
    schema = bundle.schema
    n = max(1, min(sample_keys, schema.key_cardinality))
    chunk = next(full_chunks(schema, n))
    score_keys(bundle, schema, chunk.columns)  # warm caches (codec, first-call imports) untimed
    start = time.perf_counter()
    score_keys(bundle, schema, chunk.columns)
    return n / max(time.perf_counter() - start, 1e-9)


def planned_rows(bundle: Scorer, settings: Settings, strategy: str, k: int | None) -> tuple[str, int]:
    """The strategy ``auto`` resolves to and how many keys it scores (top_k: at most K).

    ``auto`` is a full table when the key space fits ``TABLE_MAX_ROWS`` (the function can) or
    ``PIPELINE_MAX_ROWS`` (a pipeline can, unless ``PIPELINE_RUNNER=function``), else top_k.
    """
    cardinality = bundle.schema.key_cardinality
    top = min(k or settings.table_top_k, settings.pipeline_max_rows)
    if strategy == TableStrategy.FULL:
        return TableStrategy.FULL, cardinality
    if strategy == TableStrategy.TOP_K:
        return TableStrategy.TOP_K, top
    in_function = settings.pipeline_runner == BuildPath.FUNCTION
    limit = settings.table_max_rows if in_function else settings.pipeline_max_rows
    fits = cardinality <= max(settings.table_max_rows, limit)
    return (TableStrategy.FULL, cardinality) if fits else (TableStrategy.TOP_K, top)


def pipeline_runner(settings: Settings) -> str:
    """The runner of a pipeline: Dataflow next to Cloud Storage, the DirectRunner with local folders."""
    return BuildPath.DATAFLOW if settings.storage_backend == StorageBackend.GCS else BuildPath.DIRECT


def decide(
    rows: int, rows_per_second: float | None, settings: Settings, *, strategy: str, runner: str = RUNNER_AUTO
) -> Decision:
    """Choose the path for a build of ``rows`` keys (``runner``: auto or a ``BuildPath``)."""
    runner = settings.pipeline_runner if runner == RUNNER_AUTO else runner
    budget = settings.table_function_budget_seconds
    expected = rows / rows_per_second if rows_per_second else None
    # Every outcome carries the same numbers: bound once, and checked, unlike a **dict.
    decision = functools.partial(
        Decision,
        strategy=strategy,
        rows=rows,
        rows_per_second=round(rows_per_second, 1) if rows_per_second else None,
        expected_seconds=round(expected, 2) if expected is not None else None,
        budget_seconds=budget,
    )
    estimate = (
        f"{rows:,} keys at {rows_per_second:,.0f} keys/s measured is about {expected:,.1f} s"
        if expected is not None and rows_per_second
        else f"{rows:,} keys"
    )
    if runner != RUNNER_AUTO:
        if runner not in tuple(BuildPath):
            raise ValueError(f"runner {runner!r} is not auto or one of {', '.join(BuildPath)}")
        return decision(runner, f"{runner} asked for ({estimate})")
    if rows > settings.table_max_rows:
        why = f"{estimate}; over TABLE_MAX_ROWS={settings.table_max_rows:,} keys a function holds"
        return decision(pipeline_runner(settings), why)
    if expected is not None and expected > budget:
        why = f"{estimate}, over TABLE_FUNCTION_BUDGET_SECONDS={budget:g}"
        return decision(pipeline_runner(settings), why)
    why = f"{estimate}, within TABLE_FUNCTION_BUDGET_SECONDS={budget:g} and TABLE_MAX_ROWS"
    return decision(BuildPath.FUNCTION, why)


def decide_for_model(
    bundle: Scorer,
    settings: Settings,
    *,
    strategy: str = TableStrategy.AUTO,
    k: int | None = None,
    runner: str = RUNNER_AUTO,
) -> Decision:
    """Measure the model's scoring rate and decide where its table build runs."""
    resolved, rows = planned_rows(bundle, settings, strategy, k)
    rate = measure_rows_per_second(bundle) if bundle.schema.key else None
    return decide(rows, rate, settings, strategy=resolved, runner=runner)
