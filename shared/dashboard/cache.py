"""A read-only, caching view of a bucket: what keeps a dashboard page within its time budget.

A page reads through the same functions the CLI uses (``list_models``, ``collect``,
``list_quarantine``, ...), and they list a prefix and read each object in it. Measured on the local
backend with 1,000 cards and 10,000 monitoring records (docs/design.md section 5, dashboard):
listing ``monitoring/`` alone takes about 0.33 s and reading every record 1.6 s, far over the
300 ms a page may take. So the dashboard hands those functions a ``ReadCache`` instead of the
bucket:

- a listing, a stat (or its ``NotFound``) is reused for ``ttl`` seconds (``DASHBOARD_CACHE_SECONDS``),
  so a warm page costs no storage call at all;
- an object's bytes are kept by name with the generation they were read at, and read again only
  when a fresher listing or stat shows another generation: list once, read only what changed.

What a page computes from these views (parsed cards, merged records) is kept for the same
``ttl`` by ``shared.dashboard.sources.Sources.memo``, so a warm page parses nothing either.

Within ``ttl`` a page may thus show the buckets as they were up to ``ttl`` seconds ago; every page
says when its facts were read. Bodies over ``MAX_CACHED_BYTES`` are passed through uncached (the
dashboard reads no model or table body; this bounds what one odd object can hold in memory).
Writes are refused: the dashboard never writes.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import NotFound, ReadOnly
from shared.storage import Bucket, ObjectInfo

MAX_CACHED_BYTES = 1024 * 1024


@dataclass
class _Stat:
    info: ObjectInfo | None  # None: NotFound
    at: float


class ReadCache:
    """``bucket``'s read operations, cached as the module doc says; thread-safe."""

    def __init__(self, bucket: Bucket, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = bucket
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, builtins.list[ObjectInfo]]] = {}
        self._stats: dict[str, _Stat] = {}
        self._bodies: dict[str, tuple[int, bytes]] = {}

    @property
    def name(self) -> str:
        """The bucket's name."""
        return self._bucket.name

    @property
    def inner(self) -> Bucket:
        """The bucket this view reads."""
        return self._bucket

    def _fresh(self, at: float) -> bool:
        return self._clock() - at < self._ttl

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The listing of ``prefix``, reused for ``ttl`` seconds; its entries refresh the stats."""
        with self._lock:
            cached = self._listings.get(prefix)
            if cached is not None and self._fresh(cached[0]):
                return iter(cached[1])
        infos = builtins.list(self._bucket.list(prefix))
        now = self._clock()
        with self._lock:
            self._listings[prefix] = (now, infos)
            for info in infos:
                self._stats[info.name] = _Stat(info, now)
        return iter(infos)

    def stat(self, name: str) -> ObjectInfo:
        """The object's info (or ``NotFound``), reused for ``ttl`` seconds."""
        with self._lock:
            cached = self._stats.get(name)
        if cached is None or not self._fresh(cached.at):
            try:
                info: ObjectInfo | None = self._bucket.stat(name)
            except NotFound:
                info = None
            cached = _Stat(info, self._clock())
            with self._lock:
                self._stats[name] = cached
        if cached.info is None:
            raise NotFound(f"no object {name!r} in bucket {self.name!r}")
        return cached.info

    def exists(self, name: str) -> bool:
        """Whether the object exists (from the cached stat)."""
        try:
            self.stat(name)
        except NotFound:
            return False
        return True

    def read_with_info(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The bytes of the generation the cached stat names, read only if not held already."""
        info = self.stat(name)  # NotFound propagates, as the bucket's read would raise it
        with self._lock:
            body = self._bodies.get(name)
        if body is not None and body[0] == info.generation:
            return body[1], info
        data, info = self._bucket.read_with_info(name)
        now = self._clock()
        with self._lock:
            self._stats[name] = _Stat(info, now)
            if len(data) <= MAX_CACHED_BYTES:
                self._bodies[name] = (info.generation, data)
        return data, info

    def read(self, name: str) -> bytes:
        """The object's bytes (``read_with_info``)."""
        return self.read_with_info(name)[0]

    def download(self, name: str, path: Path) -> ObjectInfo:
        """Uncached: a download is for big objects."""
        return self._bucket.download(name, path)

    def __getattr__(self, attribute: str) -> Any:
        # What a backend offers beyond the protocol (the local backend's ``unreachable``) reads on
        # through; the protocol's writes are refused below.
        return getattr(self._bucket, attribute)

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise ReadOnly(f"the dashboard's view of bucket {self.name!r} is read-only")

    write = upload = delete = copy = _refuse
