"""Table build as a Beam pipeline (DirectRunner) against the in-function builder, same keys.

The model is the project's default pipeline fitted on a synthetic day; the keys are the synthetic
ad schema's, with the key cut to two sizes (the features left out of the key take their table
defaults, as in any build). For each size:

- in-function: ``shared.tables.build.build_table`` (strategy full) in this process, median of repeats;
- pipeline: ``shared.pipelines.launch.run_direct`` (a DirectRunner subprocess of .venv-beam, one
  worker, i.e. one core), once per size: what ``prodml pipeline table --runner direct`` costs,
  Python and Beam start-up included.

From the two pipeline sizes: the pipeline's marginal throughput (extra keys / extra seconds: its
per-core scoring rate without start-up) and its fixed start-up cost. The Dataflow rows scale the
per-core rate to workers: a 10^8-key build on ``DATAFLOW_MAX_WORKERS`` (10) n2-standard-4 workers
(4 cores each, one SDK process a core), and the workers a 10-minute build needs. These are
estimates from one machine's per-core rate, excluding Dataflow's own start-up (VMs, image pull:
minutes) and the single publishing step (16 bytes a key read, assembled and written once).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row, goal_row
from shared.contracts import CURRENT_MODEL, Pipeline, TableStrategy

AREA = "pipeline"
TARGET_KEYS = 10**8
WORKER_CORES = 4  # n2-standard-4, DATAFLOW_MACHINE_TYPE's default
TARGET_SECONDS = 600.0


def _bundle(key: tuple[str, ...]) -> Any:
    from shared.local.synth import LABEL, day_frame, synth_schema
    from shared.model import ModelBundle, to_frame
    from shared.training.fitting import default_pipeline

    schema = dataclasses.replace(synth_schema(), key=key)
    frame = day_frame(seed=0, day=1, rows=20_000)
    estimator = default_pipeline(schema).fit(to_frame(schema, frame), frame[LABEL].to_numpy())
    return ModelBundle("bench", estimator, schema)


def _artifacts(root: Path, bundle: Any) -> Any:
    from shared.schema import save_schema
    from shared.storage.local import LocalBucket

    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, bundle.schema)
    artifacts.write(CURRENT_MODEL, bundle.to_bytes())
    return artifacts


def _measure(key: tuple[str, ...], repeat: int) -> tuple[int, float, float, float]:
    """Keys, in-function seconds (median), pipeline wall seconds and pipeline build seconds
    (from the pipeline's own start, after the interpreter's) of a full build of ``key``."""
    from shared.config import load_settings
    from shared.pipelines.launch import run_direct
    from shared.tables.build import build_table
    from shared.tables.plan import BuildRequest

    bundle = _bundle(key)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        root = Path(folder)
        artifacts = _artifacts(root, bundle)
        settings = load_settings(
            {"LOCAL_BUCKETS_ROOT": str(root), "LOG_LEVEL": "warning", "PIPELINE_DIRECT_WORKERS": "1"}
        )
        times, walls, builds = [], [], []
        for _ in range(repeat):  # alternate, so that a busy moment of the machine hits both
            start = time.perf_counter()
            result = build_table(artifacts, settings, BuildRequest(TableStrategy.FULL, force=True))
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            piped = run_direct(settings, Pipeline.TABLE, {"strategy": TableStrategy.FULL, "force": "true"})
            walls.append(time.perf_counter() - start)
            builds.append(float(piped["build_seconds"]))
            assert result.rows == piped["rows"] == bundle.schema.key_cardinality
    return result.rows, statistics.median(times), statistics.median(walls), statistics.median(builds)


def run(quick: bool) -> list[Row]:
    """Both builders on a small and a large key space; rates, start-up and Dataflow estimates."""
    small_key = ("country", "device", "hour", "ad_category")  # 17,280 keys
    large_key = (*small_key, "placement", "user_segment")  # 691,200 keys
    repeat = 1 if quick else 3
    n1, f1, w1, b1 = _measure(small_key, repeat)
    n2, f2, w2, b2 = _measure(large_key, repeat)
    in_function_rate = n2 / f2
    pipeline_rate = n2 / w2
    # Keys/s of one DirectRunner worker with start-up excluded: extra keys over extra seconds.
    marginal = (n2 - n1) / max(b2 - b1, 1e-3)
    startup = max(w1 - n1 / marginal, 0.0)
    workers = 10
    dataflow_seconds = TARGET_KEYS / (marginal * WORKER_CORES * workers)
    workers_needed = math.ceil(TARGET_KEYS / (marginal * WORKER_CORES * TARGET_SECONDS))
    base = f"in-function, {n2:,} keys"
    return [
        Row(AREA, f"in-function build, {n2:,} keys", in_function_rate, "keys/s", base, 1.0),
        goal_row(
            AREA,
            f"DirectRunner pipeline, {n2:,} keys (start-up incl.)",
            pipeline_rate,
            "keys/s",
            base,
            pipeline_rate / in_function_rate,
        ),
        Row(
            AREA,
            f"DirectRunner marginal rate ({n1:,}->{n2:,} keys, 1 core)",
            marginal,
            "keys/s",
            base,
            marginal / in_function_rate,
        ),
        Row(
            AREA, "DirectRunner start-up (fixed cost)", startup, "s", f"in-function {n1:,} keys", startup / f1
        ),
        Row(
            AREA,
            "est. 10^8 keys on one core at the marginal rate",
            TARGET_KEYS / marginal,
            "s",
            "in-function, 10^8 keys",
            in_function_rate / marginal,
        ),
        Row(
            AREA,
            f"est. 10^8 keys, {workers} x n2-standard-4 (scoring only)",
            dataflow_seconds,
            "s",
            "in-function, 10^8 keys",
            dataflow_seconds / (TARGET_KEYS / in_function_rate),
        ),
        Row(
            AREA,
            f"est. workers for 10^8 keys in {TARGET_SECONDS / 60:.0f} min",
            float(workers_needed),
            "workers",
            f"{workers} workers",
            workers_needed / workers,
        ),
    ]
