"""The compare-and-swap of the GCS backend under real contention, against a server that enforces it.

fake-gcs-server (the ``fake_gcs_server`` fixture of tests/conftest.py) answers 412 to a
single-request upload whose ``ifGenerationMatch`` does not hold, which is what ``GCSBucket.write``
sends at any size. Each test races real processes (fresh interpreters sharing nothing but the
server), the way several function instances race in the cloud.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest
from conftest import cas_increment, fake_gcs_client, new_gcs_bucket
from google.cloud.storage import Client

from shared.contracts import CURRENT_MODEL
from shared.errors import NotFound, PreconditionFailed
from shared.storage.gcs import GCSBucket
from shared.training import registry

pytestmark = pytest.mark.slow

# A payload above google-cloud-storage's 8 MiB resumable threshold: a big model.
BIG = 8 * 1024 * 1024 + 1


def _bucket(url: str, name: str) -> GCSBucket:
    return GCSBucket(fake_gcs_client(url), name)


def _increment(url: str, name: str, cycles: int) -> int:
    """Child process: ``cycles`` read-increment-write cycles with compare-and-swap and retry."""
    return cas_increment(_bucket(url, name), cycles)


def test_eight_processes_incrementing_with_cas_lose_no_update(
    fake_gcs_server: str, fakegcs_bucket: GCSBucket
) -> None:
    start = fakegcs_bucket.write("counter", b"0")
    ctx = multiprocessing.get_context("spawn")

    with ctx.Pool(8) as pool:
        conflicts = pool.starmap(_increment, [(fake_gcs_server, fakegcs_bucket.name, 50)] * 8)

    data, info = fakegcs_bucket.read_with_info("counter")
    assert data == b"400"
    assert info.generation > start
    assert sum(conflicts) > 0  # they really did race


_start_together: Barrier | None = None  # set in each trainer process by _trainer_ready


def _trainer_ready(barrier: Barrier) -> None:
    """Pool initializer: keep the start barrier, so both trainers begin promoting at once."""
    global _start_together
    _start_together = barrier


def _promote(url: str, name: str, trainer: str, promotions: int, size: int) -> tuple[list[str], int]:
    """Child process: a trainer promoting ``promotions`` versions of ``size`` bytes, each against
    the model it read, reading again after losing a swap (as the trainer does). Returns the
    versions it promoted and how many swaps it lost."""
    artifacts = _bucket(url, name)
    assert _start_together is not None
    _start_together.wait(timeout=60)
    promoted, lost = [], 0
    for i in range(promotions):
        version = f"{trainer}-{i:03d}"
        model = version.encode().ljust(size, b".")
        while True:
            try:
                data, info = artifacts.read_with_info(CURRENT_MODEL)
                expected, previous = info.generation, data.rstrip(b".").decode()
            except NotFound:
                expected, previous = 0, None
            try:
                registry.swap_current(
                    artifacts, version, model, expected, kind="promote", previous=previous, by=trainer
                )
                break
            except PreconditionFailed:
                lost += 1
        promoted.append(version)
    return promoted, lost


@pytest.mark.parametrize("size", [1024, BIG], ids=["small model", "model above 8 MiB"])
def test_two_trainers_promoting_at_once_form_one_chain(
    fake_gcs_server: str, fakegcs_client: Client, size: int
) -> None:
    """Every promotion replaces exactly the model its trainer read: the swap records form one
    unbroken chain, no promotion is lost, and the current model is the chain's last version."""
    artifacts = new_gcs_bucket(fakegcs_client)
    promotions = 8 if size == BIG else 25
    ctx = multiprocessing.get_context("spawn")

    with ctx.Pool(2, initializer=_trainer_ready, initargs=(ctx.Barrier(2),)) as pool:
        results = pool.starmap(
            _promote, [(fake_gcs_server, artifacts.name, t, promotions, size) for t in ("a", "b")]
        )

    events = registry.list_events(artifacts)
    assert sorted(e["version"] for e in events) == sorted(v for promoted, _ in results for v in promoted)
    assert [e["previous"] for e in events] == [None] + [e["version"] for e in events[:-1]]
    current = artifacts.read(CURRENT_MODEL)
    assert current.rstrip(b".").decode() == events[-1]["version"]
    assert len(current) == size
    assert sum(lost for _, lost in results) > 0  # they really did race
