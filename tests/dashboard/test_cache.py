"""The dashboard's caching bucket view: listings and stats reused for the ttl, bytes re-read
only when the generation changed, writes refused."""

from __future__ import annotations

import pytest

from shared.dashboard.cache import ReadCache
from shared.errors import NotFound, ReadOnly


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A real bucket, its reads counted."""

    def __init__(self, bucket) -> None:
        self.bucket, self.reads, self.lists = bucket, 0, 0

    def __getattr__(self, name):
        return getattr(self.bucket, name)

    def read_with_info(self, name):
        self.reads += 1
        return self.bucket.read_with_info(name)

    def list(self, prefix=""):
        self.lists += 1
        return self.bucket.list(prefix)


def test_within_the_ttl_nothing_is_fetched_and_after_it_only_what_changed(local_bucket) -> None:
    local_bucket.write("r/a.json", b"1")
    local_bucket.write("r/b.json", b"2")
    inner, clock = Counting(local_bucket), Clock()
    view = ReadCache(inner, ttl=5, clock=clock)
    assert [view.read(i.name) for i in view.list("r/")] == [b"1", b"2"]
    assert (inner.lists, inner.reads) == (1, 2)
    local_bucket.write("r/b.json", b"3")
    assert [view.read(i.name) for i in view.list("r/")] == [b"1", b"2"]  # within the ttl
    assert (inner.lists, inner.reads) == (1, 2)
    clock.now = 6
    assert [view.read(i.name) for i in view.list("r/")] == [b"1", b"3"]
    assert (inner.lists, inner.reads) == (2, 3)  # a.json was not read again


def test_a_missing_object_stays_missing_for_the_ttl_and_writes_are_refused(local_bucket) -> None:
    clock = Clock()
    view = ReadCache(local_bucket, ttl=5, clock=clock)
    with pytest.raises(NotFound):
        view.read("x")
    local_bucket.write("x", b"now")
    assert not view.exists("x")
    clock.now = 5
    assert view.read("x") == b"now"
    with pytest.raises(ReadOnly):
        view.write("y", b"no")
    assert not local_bucket.exists("y")


def test_a_page_past_the_ttl_gets_the_held_facts_at_once_while_one_refresh_runs_behind(
    local_bucket, tmp_path
) -> None:
    import threading

    from conftest import wait_for

    from shared.config import load_settings
    from shared.dashboard.sources import STALE_LIMIT, Sources

    settings = load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path), "DASHBOARD_CACHE_SECONDS": "5"})
    clock = Clock()
    sources = Sources(settings, ReadCache(local_bucket, 5, clock), ReadCache(local_bucket, 5, clock), clock)
    computed: list[int] = []
    release = threading.Event()

    def compute() -> int:
        if computed:  # every refresh waits until the test lets it finish
            release.wait(30)
        computed.append(len(computed))
        return len(computed)

    assert sources.memo("k", compute) == 1  # the first request computes
    clock.now = 4.9
    assert sources.memo("k", compute) == 1 and computed == [0]  # within the ttl: held
    clock.now = 6.0
    assert sources.memo("k", compute) == 1  # past it: the held value, at once ...
    assert sources.memo("k", compute) == 1  # ... and one refresh only, however many ask
    release.set()
    wait_for(lambda: sources.memo("k", compute), lambda v: v == 2)
    assert computed == [0, 1]
    clock.now = 6.0 + STALE_LIMIT * 5  # far too old to show: computed on the request
    assert sources.memo("k", compute) == 3

    fresh = Sources(load_settings({"DASHBOARD_CACHE_SECONDS": "0"}), sources.data, sources.artifacts, clock)
    assert [fresh.memo("k", lambda: len(computed)) for _ in range(2)] == [3, 3]
    computed.append(9)
    assert fresh.memo("k", lambda: len(computed)) == 4  # a ttl of 0 computes on every request
