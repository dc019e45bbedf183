"""A shadow's cost to the champion (issue 16): predict in dynamic mode, the compiled version current
(``bench/models.py`` ``publish``) and a second compiled version named by ``models/shadow.json``,
over HTTP against real functions-framework processes. Both arms log every prediction
(``PREDICTION_LOG_RATE=1.0``, batches of ``BATCH_ROWS`` so the flusher, and with it the shadow,
runs during the measurement); one scores the shadow at ``SHADOW_RATE=1.0``, the other at
``SHADOW_RATE=0`` (it loads no shadow), so only the shadow differs.

1. HTTP p50 of single-instance requests one after another on a keep-alive connection, with and
   without, interleaved request by request in a shuffled order. Goal: <= 1.05x.
2. Throughput of 8 concurrent clients, single-instance requests, with and without in several
   short rounds (shuffled in each round), median of the rounds. Goal: >= 0.9x.
3. Informational: the flusher's time in the shadow's calls per scored row (``/health``'s
   ``shadow.seconds`` / ``shadow.scored_rows``), after both runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import requests

from bench.bench_serving import (
    Targets,
    _env,
    _latencies,
    _start_all,
    _stop_all,
    _throughputs,
    interleaved_p50s,
)
from bench.common import Row, goal_row
from bench.models import MAX_COMPILED_BYTES, fit_default, instance, publish, serving_schema
from shared.compiled.compile import compile_version
from shared.contracts import ModelForm, ServingMode
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess
from shared.storage.local import LocalBucket
from shared.training import registry, shadow
from shared.training.card import ModelCard

AREA = "shadow"
CHAMPION = "bench-v1"
SHADOW = "bench-v2"
LATENCY_GOAL = 1.05
THROUGHPUT_GOAL = 0.9
BATCH_ROWS = "1000"


def _fixture(root: Path) -> list[dict[str, object]]:
    """The compiled champion current and a compiled shadow started; one instance per key code."""
    schema = serving_schema()
    artifacts = LocalBucket(root, "prodml-artifacts")
    publish(artifacts, fit_default(schema, CHAMPION), compiled=True)
    challenger = fit_default(schema, SHADOW, rows=10_000)  # another fit: other scores
    compilation = compile_version(challenger, None, registry.compiled_name(SHADOW))
    if compilation.onnx is None or len(compilation.onnx) > MAX_COMPILED_BYTES:
        raise RuntimeError(f"the bench shadow did not compile: {compilation.form.reason}")
    card = dataclasses.replace(ModelCard(version=SHADOW), compiled=compilation.form)
    registry.write_version(artifacts, SHADOW, challenger.to_bytes(), card, compiled=compilation.onnx)
    pointer = shadow.started(
        SHADOW, champion=CHAMPION, form=ModelForm.ONNX, by="bench", reason="bench", previous=None
    )
    shadow.swap_pointer(artifacts, pointer, 0)
    return [instance(schema, code) for code in range(schema.key_cardinality)]


def _shadow_env(root: Path, log_bucket: str, rate: str) -> dict[str, str]:
    # The shell's PREDICTION_LOG_* and SHADOW_* settings are dropped: only the rate differs.
    env = {k: v for k, v in _env(root).items() if not k.startswith(("PREDICTION", "SHADOW"))}
    env.update(
        {
            "SERVING_MODE": ServingMode.DYNAMIC,
            "PREDICTIONS_BUCKET": log_bucket,
            "PREDICTION_LOG_RATE": "1.0",
            "PREDICTION_LOG_BATCH_ROWS": BATCH_ROWS,
            "RELOAD_SECONDS": "0.5",  # the shadow is loaded by the reload thread's first check
            "SHADOW_RATE": rate,
        }
    )
    return env


def _shadow_health(process: FunctionProcess) -> dict[str, Any]:
    return requests.get(f"{process.url}/health", timeout=30).json()["shadow"]


def _wait_scoring(process: FunctionProcess, single: list[bytes]) -> None:
    """Until the "with" arm scores its shadow (bounded; the first request starts the reloader)."""
    with requests.Session() as session:
        for _ in range(600):
            _latencies(process.url, single[:1], session)
            if _shadow_health(process)["scoring"]:
                return
    raise RuntimeError(f"the shadow was never scored: {_shadow_health(process)}")


def _rows(processes: dict[str, FunctionProcess], single: list[bytes], quick: bool) -> list[Row]:
    urls = {name: process.url for name, process in processes.items()}
    p50 = interleaved_p50s(urls, single, 400 if quick else 2000, seed=5)
    with50, without50 = p50["with"], p50["without"]

    def one(rng: random.Random) -> tuple[bytes, int]:
        return single[rng.randrange(len(single))], 1

    rounds, seconds = (3, 2.0) if quick else (7, 3.0)
    tp = _throughputs({name: (p.url, one) for name, p in processes.items()}, rounds, seconds)
    state = _shadow_health(processes["with"])
    scored = int(state["scored_rows"] or 0)
    if not scored or state["failures"]:
        raise RuntimeError(f"the shadow arm did not score cleanly: {state}")
    per_row = float(state["seconds"] or 0.0) / scored
    return [
        goal_row(
            AREA,
            "HTTP p50 single instance, dynamic (compiled), compiled shadow at SHADOW_RATE=1.0",
            with50,
            "s",
            f"without a shadow ({without50 * 1e3:.2f} ms); both log at rate 1.0",
            with50 / without50,
            at_most=LATENCY_GOAL,
        ),
        goal_row(
            AREA,
            "throughput, 8 clients, 1/request, dynamic (compiled), compiled shadow at SHADOW_RATE=1.0",
            tp["with"],
            "inst/s",
            f"without a shadow ({tp['without']:,.0f} inst/s); both log at rate 1.0",
            tp["with"] / tp["without"],
            at_least=THROUGHPUT_GOAL,
        ),
        goal_row(
            AREA,
            f"flusher time in the shadow's calls per scored row ({scored:,} rows, batches of {BATCH_ROWS})",
            per_row,
            "s",
            "one row",
            1.0,
        ),
    ]


def run(quick: bool) -> list[Row]:
    """The shadow's cost to the champion's latency and throughput, and its own scoring time."""
    with tempfile.TemporaryDirectory(prefix="bench-shadow-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        instances = _fixture(root)
        single = [json.dumps({"instances": [row]}).encode() for row in instances]
        predict = load_declaration().functions["predict"]
        targets: Targets = {
            "with": (predict, _shadow_env(root, "pred-with", "1.0")),
            "without": (predict, _shadow_env(root, "pred-without", "0")),
        }
        processes = _start_all(targets, logs)
        try:
            _wait_scoring(processes["with"], single)
            return _rows(processes, single, quick)
        finally:
            _stop_all(processes)
