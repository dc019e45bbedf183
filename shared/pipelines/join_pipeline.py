"""The join of the prediction log with the labels as an Apache Beam pipeline, past JOIN_MAX_ROWS.

The in-function join (``shared.feedback.join``) holds every log row and label row of both stores
in one process; beyond JOIN_MAX_ROWS it refuses (``JoinTooLarge``) and names this pipeline. It
runs the same code, with the ids spread over shards::

    Create(log objects)    -> Reshuffle -> ReadObjects -> (shard of id, rows) --+
    Create(labels objects) -> Reshuffle -> ReadObjects -> (shard of id, rows) --+-> CoGroupByKey
      -> JoinShard: join.join + maturity.mature  -> pipelines/join/<run id>/rows-<shard>.parquet
                                                 -> (model version, rows) -> GroupByKey
                                                    -> VersionReport: report.version_report
                                                 -> shard summary (counts, unmatched ids)
    Create([None]) -> Report(side inputs) -> report.assemble -> pipelines/join/<run id>.json,
                                                               feedback/live.json

- Every row of an id lands in one shard (a stable hash of the id), and ``join.join`` decides an
  id from that id's own rows alone (its dedupe rules order by the rows' fields), so joining each
  shard with ``join.join`` and summing the shards' counts is the in-function join; the rows of a
  shard are matured at the one moment the driver fixed (``maturity.mature``).
- Live quality and serving skew per version need all of that version's rows (ROC AUC, PSI):
  ``VersionReport`` gets them grouped by version, in the in-function join's order (time, object,
  row), and calls ``report.version_report``, so every float is the in-function one. One version's
  rows are held by one worker: the bound of this pipeline is a version's rows, not all of them.
- The document is ``report.assemble``'s (``prodml-live/1``, docs/feedback.md) plus the run's
  fields (``run_id``, ``shards``, ``report``, ``joined_rows``); written to the run's report and to
  ``feedback/live.json``, where the train function's own report goes after each labels file.
- The joined rows (every logged id once, its label, ``state`` and ``outcome``) are one Parquet
  part per shard, for training on served traffic: a part's name is its shard's, so a retried
  bundle rewrites the same object.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from shared.config import Settings
from shared.contracts import (
    JOIN_REPORT_PREFIX,
    PREDICTIONS_PREFIX,
    STORED_LABELS_PREFIX,
    LaunchStatus,
)
from shared.errors import ConfigError, NotFound, PredictionLogError, StoredLabelsError
from shared.feedback import join, live, maturity, report
from shared.logs import get_logger
from shared.schema import Schema, load_schema
from shared.storage import Bucket, artifacts_bucket, predictions_bucket

log = get_logger(__name__)

RESULT_FILE = "result.json"
SHARD_BYTES = 32 * 1024 * 1024  # stored (compressed) bytes of log and labels objects per shard
MAX_SHARDS = 4096
LOG, LABELS = "log", "labels"  # the two sides of the CoGroupByKey
ORDER = ("time", "object", "row")  # the in-function join's order of its rows (``join.join``)


@dataclasses.dataclass(frozen=True)
class JoinJob:
    """One planned run: what every step needs to know, fixed by the driver."""

    run_id: str
    shards: int
    now: float  # the moment maturity is decided at, one for every shard
    log_objects: int
    label_objects: int
    temp_dir: str

    @property
    def report_blob(self) -> str:
        """The run's report in the artifacts bucket."""
        return f"{JOIN_REPORT_PREFIX}{self.run_id}.json"

    @property
    def rows_prefix(self) -> str:
        """Where the run's joined rows go, one part per shard."""
        return f"{JOIN_REPORT_PREFIX}{self.run_id}/"

    def part_name(self, shard: int) -> str:
        """The joined rows of one shard."""
        return f"{self.rows_prefix}rows-{shard:05d}.parquet"


