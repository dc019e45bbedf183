"""Table build speed and memory.

Throughput: a full build (``shared.tables.build.build_table``, strategy full, on a local bucket)
of the synthetic ad schema's 691,200 keys with the project's default pipeline, in rows per
second, as a ratio to raw ``predict_proba`` of the same pipeline on a prebuilt model-input frame
of the same rows (built once, outside the timing); the two alternate, medians of 5 runs (quick:
1). The build adds key decoding, ``to_frame``, writing the npz and switching the pointer; the
goal is to keep at least 70% of the raw speed.

Compiled (issue 14): the same version published compiled (``bench/models.py``), so the build
scores with ONNX Runtime as it does for every compiled version: ``score_keys`` of the same rows
with the ``CompiledModel`` (from the decoded key columns, no frame), and the whole build of that
bucket, both against the same ``predict_proba``, alternated with the rows above. Goal: at least
1.5x ``predict_proba``, for the scoring and for the whole build.

Memory: peak resident memory of a fresh process building a full table of 2,000,000 keys against
one of 200,000 keys (same features, one key feature's range ten times longer). Each size runs in
its own subprocess (``python -m bench.bench_table --memory-child``): it imports everything, loads
nothing else, then resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` = 5) and builds;
it reports ``VmHWM`` (peak RSS of the build, whole process) and the RSS just before the build.
The goal is on the growth above the pre-build RSS, the memory the build itself takes (the table,
n x 16 bytes, and one chunk's scoring frames; the npz streams to a temporary file, so no
serialized copy): chunking is what keeps it from growing with the key space. The whole
process's peak (what a function instance's memory limit sees) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Row, goal_row
from shared.contracts import CURRENT_MODEL, TableStrategy

THROUGHPUT_GOAL = 0.7
COMPILED_GOAL = 1.5
MEMORY_GOAL = 1.5
MEMORY_SIZES = (200_000, 2_000_000)
MIB = 2**20


def _pipeline(schema: Any) -> Any:
    """The project's default pipeline (one-hot categories, scaled numbers, SGD log loss)."""
    from shared.training.fitting import default_pipeline

    return default_pipeline(schema)


def _fit(schema: Any, frame: Any, y: np.ndarray, version: str) -> Any:
    from shared.model import ModelBundle, to_frame

    estimator = _pipeline(schema).fit(to_frame(schema, frame), y)
    return ModelBundle(version, estimator, schema)


def _synth_bundle() -> Any:
    from shared.local.synth import LABEL, day_frame, synth_schema

    schema = synth_schema()
    frame = day_frame(seed=0, day=1, rows=20_000)
    return _fit(schema, frame, frame[LABEL].to_numpy(), "bench-synth")


