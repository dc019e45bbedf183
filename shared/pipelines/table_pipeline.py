"""The static table build as an Apache Beam pipeline: the same table, scored by many workers.

The in-function builder (``shared.tables.build.build_table``) scores every key in one process; a
function cannot do 10^8 keys inside its timeout. This pipeline does the same build with Beam::

    Create(blocks of key codes) -> Reshuffle -> BatchElements -> ScoreBlocks -> part files
                                                        (model loaded once per worker, in setup)
    Create([None]) -> Publish(side input: every part) -> tables/<model version>/<build>.npz, pointer

It stays one module (a little over 300 lines): the DoFns and the pipeline that wires them read
best together.

What it shares with the in-function builder, called rather than copied:

- the plan (strategy, which keys, hit rate from traffic) and the "already current" check:
  ``shared.tables.plan.plan_or_skip`` (``plan_build`` and ``is_same_build``), with
  ``PIPELINE_MAX_ROWS`` as the limit of a full build instead of ``TABLE_MAX_ROWS``;
- the keys and their scores: ``shared.tables.keys.full_chunks`` / ``shared.tables.keys.decode_keys`` and
  ``shared.tables.keys.score_keys`` (the form predict serves: ``shared.compiled.current``), so a
  score is the same float;
- the output: ``table.write_table`` (one npz of its own, ``tables/<model version>/<strategy>-<build
  id>.npz``, same arrays, same meta fields) and
  ``shared.tables.switch.switch_to_table`` (compare-and-swap of ``tables/current.json``, unless the
  model changed during the build or a newer model's table is current).

Scored parts go to the run's temporary folder (``--temp_location``: a local folder for the
DirectRunner, ``gs://`` on Dataflow), not through Beam's shuffle, so the publishing step holds
the finished arrays once (16 bytes a key) and reads the parts one at a time. Only the parts that
Beam committed (the side input) are used: a retried bundle's stray part is ignored, and a missing
or doubled key stops the build before anything is written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from shared.compiled.current import load_current
from shared.config import Settings
from shared.contracts import CURRENT_MODEL, BuildStatus, LaunchStatus
from shared.errors import ModelChanged, ModelNotReady, NotFound
from shared.logs import get_logger
from shared.scoring import Scorer
from shared.storage import artifacts_bucket
from shared.tables.format import build_blob, new_build_id, write_table
from shared.tables.keys import decode_keys, non_key_defaults, score_keys, score_width
from shared.tables.plan import BuildPlan, BuildRequest, plan_or_skip
from shared.tables.result import BuildResult
from shared.tables.switch import prune_old_builds, switch_to_table

log = get_logger(__name__)

MAX_BLOCKS = 4096  # Create elements: enough to spread over hundreds of workers, small graph
MAX_BLOCK_ROWS = 10_000
RESULT_FILE = "result.json"


@dataclasses.dataclass(frozen=True)
class TableJob:
    """One planned pipeline build: what the workers and the publishing step need to know."""

    run_id: str
    model_version: str
    model_generation: int
    plan: BuildPlan
    codes: np.ndarray | None  # sorted codes of a top_k build; None for full (codes 0..rows-1)
    block_rows: int
    batch_blocks: int  # BatchElements' largest batch, in blocks (TABLE_CHUNK_ROWS keys)
    temp_dir: str
    started: float  # time.time() when the driver started: build_seconds counts from here

    def blocks(self) -> list[Any]:
        """The Create elements: ``(start, stop)`` ranges of codes, or slices of the top_k codes."""
        rows = self.plan.rows
        starts = range(0, rows, self.block_rows)
        if self.codes is None:
            return [(s, min(s + self.block_rows, rows)) for s in starts]
        return [self.codes[s : s + self.block_rows] for s in starts]


def block_codes(block: Any) -> np.ndarray:
    """The key codes of one block (a range, or an array of codes)."""
    if isinstance(block, tuple):
        start, stop = block
        return np.arange(start, stop, dtype=np.int64)
    return np.asarray(block, dtype=np.int64)


def load_model(settings: Settings, generation: int | None = None) -> tuple[Scorer, int]:
    """The current model in the form predict serves (``shared.compiled.current``) and its
    generation; ``ModelChanged`` if it is not ``generation``."""
    loaded = load_current(artifacts_bucket(settings), settings)
    if generation is not None and loaded.info.generation != generation:
        raise ModelChanged(
            f"{CURRENT_MODEL} is now generation {loaded.info.generation}, not {generation} the build was "
            "planned for: its own build follows its promotion"
        )
    return loaded.scorer, loaded.info.generation


class ScoreBlocks(beam.DoFn):
    """Scores a batch of key blocks with the model loaded once per worker; writes one part file."""

    def __init__(self, settings: Settings, model_generation: int, temp_dir: str) -> None:
        self.settings = settings
        self.model_generation = model_generation
        self.temp_dir = temp_dir
        self.bundle: Scorer | None = None

    def setup(self) -> None:
        """Load the planned model generation (once per worker, not per element)."""
        self.bundle, _ = load_model(self.settings, self.model_generation)

    def process(self, batch: list[Any]) -> Iterator[str]:
        """Score every key of the batch; yield the part file's path."""
        assert self.bundle is not None
        codes = np.concatenate([block_codes(b) for b in batch])
        schema = self.bundle.schema
        scores = score_keys(self.bundle, schema, decode_keys(schema, codes))
        path = FileSystems.join(self.temp_dir, f"part-{int(codes[0]):019d}-{uuid.uuid4().hex[:8]}.npz")
        buffer = io.BytesIO()
        np.savez(buffer, codes=codes, scores=np.asarray(scores, dtype=np.float64))
        with FileSystems.create(path) as out:
            out.write(buffer.getvalue())
        yield path


