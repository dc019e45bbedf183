"""Bulk validation (a backfill) as an Apache Beam pipeline: many files checked in parallel.

The train function validates one file per event; a backfill of thousands of files (tens of GB)
needs many workers. This pipeline applies the train function's own checks to every object named
(names, or prefixes ending in ``/``) in the data bucket::

    Create(objects) -> Reshuffle -> ValidateObject -> accepted | quarantined | gone
                                         |-> rows of accepted files -> SampleRows -> reference_stats

- ``ValidateObject`` (schema loaded once per worker) does what the trainer does before training:
  ``validation.check_size`` on the listed size, download that generation, ``validation.validate_file``;
  a ``ValidationFailed`` goes to ``quarantine.quarantine_object`` with its rule, message and
  details, so a file gets the very reason record the train function would give it.
- Accepted files stay where they are: ``prodml train`` (a normal full retrain) reads them.
- ``SampleRows`` keeps a uniform sample of at most ``SAMPLE_ROWS`` accepted rows (each row gets a
  random key; every accumulator keeps the smallest keys, so merging samples is exact), and
  ``monitoring.reference_stats`` of the sample describes the backfill (a report: drift checks read
  the live model's card, whose statistics the retrain on these files computes itself).

The report (every object's outcome, the counts, the reference statistics) is written to
``pipelines/validate/<run id>.json`` in the artifacts bucket and printed by the CLI.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from shared.config import Settings
from shared.contracts import (
    QUARANTINE_PREFIX,
    REASON_SUFFIX,
    VALIDATION_REPORT_PREFIX,
    LaunchStatus,
    ValidationStatus,
)
from shared.data.monitoring import reference_stats
from shared.data.quarantine import quarantine_object
from shared.data.validation import check_size, validate_file
from shared.errors import NotFound, ValidationFailed
from shared.logs import get_logger
from shared.schema import Schema, load_schema
from shared.storage import Bucket, artifacts_bucket, data_bucket

log = get_logger(__name__)

SAMPLE_ROWS = 100_000
RESULT_FILE = "result.json"
_SAMPLE_KEY = "__sample_key__"


def list_objects(data: Bucket, objects: list[str]) -> list[tuple[str, int, int]]:
    """``(name, generation, size)`` of every object named or under a prefix (ending in ``/``).

    Quarantined files and folders are left out; a name that does not exist raises ``NotFound``.
    """
    found: dict[str, tuple[str, int, int]] = {}
    for item in objects:
        infos = data.list(item) if item.endswith("/") else [data.stat(item)]
        for info in infos:
            if (
                info.name.endswith("/")
                or info.name.startswith(QUARANTINE_PREFIX)
                or info.name.endswith(REASON_SUFFIX)
            ):
                continue
            found[info.name] = (info.name, info.generation, info.size)
    return sorted(found.values())


class ValidateObject(beam.DoFn):
    """The train function's checks on one object; quarantines it when it fails them."""

    SAMPLE = "sample"

    def __init__(self, settings: Settings, sample_rows: int) -> None:
        self.settings = settings
        self.sample_rows = sample_rows
        self.schema: Schema | None = None
        self.data: Bucket | None = None

    def setup(self) -> None:
        """Open the data bucket and read ``schema.json`` once per worker."""
        self.data = data_bucket(self.settings)
        self.schema = load_schema(artifacts_bucket(self.settings))

    def process(self, item: tuple[str, int, int]) -> Iterator[Any]:
        """Yield the object's outcome; for an accepted file, also a row sample (tagged output)."""
        assert self.data is not None and self.schema is not None
        name, generation, size = item
        outcome: dict[str, Any] = {"object": name, "generation": generation, "size": size}
        try:
            check_size(size, self.settings)
            with tempfile.TemporaryDirectory(prefix="prodml-validate-") as folder:
                path = Path(folder) / "data"
                try:
                    info = self.data.download(name, path)
                except NotFound:
                    info = None
                if info is None or info.generation != generation:
                    yield {
                        **outcome,
                        "status": ValidationStatus.GONE,
                        "message": "replaced or deleted before it was read",
                    }
                    return
                validated = validate_file(path, name, self.schema, self.settings)
        except ValidationFailed as failure:
            target = quarantine_object(self.data, name, generation, failure)
            yield {
                **outcome,
                "status": ValidationStatus.QUARANTINED,
                "rule": failure.rule,
                "message": failure.message,
                "quarantined_as": target,
            }
            return
        frame = validated.frame
        yield {
            **outcome,
            "status": ValidationStatus.ACCEPTED,
            "rows": int(len(frame)),
            "dropped_rows": validated.dropped_rows,
        }
        yield beam.pvalue.TaggedOutput(self.SAMPLE, _keyed_sample(frame, name, generation, self.sample_rows))


