"""Request traffic by key: the peakedness evidence the advisor and top-K table builds read.

Each predict instance counts the keys it is asked for in a ``HeavyHitters`` sketch (bounded
memory, whatever the key space) and periodically flushes the counts of the interval to
``traffic/<UTC yyyymmddThhmmss>-<instance_id>-<seq>.json``::

    {"key": ["country", "hour"], "counts": {"[\\"us\\",7]": 120, ...},
     "start": "2026-01-01T00:00:00+00:00", "end": "2026-01-01T00:01:00+00:00"}

``read_traffic`` sums every file (optionally only those ending after ``since``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.contracts import TRAFFIC_PREFIX
from shared.logs import get_logger
from shared.storage import Bucket

log = get_logger(__name__)

_STAMP = "%Y%m%dT%H%M%S"
_NAME = re.compile(rf"^{re.escape(TRAFFIC_PREFIX)}(\d{{8}}T\d{{6}})-[A-Za-z0-9_.-]+-\d+\.json$")
_seq = itertools.count(1)
MAX_TRAFFIC_FILE_BYTES = 64 * 1024 * 1024  # a flush of a 10k-key sketch is well under 1 MB


class HeavyHitters:
    """Space-Saving sketch (Metwally et al. 2005): the top keys of a stream in bounded memory.

    It tracks at most ``capacity`` keys. A new key arriving when full replaces the key with the
    smallest count ``m`` and starts at ``m + n`` with error ``m``: every count is an over-estimate
    by at most its error, and any key truly seen more than ``total / capacity`` times is tracked.
    The minimum is found with a heap of lower bounds refreshed lazily (counts only grow), so an
    ``add`` costs O(log capacity) amortized. One lock makes it safe for concurrent requests.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (count when pushed, key): one entry per key
        self._total = 0
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        """Count ``n`` more requests of ``key``."""
        with self._lock:
            self._add(key, n)

    def add_many(self, keys: Iterable[str]) -> None:
        """Count one request of each key (one lock for a whole request)."""
        with self._lock:
            for key in keys:
                self._add(key, 1)

    def _add(self, key: str, n: int) -> None:
        self._total += n
        counts = self._counts
        if key in counts:
            counts[key] += n
            return
        if len(counts) < self.capacity:
            counts[key] = n
            self._errors[key] = 0
            heapq.heappush(self._heap, (n, key))
            return
        # Evict the key with the smallest current count; stale heap entries are re-pushed.
        while True:
            low, victim = heapq.heappop(self._heap)
            current = counts[victim]
            if current == low:
                break
            heapq.heappush(self._heap, (current, victim))
        del counts[victim]
        del self._errors[victim]
        counts[key] = low + n
        self._errors[key] = low
        heapq.heappush(self._heap, (low + n, key))

    @property
    def total(self) -> int:
        """How many requests were counted in all (tracked or not)."""
        return self._total

    def __len__(self) -> int:
        return len(self._counts)

    def items(self) -> list[tuple[str, int, int]]:
        """Every tracked ``(key, count, error)``; the true count lies in ``[count - error, count]``."""
        with self._lock:
            return [(k, c, self._errors[k]) for k, c in self._counts.items()]

    def top(self, k: int) -> list[tuple[str, int, int]]:
        """The ``k`` keys with the highest counts, as ``(key, count, error)``, highest first."""
        return heapq.nlargest(k, self.items(), key=lambda item: (item[1], item[0]))

    def counts(self) -> dict[str, int]:
        """Estimated count of every tracked key."""
        with self._lock:
            return dict(self._counts)

    def drain(self) -> dict[str, int]:
        """The counts so far, and start afresh (for a periodic flush of per-interval counts)."""
        with self._lock:
            counts = self._counts
            self._counts, self._errors, self._heap, self._total = {}, {}, [], 0
            return counts


def _safe_instance_id(instance_id: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", instance_id)[:64].strip(".")
    return cleaned or "instance"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def flush_counts(
    artifacts: Bucket,
    counts: Mapping[str, int],
    key_features: list[str],
    instance_id: str,
    start: datetime,
    end: datetime,
) -> str:
    """Write the counts of one interval to ``traffic/`` and return the object name.

    The name starts with the UTC end time, so listing in name order is listing in time order;
    instance id and a per-process sequence number keep concurrent writers apart.
    """
    end_utc = _utc(end)
    name = f"{TRAFFIC_PREFIX}{end_utc:{_STAMP}}-{_safe_instance_id(instance_id)}-{next(_seq)}.json"
    body = {
        "key": list(key_features),
        "counts": {str(k): int(v) for k, v in counts.items()},
        "start": _utc(start).isoformat(),
        "end": end_utc.isoformat(),
    }
    artifacts.write(
        name,
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        content_type="application/json",
        if_generation_match=0,
    )
    return name


def _parse_traffic(data: bytes, name: str) -> tuple[list[str], dict[str, int]]:
    raw: Any = json.loads(data)
    if not isinstance(raw, dict) or not isinstance(raw.get("counts"), dict):
        raise ValueError("expected an object with 'counts'")
    counts = raw["counts"]
    for k, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"count of {k!r} is {v!r}, expected a non-negative integer")
    key = raw.get("key", [])
    return (key if isinstance(key, list) else []), counts


def read_traffic(
    artifacts: Bucket, since: datetime | None = None, key: list[str] | None = None
) -> Counter[str]:
    """Sum the counts of every traffic file (ending at or after ``since``, when given).

    With ``key``, files counted under another key (before a schema change) are skipped.
    Unreadable or malformed files are skipped with a warning: traffic is evidence, not data
    that must be whole.
    """
    since_stamp = f"{_utc(since):{_STAMP}}" if since is not None else None
    total: Counter[str] = Counter()
    for info in artifacts.list(TRAFFIC_PREFIX):
        match = _NAME.match(info.name)
        if match is None:
            continue
        if since_stamp is not None and match.group(1) < since_stamp:
            continue
        try:
            if info.size > MAX_TRAFFIC_FILE_BYTES:
                raise ValueError(f"{info.size} bytes is over {MAX_TRAFFIC_FILE_BYTES}")
            file_key, counts = _parse_traffic(artifacts.read(info.name), info.name)
        except Exception as exc:  # a bad or vanished file must not stop the sum
            log.warning(
                "skipping unreadable traffic file",
                extra={"fields": {"blob": info.name, "error": repr(exc)}},
            )
            continue
        if key is not None and file_key != list(key):
            continue
        total.update(counts)
    return total
