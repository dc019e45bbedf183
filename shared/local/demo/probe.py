"""Talking to the running stack for the demo and the freshness bench: drop a file and follow it
through router, training and predict; send traffic and measure it per serving mode."""

from __future__ import annotations

import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests

from shared.contracts import EventOutcome
from shared.errors import DemoError
from shared.local.stack import LocalStack
from shared.storage.local import LocalBucket
from shared.training.ledger import read_processed

T = TypeVar("T")

# One instance the demo asks predict about after every change, to show which version answers.
PROBE = {
    "country": "us",
    "device": "mobile",
    "hour": 20,
    "ad_category": "travel",
    "placement": "feed",
    "user_segment": "loyal",
    "bid": 1.5,
}


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 120.0, every: float = 0.05) -> T:
    """Poll ``check()`` until it returns a value (not None); ``DemoError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def predict(url: str, instances: Sequence[dict[str, Any]], timeout: float = 30.0) -> dict[str, Any]:
    """POST instances to predict; ``DemoError`` on a non-200 answer."""
    response = requests.post(url, json={"instances": list(instances)}, timeout=timeout)
    if response.status_code != 200:
        raise DemoError(f"predict at {url} answered {response.status_code}: {response.text[:300]}")
    return dict(response.json())


def wait_served(url: str, version: str, timeout: float = 60.0) -> tuple[dict[str, Any], float]:
    """Ask predict the probe until the answer names ``version``; the answer and when it came."""

    def check() -> dict[str, Any] | None:
        try:
            body = predict(url, [PROBE])
        except (requests.RequestException, DemoError):
            return None
        return body if body.get("model_version") == version else None

    body = wait_for(check, f"predict to serve model {version}", timeout)
    return body, time.time()


@dataclass(frozen=True)
class Landing:
    """One data file dropped into the incoming folder and followed to the served model."""

    name: str
    generation: int
    marker: dict[str, Any]  # the train function's "processed" record: outcome, version, message
    copied_at: float  # epoch seconds when the copy finished
    fired_at: float | None  # when the router first POSTed the event
    trained_at: float | None  # when the train function answered
    served_at: float | None  # when predict first answered with the resulting model
    served: dict[str, Any] | None  # that answer

    @property
    def router_seconds(self) -> float | None:
        """From the file landing to the event reaching the function."""
        return None if self.fired_at is None else self.fired_at - self.copied_at

    @property
    def training_seconds(self) -> float | None:
        """The train function's work (validation, training, evaluation, promotion)."""
        if self.fired_at is None or self.trained_at is None:
            return None
        return self.trained_at - self.fired_at

    @property
    def reload_seconds(self) -> float | None:
        """From the function's answer to predict serving the new model."""
        if self.trained_at is None or self.served_at is None:
            return None
        return max(0.0, self.served_at - self.trained_at)

    @property
    def total_seconds(self) -> float | None:
        """From the file landing to predict serving the new model."""
        return None if self.served_at is None else self.served_at - self.copied_at


def drop_and_follow(stack: LocalStack, source: Path, name: str, timeout: float = 180.0) -> Landing:
    """Copy ``source`` into the data bucket as ``name`` (like ``cp``), wait for the train function
    to finish with it, and, when it promoted a model, for predict to serve that model."""
    settings = stack.settings
    data = LocalBucket(settings.local_buckets_root, settings.data_bucket)
    target = data.folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)  # written in place, as cp does: the router waits until it settles
    copied_at = time.time()
    generation = wait_for(lambda: _generation(data, name), f"{name} to be seen by the store", 30)
    return follow(stack, name, generation, copied_at, timeout)


def follow(
    stack: LocalStack, name: str, generation: int, copied_at: float, timeout: float = 180.0
) -> Landing:
    """Follow version ``generation`` of ``name`` in the data bucket, written at ``copied_at`` (by
    ``drop_and_follow``, or by a function: the feedback loop's emitted file) through the train
    function and, when it promoted a model, until predict serves that model."""
    settings = stack.settings
    data = LocalBucket(settings.local_buckets_root, settings.data_bucket)
    artifacts = LocalBucket(settings.local_buckets_root, settings.artifacts_bucket)
    marker = wait_for(
        lambda: read_processed(artifacts, data.name, name, generation),
        f"the train function to finish {name}",
        timeout,
    )
    fired_at = trained_at = None
    router = stack.router
    if router is not None:
        # The marker is written just before the function answers: wait for the answer too.
        result = wait_for(
            lambda: next(
                (
                    r
                    for r in list(router.results)
                    if r.delivery.subject == f"objects/{name}" and r.delivery.function == "train"
                ),
                None,
            ),
            f"the train function to answer the event of {name}",
            60,
        )
        fired_at, trained_at = result.first_attempt_at, result.finished_at
    served = served_at = None
    if marker.get("outcome") == EventOutcome.PROMOTED and marker.get("version") and "predict" in stack.urls:
        served, served_at = wait_served(stack.urls["predict"], str(marker["version"]))
        trained_at = trained_at or served_at
    return Landing(name, generation, marker, copied_at, fired_at, trained_at, served_at, served)


def _generation(data: LocalBucket, name: str) -> int | None:
    try:
        return data.stat(name).generation
    except Exception:  # not there or still being copied
        return None


@dataclass(frozen=True)
class ModeRun:
    """Traffic sent to one predict instance in one serving mode."""

    mode: str
    requests: int
    instances: int
    sources: Counter[str]
    latencies_ms: list[float]

    @property
    def hit_rate(self) -> float:
        """Share of instances answered from the table."""
        return self.sources.get("table", 0) / self.instances if self.instances else 0.0

    @property
    def miss_rate(self) -> float:
        """Share of instances with no answer (static mode, key not in the table)."""
        return self.sources.get("miss", 0) / self.instances if self.instances else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds (q in 0..100)."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    @property
    def median_ms(self) -> float:
        """Median latency of one request (one instance), in milliseconds."""
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def send_traffic(url: str, instances: Sequence[dict[str, Any]], mode: str, batch: int = 1) -> ModeRun:
    """Send ``instances`` to predict ``batch`` at a time, one request after another; count where
    the answers came from and time each request."""
    session = requests.Session()
    sources: Counter[str] = Counter()
    latencies: list[float] = []
    requests_sent = 0
    for start in range(0, len(instances), batch):
        chunk = list(instances[start : start + batch])
        began = time.perf_counter()
        response = session.post(url, json={"instances": chunk}, timeout=30)
        latencies.append((time.perf_counter() - began) * 1000)
        requests_sent += 1
        if response.status_code != 200:
            raise DemoError(f"predict ({mode}) answered {response.status_code}: {response.text[:300]}")
        sources.update(p.get("source", "?") for p in response.json()["predictions"])
    return ModeRun(mode, requests_sent, len(instances), sources, latencies)