@dataclasses.dataclass(frozen=True)
class ShardSummary:
    """What one shard's join counted (object counts are the driver's), and its rows part."""

    counts: join.JoinCounts
    unmatched_ids: tuple[str, ...]
    totals: dict[str, int]
    part: str | None
    rows: int


def shard_of(ids: pd.Series, shards: int) -> np.ndarray:
    """The shard of each id: a stable hash of its text (the same on every worker and every run:
    Python's own ``hash`` of a str is salted per process), modulo ``shards``."""
    text = np.asarray(ids.astype(str), dtype=object)
    return (pd.util.hash_array(text) % np.uint64(shards)).astype(np.int64)


def shard_count(sizes: Iterable[int]) -> int:
    """Shards for objects of these stored sizes: about ``SHARD_BYTES`` each, 1 to ``MAX_SHARDS``."""
    return max(1, min(MAX_SHARDS, math.ceil(sum(sizes) / SHARD_BYTES)))


class ReadObjects(beam.DoFn):
    """Reads one log or stored labels object, as the in-function join does, and splits its rows
    by shard; an object that cannot be read is skipped and named (tagged output)."""

    UNREADABLE = "unreadable"

    def __init__(self, settings: Settings, side: str, shards: int) -> None:
        self.settings = settings
        self.side = side
        self.shards = shards
        self.bucket: Bucket | None = None

    def setup(self) -> None:
        """Open the bucket the side's objects are in (once per worker)."""
        self.bucket = (
            predictions_bucket(self.settings) if self.side == LOG else artifacts_bucket(self.settings)
        )

    def process(self, name: str) -> Iterator[Any]:
        """Yield ``(shard, rows of that shard)`` for each shard the object has ids in."""
        assert self.bucket is not None
        try:
            if self.side == LOG:
                frame = join.read_log_frame(self.bucket, name, self.settings)
            else:
                frame = join.read_labels_frame(self.bucket, name)
        except (PredictionLogError, StoredLabelsError, NotFound) as exc:
            log.warning(f"skipping {self.side} object {name!r}: {exc}")
            yield beam.pvalue.TaggedOutput(self.UNREADABLE, (self.side, name))
            return
        shard = shard_of(frame["id"], self.shards)
        for value in np.unique(shard):
            yield int(value), frame[shard == value]


class JoinShard(beam.DoFn):
    """``join.join`` and ``maturity.mature`` on the rows of one shard of ids; writes its joined
    rows; yields each version's rows (keyed by version) and the shard's summary (tagged)."""

    SUMMARY = "summary"

    def __init__(self, settings: Settings, job: JoinJob) -> None:
        self.settings = settings
        self.job = job
        self.default: str | float | None = None
        self.artifacts: Bucket | None = None

    def setup(self) -> None:
        """Open the artifacts bucket and resolve LABEL_DEFAULT against the schema (once per worker)."""
        self.artifacts = artifacts_bucket(self.settings)
        self.default = maturity.label_default(load_schema(self.artifacts), self.settings)

    def process(self, element: tuple[int, dict[str, Iterable[pd.DataFrame]]]) -> Iterator[Any]:
        """Join the shard; yield ``(version, rows)`` per version and the ``ShardSummary``."""
        assert self.artifacts is not None
        shard, sides = element
        joined = join.join(join.log_rows(list(sides[LOG])), join.label_rows(list(sides[LABELS])))
        rows = maturity.mature(joined.rows, self.job.now, self.settings.label_window, self.default)
        part = None
        if len(rows):
            part = self.job.part_name(shard)
            buffer = io.BytesIO()
            rows.to_parquet(buffer, index=False)
            self.artifacts.write(part, buffer.getvalue(), content_type="application/vnd.apache.parquet")
        for version, group in rows.groupby("model_version", sort=True):
            yield str(version), group
        summary = ShardSummary(joined.counts, joined.unmatched_ids, live.counts(rows), part, len(rows))
        yield beam.pvalue.TaggedOutput(self.SUMMARY, summary)