class Publish(beam.DoFn):
    """Assembles the parts into one table, writes it and switches the pointer like the builder."""

    def __init__(self, settings: Settings, job: TableJob) -> None:
        self.settings = settings
        self.job = job

    def process(self, _: Any, parts: list[str]) -> Iterator[dict[str, Any]]:
        """Write the table's own object and switch ``tables/current.json`` to it; yield the result."""
        job, settings = self.job, self.settings
        bundle, _gen = load_model(settings, job.model_generation)
        codes, scores = assemble(job, parts, score_width(bundle))
        seconds = time.time() - job.started
        now = datetime.now(UTC)
        built_at = now.isoformat()
        plan = job.plan
        blob = build_blob(bundle.version, plan.strategy, new_build_id(now))
        meta = {  # the fields and values of shared.tables.build.build_table's meta, plus who built it
            "rows": plan.rows,
            "model_version": bundle.version,
            "model_generation": job.model_generation,
            "model_form": str(bundle.form),
            "key": list(bundle.schema.key),
            "strategy": plan.strategy,
            "k": plan.k,
            "cardinality": bundle.schema.key_cardinality,
            "build_seconds": round(seconds, 3),
            "expected_hit_rate": plan.expected_hit_rate,
            "traffic_requests": plan.traffic_requests,
            "traffic_through": plan.traffic_through,
            "non_key_defaults": non_key_defaults(bundle.schema),
            "built_at": built_at,
            "built_by": "pipeline",
            "pipeline_parts": len(parts),
        }
        artifacts = artifacts_bucket(settings)
        write_table(artifacts, blob, codes, scores, meta)
        switched, note = switch_to_table(
            artifacts, settings, bundle, job.model_generation, plan, built_at, blob
        )
        prune_old_builds(artifacts, bundle.version)
        result = BuildResult(
            BuildStatus.BUILT,
            f"built {plan.rows} rows ({plan.strategy}) for model {bundle.version!r} in {seconds:.1f} s "
            f"with a Beam pipeline ({len(parts)} parts); {note}",
            strategy=plan.strategy,
            model_version=bundle.version,
            model_generation=job.model_generation,
            table=blob,
            rows=plan.rows,
            build_seconds=round(seconds, 3),
            rows_per_second=round(plan.rows / seconds, 1) if seconds > 0 else None,
            expected_hit_rate=plan.expected_hit_rate,
            pointer_switched=switched,
            details={"k": plan.k, "traffic_requests": plan.traffic_requests, "parts": len(parts)},
        ).to_dict()
        log.info(f"table pipeline: {result['message']}", extra={"fields": result})
        with FileSystems.create(FileSystems.join(job.temp_dir, RESULT_FILE)) as out:
            out.write(json.dumps(result).encode())
        FileSystems.delete(list(parts))
        yield result