def _memory_schema(keys: int) -> Any:
    """``keys`` = (keys / 1000) values of ``a`` x 1000 categories of ``b``, plus a non-key bid."""
    from shared.schema import Schema

    return Schema.from_dict(
        {
            "features": [
                {"name": "a", "type": "integer", "min": 0, "max": keys // 1000 - 1},
                {"name": "b", "type": "category", "domain": [f"b{i:03d}" for i in range(1000)]},
                {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.0},
            ],
            "label": {"name": "y", "type": "category", "classes": [0, 1]},
            "key": ["a", "b"],
        }
    )


def _memory_bundle(keys: int) -> Any:
    import pandas as pd

    schema = _memory_schema(keys)
    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame(
        {
            "a": rng.integers(0, keys // 1000, n),
            "b": [f"b{i:03d}" for i in rng.integers(0, 1000, n)],
            "bid": rng.uniform(0, 10, n),
        }
    )
    y = (rng.uniform(size=n) < 0.3).astype(int)
    return _fit(schema, frame, y, f"bench-{keys}")


def _settings(root: Path, **extra: str) -> Any:
    from shared.config import load_settings

    return load_settings({"LOCAL_BUCKETS_ROOT": str(root), "TABLE_MAX_ROWS": "2000000", **extra})


def _throughput(quick: bool, tmp: Path) -> list[Row]:
    from bench.models import publish
    from shared.storage.local import LocalBucket
    from shared.tables.build import build_table
    from shared.tables.keys import full_chunks, instance_frame, score_keys
    from shared.tables.plan import BuildRequest

    bundle = _synth_bundle()
    schema = bundle.schema
    sklearn_artifacts = LocalBucket(tmp / "buckets", "prodml-artifacts")
    publish(sklearn_artifacts, bundle, compiled=False)
    compiled_artifacts = LocalBucket(tmp / "compiled", "prodml-artifacts")
    compiled = publish(compiled_artifacts, bundle, compiled=True)
    rows = schema.key_cardinality
    request = BuildRequest(TableStrategy.FULL, force=True)
    columns = next(full_chunks(schema, rows)).columns  # the decoded key columns of every key
    frame = instance_frame(schema, columns)  # the prebuilt model input of the same rows
    repeat = 1 if quick else 5

    def timed_build(artifacts: Any, settings: Any) -> tuple[float, float]:
        start = time.perf_counter()
        result = build_table(artifacts, settings, request)
        seconds = time.perf_counter() - start
        assert result.rows == rows, result.message
        return seconds, result.build_seconds or 0.0

    sklearn_settings = _settings(tmp / "buckets")
    compiled_settings = _settings(tmp / "compiled")
    times: dict[str, list[float]] = {
        "predict": [], "build": [], "loop": [], "compiled": [], "compiled build": [], "compiled loop": []
    }  # fmt: skip
    # One untimed round first: ONNX Runtime grows its memory arena on the first large batch
    # (measured here: 2.7 s, then 0.35 s, for the same 691,200 rows), a cost paid once per process.
    score_keys(compiled, schema, columns)
    for _ in range(repeat):  # alternated, so machine noise hits each alike
        start = time.perf_counter()
        bundle.estimator.predict_proba(frame)
        times["predict"].append(time.perf_counter() - start)
        build, loop = timed_build(sklearn_artifacts, sklearn_settings)
        times["build"].append(build)
        times["loop"].append(loop)
        start = time.perf_counter()
        score_keys(compiled, schema, columns)
        times["compiled"].append(time.perf_counter() - start)
        build, loop = timed_build(compiled_artifacts, compiled_settings)
        times["compiled build"].append(build)
        times["compiled loop"].append(loop)
    rate = {name: rows / float(np.median(values)) for name, values in times.items()}
    raw_rate = rate["predict"]
    against = f"predict_proba on a prebuilt frame ({raw_rate:,.0f} rows/s)"

    def row(name: str, what: str, **goal: float) -> Row:
        return goal_row("table", what, rate[name], "rows/s", against, rate[name] / raw_rate, **goal)

    return [
        row("build", f"build_table {rows:,} keys, end to end, scikit-learn form", at_least=THROUGHPUT_GOAL),
        row("loop", "build_table scoring loop only, scikit-learn form"),
        row("compiled", f"score_keys {rows:,} keys, compiled form (ONNX Runtime)", at_least=COMPILED_GOAL),
        row(
            "compiled build", f"build_table {rows:,} keys, end to end, compiled form", at_least=COMPILED_GOAL
        ),
        row("compiled loop", "build_table scoring loop only, compiled form"),
    ]


def _memory_child(root: Path, keys: int) -> dict[str, float]:
    """In a fresh process: build the full table of ``keys`` keys; report peak and pre-build RSS."""
    from shared.tables.build import build_table
    from shared.tables.plan import BuildRequest

    settings = _settings(root, TABLE_MAX_ROWS=str(keys))
    from shared.storage.local import LocalBucket

    artifacts = LocalBucket(root, "prodml-artifacts")
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    result = build_table(artifacts, settings, BuildRequest(TableStrategy.FULL, force=True))
    assert result.rows == keys, result.message
    return {"peak_kib": _status_kib("VmHWM"), "before_kib": before, "rows": result.rows}


def _status_kib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory(tmp: Path) -> list[Row]:
    results: dict[int, dict[str, float]] = {}
    for keys in MEMORY_SIZES:
        root = tmp / f"mem-{keys}"
        from shared.storage.local import LocalBucket

        LocalBucket(root, "prodml-artifacts").write(CURRENT_MODEL, _memory_bundle(keys).to_bytes())
        done = subprocess.run(
            [sys.executable, "-m", "bench.bench_table", "--memory-child", str(root), str(keys)],
            capture_output=True,
            text=True,
            env={**os.environ, "LOG_LEVEL": "warning"},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory child for {keys} keys failed: {done.stderr[-2000:]}")
        results[keys] = json.loads(done.stdout.strip().splitlines()[-1])
    small, big = (results[k] for k in MEMORY_SIZES)
    peak_ratio = big["peak_kib"] / small["peak_kib"]
    growth_small = small["peak_kib"] - small["before_kib"]
    growth_big = big["peak_kib"] - big["before_kib"]
    against = f"{MEMORY_SIZES[0]:,} keys ({small['peak_kib'] / 1024:.0f} MiB peak)"
    return [
        goal_row(
            "table",
            f"peak RSS, full build of {MEMORY_SIZES[1]:,} keys",
            big["peak_kib"] / 1024,
            "MiB",
            against,
            peak_ratio,
        ),
        goal_row(
            "table",
            f"RSS growth during the build, {MEMORY_SIZES[1]:,} keys",
            growth_big / 1024,
            "MiB",
            f"{MEMORY_SIZES[0]:,} keys ({growth_small / 1024:.0f} MiB growth)",
            growth_big / growth_small if growth_small > 0 else float("inf"),
            at_most=MEMORY_GOAL,
        ),
    ]


def run(quick: bool) -> list[Row]:
    """Build throughput against raw predict_proba; peak memory of 2M keys against 200k keys."""
    with tempfile.TemporaryDirectory(prefix="bench-table-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        rows = _throughput(quick, Path(tmp))
        rows += _memory(Path(tmp))
    return rows


def main() -> int:
    """The memory child's entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_table")
    parser.add_argument("--memory-child", nargs=2, metavar=("ROOT", "KEYS"), required=True)
    args = parser.parse_args()
    root, keys = Path(args.memory_child[0]), int(args.memory_child[1])
    print(json.dumps(_memory_child(root, keys)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