class VersionReport(beam.DoFn):
    """One version's live quality and serving skew: ``report.version_report`` on all its rows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema: Schema | None = None
        self.artifacts: Bucket | None = None

    def setup(self) -> None:
        """Open the artifacts bucket and read ``schema.json`` once per worker."""
        self.artifacts = artifacts_bucket(self.settings)
        self.schema = load_schema(self.artifacts)

    def process(self, element: tuple[str, Iterable[pd.DataFrame]]) -> Iterator[dict[str, Any]]:
        """The version's entry of the report."""
        assert self.artifacts is not None and self.schema is not None
        version, groups = element
        # The in-function join's row order, so that every sum (log loss, means) adds up alike.
        rows = pd.concat(list(groups), ignore_index=True).sort_values(list(ORDER), na_position="first")
        rows = rows.reset_index(drop=True)
        yield report.version_report(version, rows, self.schema, self.artifacts, self.settings)


class Report(beam.DoFn):
    """Assembles the report from the shards' summaries and the versions' entries; writes it."""

    def __init__(self, settings: Settings, job: JoinJob) -> None:
        self.settings = settings
        self.job = job

    def process(
        self,
        _: Any,
        summaries: list[ShardSummary],
        versions: list[dict[str, Any]],
        unreadable: list[tuple[str, str]],
    ) -> Iterator[dict[str, Any]]:
        """Write ``pipelines/join/<run id>.json`` and ``feedback/live.json``; yield the report."""
        artifacts = artifacts_bucket(self.settings)
        schema = load_schema(artifacts)
        job = self.job
        skipped = {side: sorted(n for s, n in unreadable if s == side) for side in (LOG, LABELS)}
        counts = _sum_counts(
            [s.counts for s in summaries],
            log_objects=job.log_objects,
            unreadable_logs=len(skipped[LOG]),
            label_objects=job.label_objects,
            unreadable_labels=len(skipped[LABELS]),
        )
        summary = report.JoinSummary(
            counts,
            tuple(sorted(i for s in summaries for i in s.unmatched_ids)[: join.LISTED]),
            tuple([*skipped[LOG], *skipped[LABELS]][: join.LISTED]),
        )
        totals = live.counts(pd.DataFrame({maturity.STATE: []}))
        for s in summaries:
            totals = {k: totals[k] + s.totals[k] for k in totals}
        ordered = sorted(versions, key=lambda v: str(v["version"]))
        ages = report.serving_ages(artifacts, self.settings, job.now)
        document = report.assemble(schema, self.settings, job.now, summary, totals, ordered, ages)
        parts = sorted(s.part for s in summaries if s.part)
        document.update(
            run_id=job.run_id,
            shards=job.shards,
            report=job.report_blob,
            joined_rows={
                "prefix": job.rows_prefix,
                "parts": len(parts),
                "rows": sum(s.rows for s in summaries),
            },
        )
        body = json.dumps(document, indent=2, allow_nan=False, default=str) + "\n"
        artifacts.write(job.report_blob, body.encode(), content_type="application/json")
        report.write_report(artifacts, document)
        with FileSystems.create(FileSystems.join(job.temp_dir, RESULT_FILE)) as out:
            out.write(body.encode())
        log.info(
            f"join pipeline: {counts.logged} log rows, {counts.label_rows} label rows, "
            f"{len(ordered)} versions; report {job.report_blob}",
            extra={"fields": {"run_id": job.run_id, "shards": job.shards}},
        )
        yield document


def _sum_counts(shards: list[join.JoinCounts], **objects: int) -> join.JoinCounts:
    """The shards' counts added field by field, with the object counts (``objects``) the driver
    and the readers know (a shard reads no objects)."""
    total = {f.name: sum(getattr(c, f.name) for c in shards) for f in dataclasses.fields(join.JoinCounts)}
    return join.JoinCounts(**{**total, **objects})