def assemble(job: TableJob, parts: Iterable[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """The table's sorted codes and their scores from the part files; every key exactly once."""
    rows = job.plan.rows
    codes = np.arange(rows, dtype=np.int64) if job.codes is None else np.asarray(job.codes, dtype=np.int64)
    scores = np.empty((rows, width) if width > 1 else rows, dtype=np.float64)
    filled = np.zeros(rows, dtype=bool)
    for path in parts:
        with FileSystems.open(path) as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
            part_codes, part_scores = npz["codes"], npz["scores"]
        pos = np.minimum(np.searchsorted(codes, part_codes), rows - 1)
        if not np.array_equal(codes[pos], part_codes) or filled[pos].any():
            raise RuntimeError(f"part {path} holds keys outside the plan or scored twice")
        scores[pos] = part_scores
        filled[pos] = True
    if not filled.all():
        raise RuntimeError(f"{int((~filled).sum())} of {rows} keys were not scored: no table written")
    return codes, scores


def plan_job(
    settings: Settings, request: BuildRequest, *, run_id: str, temp_dir: str
) -> TableJob | BuildResult:
    """Load the model and plan the build as the builder does; a ``BuildResult`` when there is none."""
    started = time.time()
    artifacts = artifacts_bucket(settings)
    try:
        bundle, generation = load_model(settings)
    except NotFound:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD, f"no model yet: {artifacts.name}/{CURRENT_MODEL} does not exist"
        )
    except ModelNotReady as exc:
        return BuildResult(BuildStatus.NOTHING_TO_BUILD, f"cannot load {CURRENT_MODEL}: {exc}")
    schema = bundle.schema
    if not schema.key:
        return BuildResult(
            BuildStatus.NOTHING_TO_BUILD,
            "the model's schema has no key features: there is no table to build",
            model_version=bundle.version,
            model_generation=generation,
        )
    # A pipeline's limit is PIPELINE_MAX_ROWS: the builder's own plan, with the larger limit.
    wide = dataclasses.replace(settings, table_max_rows=settings.pipeline_max_rows)
    plan = plan_or_skip(artifacts, wide, schema, (bundle.version, generation), request)
    if isinstance(plan, BuildResult):
        return plan
    codes = None if plan.top is None else np.sort(plan.top.codes)
    block_rows = min(MAX_BLOCK_ROWS, max(1, math.ceil(plan.rows / MAX_BLOCKS)))
    return TableJob(
        run_id=run_id,
        model_version=bundle.version,
        model_generation=generation,
        plan=plan,
        codes=codes,
        block_rows=block_rows,
        batch_blocks=max(1, settings.table_chunk_rows // block_rows),
        temp_dir=FileSystems.join(temp_dir, f"table-{run_id}"),
        started=started,
    )


def build_pipeline(pipeline: beam.Pipeline, settings: Settings, job: TableJob) -> beam.PCollection:
    """Add the table build's transforms to ``pipeline``; the output holds the result dict."""
    parts = (
        pipeline
        | "KeyBlocks" >> beam.Create(job.blocks(), reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=job.batch_blocks)
        | "Score" >> beam.ParDo(ScoreBlocks(settings, job.model_generation, job.temp_dir))
    )
    return (
        pipeline
        | "Once" >> beam.Create([None])
        | "Publish" >> beam.ParDo(Publish(settings, job), parts=beam.pvalue.AsList(parts))
    )


def run(
    settings: Settings, request: BuildRequest, beam_argv: list[str], *, run_id: str, temp_dir: str
) -> dict[str, Any]:
    """Plan, run and (on the DirectRunner) wait for the build; return the result as a dict.

    On Dataflow the job is submitted and this returns ``{"status": "launched", ...}`` at once:
    the job writes the table and switches the pointer itself, and logs its result.
    """
    job = plan_job(settings, request, run_id=run_id, temp_dir=temp_dir)
    if isinstance(job, BuildResult):
        log.info(f"table pipeline: {job.status}: {job.message}")
        return job.to_dict()
    options = PipelineOptions(beam_argv)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, settings, job)
    log.info(
        f"table pipeline: scoring {job.plan.rows} keys ({job.plan.strategy}) of model {job.model_version!r} "
        f"in {len(job.blocks())} blocks of {job.block_rows}",
        extra={"fields": {"run_id": run_id, "rows": job.plan.rows, "temp_dir": job.temp_dir}},
    )
    outcome = pipeline.run()
    if options.get_all_options().get("runner") == "DataflowRunner":
        return {
            "status": LaunchStatus.LAUNCHED,
            "message": f"Dataflow job for run {run_id} submitted",
            "run_id": run_id,
        }
    outcome.wait_until_finish()
    result_path = FileSystems.join(job.temp_dir, RESULT_FILE)
    with FileSystems.open(result_path) as f:
        result: dict[str, Any] = json.loads(f.read())
    FileSystems.delete([job.temp_dir])
    return result