def _keyed_sample(frame: pd.DataFrame, name: str, generation: int, cap: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``, each with a uniform random key (seeded by the file)."""
    seed = int.from_bytes(hashlib.sha256(f"{name}@{generation}".encode()).digest()[:8], "big")
    keys = np.random.default_rng(seed).random(len(frame))
    keyed = frame.assign(**{_SAMPLE_KEY: keys})
    return keyed.nsmallest(cap, _SAMPLE_KEY) if len(keyed) > cap else keyed


class SampleRows(beam.CombineFn):
    """A uniform sample of at most ``cap`` rows of all frames: the rows with the smallest keys."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def create_accumulator(self) -> pd.DataFrame | None:
        """No rows yet."""
        return None

    def add_input(self, accumulator: pd.DataFrame | None, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Keep the ``cap`` smallest keys of both."""
        return self.merge_accumulators([accumulator, frame])

    def merge_accumulators(self, accumulators: Any) -> pd.DataFrame | None:
        """Concatenate and keep the ``cap`` smallest keys (the same rows whatever the merge order)."""
        frames: list[pd.DataFrame] = [a for a in accumulators if a is not None and len(a)]
        if not frames:
            return None
        merged = pd.concat(frames, ignore_index=True)
        return merged.nsmallest(self.cap, _SAMPLE_KEY) if len(merged) > self.cap else merged

    def extract_output(self, accumulator: pd.DataFrame | None) -> pd.DataFrame | None:
        """The sample, in key order, without its keys."""
        if accumulator is None:
            return None
        return accumulator.sort_values(_SAMPLE_KEY).drop(columns=[_SAMPLE_KEY]).reset_index(drop=True)


class Report(beam.DoFn):
    """Writes the run's report (outcomes, counts, reference statistics) and yields it."""

    def __init__(self, settings: Settings, run_id: str, temp_dir: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.temp_dir = temp_dir

    def process(self, _: Any, outcomes: list[dict[str, Any]], samples: list[Any]) -> Iterator[dict[str, Any]]:
        """Assemble the report, store it in the artifacts bucket and the run's temp folder."""
        artifacts = artifacts_bucket(self.settings)
        schema = load_schema(artifacts)
        sample = samples[0] if samples else None
        ordered = sorted(outcomes, key=lambda o: o["object"])
        counts: dict[str, int] = {s.value: sum(o["status"] == s for o in ordered) for s in ValidationStatus}
        report: dict[str, Any] = {
            "run_id": self.run_id,
            "finished_at": datetime.now(UTC).isoformat(),
            "objects": len(ordered),
            **counts,
            "accepted_rows": sum(int(o.get("rows", 0)) for o in ordered),
            "sampled_rows": 0 if sample is None else int(len(sample)),
            "reference": None if sample is None else reference_stats(sample, schema),
            "outcomes": ordered,
            "report": f"{VALIDATION_REPORT_PREFIX}{self.run_id}.json",
        }
        body = json.dumps(report, indent=1, default=str).encode()
        artifacts.write(report["report"], body, content_type="application/json")
        with FileSystems.create(FileSystems.join(self.temp_dir, RESULT_FILE)) as out:
            out.write(body)
        log.info(
            f"validate pipeline: {len(ordered)} objects: "
            + ", ".join(f"{counts[s]} {s}" for s in ValidationStatus)
            + f"; report {report['report']}",
            extra={"fields": {"run_id": self.run_id, **counts}},
        )
        yield report


def build_pipeline(
    pipeline: beam.Pipeline,
    settings: Settings,
    items: list[tuple[str, int, int]],
    *,
    run_id: str,
    temp_dir: str,
    sample_rows: int = SAMPLE_ROWS,
) -> beam.PCollection:
    """Add the validation's transforms to ``pipeline``; the output holds the report."""
    results = (
        pipeline
        | "Objects" >> beam.Create(items, reshuffle=False)
        | "Spread" >> beam.Reshuffle()
        | "Validate"
        >> beam.ParDo(ValidateObject(settings, sample_rows)).with_outputs(
            ValidateObject.SAMPLE, main="outcomes"
        )
    )
    sample = results[ValidateObject.SAMPLE] | "Sample" >> beam.CombineGlobally(SampleRows(sample_rows))
    return (
        pipeline
        | "Once" >> beam.Create([None])
        | "Report"
        >> beam.ParDo(
            Report(settings, run_id, temp_dir),
            outcomes=beam.pvalue.AsList(results.outcomes),
            samples=beam.pvalue.AsList(sample),
        )
    )


def run(
    settings: Settings, objects: list[str], beam_argv: list[str], *, run_id: str, temp_dir: str
) -> dict[str, Any]:
    """Validate every named object; return the report (on Dataflow: that the job was launched)."""
    data = data_bucket(settings)
    load_schema(artifacts_bucket(settings))  # no schema: say so now, not on every worker
    if not objects:
        raise NotFound(f"no objects named: give names or prefixes (ending in /) of bucket {data.name!r}")
    items = list_objects(data, objects)
    if not items:
        raise NotFound(f"nothing to validate under {objects} in bucket {data.name!r}")
    options = PipelineOptions(beam_argv)
    job_temp = FileSystems.join(temp_dir, f"validate-{run_id}")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, settings, items, run_id=run_id, temp_dir=job_temp)
    log.info(f"validate pipeline: {len(items)} objects", extra={"fields": {"run_id": run_id}})
    outcome = pipeline.run()
    if options.get_all_options().get("runner") == "DataflowRunner":
        return {
            "status": LaunchStatus.LAUNCHED,
            "message": f"Dataflow job for run {run_id} submitted",
            "run_id": run_id,
        }
    outcome.wait_until_finish()
    with FileSystems.open(FileSystems.join(job_temp, RESULT_FILE)) as f:
        report: dict[str, Any] = json.loads(f.read())
    FileSystems.delete([job_temp])
    return report
