"""The prediction log's cost (issue 15): predict in hybrid mode with a full table (every request a
table hit), the compiled version current (``bench/models.py`` ``publish``), the log at rate 1.0
against ``PREDICTION_LOG_RATE=0``, over HTTP against real functions-framework processes.

1. In process (informational): ``Predictor.predict`` on a single-instance body with the log
   (the request path's append; the flusher writes in the background) against without, the two
   measured in alternating repeats, medians.
2. HTTP p50 of single-instance requests one after another on a keep-alive connection, with and
   without, interleaved request by request in a shuffled order. Goal: <= 1.1x.
3. Throughput of 8 concurrent clients, single-instance requests, with and without in several
   short rounds (shuffled in each round), median of the rounds. Goal: >= 0.9x.
4. Memory: VmRSS of the gunicorn worker (the process holding the buffer) after N requests of 10
   instances against after N/4, with ``PREDICTION_LOG_MAX_ROWS`` small and no flush before the
   end (goal <= 1.1x: the buffer stops growing; further rows are dropped and counted).
5. Loss: the rows answered but not in the log after a graceful stop (SIGTERM to the process
   group, as Cloud Run stops an instance; goal 0) and after a kill -9 right after the last answer
   (goal: at most one batch, ``PREDICTION_LOG_BATCH_ROWS``; the flush interval is the default
   30 s, longer than the run, so the batch is the bound in force).
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import tempfile
from pathlib import Path

import numpy as np
import requests

from bench.bench_serving import (
    Targets,
    _env,
    _latencies,
    _memory,
    _start_all,
    _stop_all,
    _throughputs,
    interleaved_p50s,
)
from bench.common import Row, goal_row, median_seconds
from bench.models import fit_default, instance, publish, publish_table, serving_schema
from shared.config import load_settings
from shared.contracts import PREDICTIONS_PREFIX, ServingMode, TableStrategy
from shared.feedback.log_format import read_log
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.serving.predictor import Predictor
from shared.storage.local import LocalBucket

AREA = "prediction log"
VERSION = "bench-v1"
LATENCY_GOAL = 1.1
THROUGHPUT_GOAL = 0.9
MEMORY_GOAL = 1.1
MEMORY_MAX_ROWS = 1000
LOSS_BATCH_ROWS = 1000
PER_REQUEST = 10  # instances per request in the memory and loss runs
MAX_LOG_BYTES = 10**9
JSON = {"Content-Type": "application/json"}
QUIET = {"PREDICTION_LOG_FLUSH_SECONDS": "3600", "PREDICTION_LOG_BATCH_ROWS": "100000000"}  # only close()


def _fixture(root: Path) -> list[dict[str, object]]:
    """The compiled version current with a table of every key; one instance per key code."""
    bundle = fit_default(serving_schema(), VERSION)
    artifacts = LocalBucket(root, "prodml-artifacts")
    scorer = publish(artifacts, bundle, compiled=True)
    every = np.arange(bundle.schema.key_cardinality, dtype=np.int64)
    publish_table(artifacts, scorer, every, TableStrategy.FULL)
    return [instance(bundle.schema, code) for code in range(len(every))]


def _log_env(root: Path, log_bucket: str, **extra: str) -> dict[str, str]:
    # The shell's PREDICTION_LOG_* settings are dropped: a target gets the defaults unless named.
    env = {k: v for k, v in _env(root).items() if not k.startswith("PREDICTION")}
    env.update({"SERVING_MODE": ServingMode.HYBRID, "PREDICTIONS_BUCKET": log_bucket, **extra})
    return env


def _in_process(root: Path, instances: list[dict[str, object]], repeat: int) -> list[Row]:
    env = {"LOCAL_BUCKETS_ROOT": str(root), "SERVING_MODE": ServingMode.HYBRID}
    env |= {"RELOAD_SECONDS": "3600", "TRAFFIC_FLUSH_SECONDS": "3600"}
    artifacts = LocalBucket(root, "prodml-artifacts")
    with_log = Predictor(artifacts, load_settings(env), "bench", LocalBucket(root, "pred-inproc"))
    without = Predictor(artifacts, load_settings({**env, "PREDICTION_LOG_RATE": "0"}), "bench")
    bodies = [json.dumps({"instances": [instances[c]]}).encode() for c in range(0, len(instances), 7)]
    calls = 2000

    def go(target: Predictor) -> None:
        for i in range(calls):
            target.predict(bodies[i % len(bodies)])

    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        assert with_log.predict(bodies[0])["predictions"][0]["source"] == "table"
        for _ in range(repeat):  # alternating, so drifts of the machine hit both alike
            times["with"].append(median_seconds(lambda: go(with_log), repeat=1, warmup=0) / calls)
            times["without"].append(median_seconds(lambda: go(without), repeat=1, warmup=0) / calls)
    finally:
        with_log.close()
        without.close()
    logged, plain = statistics.median(times["with"]), statistics.median(times["without"])
    return [
        goal_row(
            AREA,
            "in-process single instance: table hit, log at rate 1.0 (append; flushes in the background)",
            logged,
            "s",
            f"without the log ({plain * 1e6:.1f} us)",
            logged / plain,
        )
    ]


def _latency_and_throughput(
    processes: dict[str, FunctionProcess], instances: list[dict[str, object]], quick: bool
) -> list[Row]:
    n_keys = len(instances)
    single = [json.dumps({"instances": [instances[c]]}).encode() for c in range(n_keys)]
    urls = {name: processes[name].url for name in ("with", "without")}
    p50 = interleaved_p50s(urls, single, 300 if quick else 1500, seed=3)
    with50, without50 = p50["with"], p50["without"]

    def one(rng: random.Random) -> tuple[bytes, int]:
        return single[rng.randrange(n_keys)], 1

    rounds, seconds = (2, 2.0) if quick else (5, 3.0)
    loads = {name: (processes[name].url, one) for name in ("with", "without")}
    tp = _throughputs(loads, rounds, seconds)
    return [
        goal_row(
            AREA,
            "HTTP p50 single instance, hybrid (compiled, all table hits), log at rate 1.0",
            with50,
            "s",
            f"without the log ({without50 * 1e3:.2f} ms)",
            with50 / without50,
            at_most=LATENCY_GOAL,
        ),
        goal_row(
            AREA,
            "throughput, 8 clients, 1/request, hybrid (compiled, all table hits), log at rate 1.0",
            tp["with"],
            "inst/s",
            f"without the log ({tp['without']:,.0f} inst/s)",
            tp["with"] / tp["without"],
            at_least=THROUGHPUT_GOAL,
        ),
    ]


def _batches(instances: list[dict[str, object]], count: int, prefix: str) -> list[bytes]:
    """``count`` bodies of ``PER_REQUEST`` instances each, with ids ``<prefix>-<request>-<k>``."""
    n = len(instances)
    return [
        json.dumps(
            {
                "instances": [instances[(c * 7 + k) % n] for k in range(PER_REQUEST)],
                "ids": [f"{prefix}-{c}-{k}" for k in range(PER_REQUEST)],
            }
        ).encode()
        for c in range(count)
    ]


def _memory_row(bounded: FunctionProcess, instances: list[dict[str, object]], quick: bool) -> Row:
    n = 2000 if quick else 10000
    bodies = _batches(instances, n, "m")
    with requests.Session() as session:
        _latencies(bounded.url, bodies[: n // 4], session)
        early = _memory(bounded).worker_rss
        _latencies(bounded.url, bodies[n // 4 :], session)
        late = _memory(bounded).worker_rss
        state = session.get(f"{bounded.url}/health", timeout=30).json()["prediction_log"]
    return goal_row(
        AREA,
        f"worker RSS after {n * PER_REQUEST:,} logged instances, PREDICTION_LOG_MAX_ROWS="
        f"{MEMORY_MAX_ROWS} ({state['dropped']:,} dropped and counted)",
        late,
        "MiB",
        f"after {n * PER_REQUEST // 4:,} ({early:.1f} MiB)",
        late / early,
        at_most=MEMORY_GOAL,
    )


def _logged_ids(log: LocalBucket) -> list[str]:
    ids: list[str] = []
    for info in log.list(PREDICTIONS_PREFIX):
        ids += [str(i) for i in read_log(log, info.name, MAX_LOG_BYTES).columns["id"]]
    return ids


def _loss(root: Path, logs: Path, instances: list[dict[str, object]], quick: bool) -> list[Row]:
    """Rows answered but not logged after a SIGTERM and after a kill -9."""
    spec = load_declaration().functions["predict"]
    requests_sent = 305 if quick else 1105  # 10 instances each: several batches and a part
    rows: list[Row] = []
    for how in ("graceful", "kill"):
        bucket = f"pred-loss-{how}"
        extra = QUIET if how == "graceful" else {"PREDICTION_LOG_BATCH_ROWS": str(LOSS_BATCH_ROWS)}
        process = FunctionProcess(spec, free_port(), _log_env(root, bucket, **extra), logs / f"{how}.log")
        process.start(timeout=120)
        try:
            answered: list[str] = []
            with requests.Session() as session:
                for body in _batches(instances, requests_sent, how):
                    response = session.post(process.url, data=body, headers=JSON, timeout=30)
                    response.raise_for_status()
                    answered += [p["id"] for p in response.json()["predictions"]]
            if how == "kill":
                assert process.process is not None
                os.killpg(process.process.pid, signal.SIGKILL)
                process.process.wait(10)
        finally:
            process.stop()  # the graceful stop itself: SIGTERM to the group, as the platform
        logged = _logged_ids(LocalBucket(root, bucket))
        if len(logged) != len(set(logged)) or not set(logged) <= set(answered):
            raise RuntimeError(f"{how}: the log holds rows twice or rows never answered")
        lost = len(answered) - len(logged)
        if how == "graceful":
            what = f"rows lost on a graceful stop (SIGTERM), {len(answered):,} answered"
            rows.append(goal_row(AREA, what, lost, "rows", "rows answered", lost / len(answered), at_most=0))
        else:
            what = f"rows lost on a kill -9 right after the last answer, {len(answered):,} answered"
            # What a kill can lose: the batch being written, and what was served while it was
            # written (docs/design.md section 5): with a write far shorter than filling a batch,
            # under two batches.
            against = f"two batches, PREDICTION_LOG_BATCH_ROWS={LOSS_BATCH_ROWS}"
            rows.append(
                goal_row(AREA, what, lost, "rows", against, lost / (2 * LOSS_BATCH_ROWS), at_most=1.0)
            )
    return rows


def run(quick: bool) -> list[Row]:
    """The prediction log's cost in latency, throughput and memory, and what a stop loses."""
    with tempfile.TemporaryDirectory(prefix="bench-log-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        instances = _fixture(root)
        rows = _in_process(root, instances, 3 if quick else 7)
        predict = load_declaration().functions["predict"]
        targets: Targets = {
            "with": (predict, _log_env(root, "pred-with", PREDICTION_LOG_RATE="1.0")),
            "without": (predict, _log_env(root, "pred-without", PREDICTION_LOG_RATE="0")),
            "bounded": (
                predict,
                _log_env(root, "pred-bounded", PREDICTION_LOG_MAX_ROWS=str(MEMORY_MAX_ROWS), **QUIET),
            ),
        }
        processes = _start_all(targets, logs)
        try:
            rows += _latency_and_throughput(processes, instances, quick)
            rows.append(_memory_row(processes["bounded"], instances, quick))
        finally:
            _stop_all(processes)
        rows += _loss(root, logs, instances, quick)
    return rows