def build_pipeline(
    pipeline: beam.Pipeline, settings: Settings, job: JoinJob, logs: list[str], labels: list[str]
) -> beam.PCollection:
    """Add the join's transforms to ``pipeline``; the output holds the report."""
    read = {}
    for side, names in ((LOG, logs), (LABELS, labels)):
        read[side] = (
            pipeline
            | f"{side} objects" >> beam.Create(names, reshuffle=False)
            | f"{side} spread" >> beam.Reshuffle()
            | f"read {side}"
            >> beam.ParDo(ReadObjects(settings, side, job.shards)).with_outputs(
                ReadObjects.UNREADABLE, main="rows"
            )
        )
    joined = (
        {LOG: read[LOG].rows, LABELS: read[LABELS].rows}
        | "by shard" >> beam.CoGroupByKey()
        | "join" >> beam.ParDo(JoinShard(settings, job)).with_outputs(JoinShard.SUMMARY, main="versions")
    )
    versions = (
        joined.versions
        | "by version" >> beam.GroupByKey()
        | "version report" >> beam.ParDo(VersionReport(settings))
    )
    unreadable = (read[LOG][ReadObjects.UNREADABLE], read[LABELS][ReadObjects.UNREADABLE]) | beam.Flatten()
    return (
        pipeline
        | "once" >> beam.Create([None])
        | "report"
        >> beam.ParDo(
            Report(settings, job),
            summaries=beam.pvalue.AsList(joined[JoinShard.SUMMARY]),
            versions=beam.pvalue.AsList(versions),
            unreadable=beam.pvalue.AsList(unreadable),
        )
    )


def _listed(bucket: Bucket, prefix: str) -> tuple[list[str], list[int]]:
    """Names and sizes of the ``.npz`` objects under ``prefix`` (what the in-function join reads)."""
    infos = [i for i in bucket.list(prefix) if i.name.endswith(".npz")]
    return [i.name for i in infos], [i.size for i in infos]


def run(
    settings: Settings, beam_argv: list[str], *, run_id: str, temp_dir: str, shards: int | None = None
) -> dict[str, Any]:
    """Join every log object with every stored labels object; return the report (on Dataflow:
    that the job was launched). ``shards``: how many shards of ids (default: by stored size)."""
    if shards is not None and not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(f"--shards={shards} is not 1 to {MAX_SHARDS}")
    artifacts, predictions = artifacts_bucket(settings), predictions_bucket(settings)
    # No schema, or a LABEL_DEFAULT that is no label: say so now, not on every worker.
    maturity.label_default(load_schema(artifacts), settings)
    logs, log_sizes = _listed(predictions, PREDICTIONS_PREFIX)
    labels, label_sizes = _listed(artifacts, STORED_LABELS_PREFIX)
    job = JoinJob(
        run_id=run_id,
        shards=shards or shard_count([*log_sizes, *label_sizes]),
        now=time.time(),
        log_objects=len(logs),
        label_objects=len(labels),
        temp_dir=FileSystems.join(temp_dir, f"join-{run_id}"),
    )
    options = PipelineOptions(beam_argv)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, settings, job, logs, labels)
    log.info(
        f"join pipeline: {len(logs)} log objects, {len(labels)} labels objects, {job.shards} shards",
        extra={"fields": {"run_id": run_id}},
    )
    outcome = pipeline.run()
    if options.get_all_options().get("runner") == "DataflowRunner":
        return {
            "status": LaunchStatus.LAUNCHED,
            "message": f"Dataflow job for run {run_id} submitted",
            "run_id": run_id,
        }
    outcome.wait_until_finish()
    with FileSystems.open(FileSystems.join(job.temp_dir, RESULT_FILE)) as f:
        result: dict[str, Any] = json.loads(f.read())
    FileSystems.delete([job.temp_dir])
    return result
