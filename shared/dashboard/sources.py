"""What the dashboard's pages read, through the same functions the CLI prints.

Each fact comes from the function behind a CLI command's ``--json``, called on the dashboard's
cached views of the buckets (``shared.dashboard.cache.ReadCache``), so a page and the command
never disagree:

| page | function | command |
|---|---|---|
| versions | ``shared.cli.train_cmd.list_models`` | ``prodml models --json`` |
| one version | ``shared.training.registry.read_card`` | the card, ``models/versions/<v>/card.json`` |
| monitoring | ``shared.cli.monitor_cmd.collect`` | ``prodml monitor --json`` |
| live | ``shared.feedback.report.read_report`` (``feedback/live.json``) | ``prodml live --json`` |
| shadow | ``shared.cli.shadow_cmd.status`` (comparison: live report) | ``prodml shadow status --json`` |
| quarantine | ``shared.data.quarantine.list_quarantine`` | the reasons of ``prodml monitor --json`` |
| table | ``shared.tables.advisor.advise(measure=False)`` | ``prodml advise --json`` (no model timing) |
| overview | ``shared.feedback.report.serving_ages`` | ``/health``'s ages and warnings |

What a function returns is kept, and refreshed in the background once ``DASHBOARD_CACHE_SECONDS``
old (``memo``: a request never waits for a refresh). Measured with 1,000
cards and 10,000 monitoring records on the local backend (``python`` timing ``routes.handle`` in
process): a warm monitoring page 65 ms, every other page under 4 ms; a fresh instance's first page
about 3.6 s (2.6 s of imports, then listing and parsing every record); after the ttl a page lists
again and re-reads only what changed (the ReadCache), about 0.6 s for the monitoring records.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.config import Settings
from shared.dashboard.cache import ReadCache
from shared.errors import NotFound, RegistryError, SchemaError
from shared.logs import get_logger
from shared.storage import Bucket, artifacts_bucket, data_bucket
from shared.training.card import ModelCard

T = TypeVar("T")
log = get_logger(__name__)
STALE_LIMIT = 12  # ttls after which a held value is too old to show while it refreshes


@dataclass
class Sources:
    """The buckets a dashboard reads (cached views) and what it computed from them."""

    settings: Settings
    data: ReadCache
    artifacts: ReadCache
    clock: Callable[[], float] = time.monotonic
    _memo: dict[str, tuple[float, Any]] = field(default_factory=dict, init=False)
    _refreshing: set[str] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @classmethod
    def open(cls, settings: Settings, data: Bucket | None = None, artifacts: Bucket | None = None) -> Sources:
        """The settings' buckets (or those given), each behind a ``ReadCache``."""
        ttl = settings.dashboard_cache_seconds
        return cls(
            settings,
            ReadCache(data if data is not None else data_bucket(settings), ttl),
            ReadCache(artifacts if artifacts is not None else artifacts_bucket(settings), ttl),
        )

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` under ``key``, computed on the first request and then refreshed in the
        background once ``DASHBOARD_CACHE_SECONDS`` old (stale while revalidating).

        A request never waits for a refresh: past the ttl it gets the value held and starts one
        refresh (one at a time per key), so a page stays within its budget however long a
        re-list and re-parse of 10,000 records takes (about 0.6 s). A value older than
        ``STALE_LIMIT`` ttls (refreshes kept failing, or no request came for long) is computed
        on the request instead. A ttl of 0 computes on every request.
        """
        ttl = self.settings.dashboard_cache_seconds
        with self._lock:
            held = self._memo.get(key)
        if held is None or ttl <= 0 or self.clock() - held[0] >= STALE_LIMIT * ttl:
            return self._compute(key, compute)
        if self.clock() - held[0] >= ttl:
            self._refresh_in_background(key, compute)
        value: T = held[1]
        return value

    def _compute(self, key: str, compute: Callable[[], T]) -> T:
        value = compute()
        with self._lock:
            self._memo[key] = (self.clock(), value)
        return value

    def _refresh_in_background(self, key: str, compute: Callable[[], T]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def refresh() -> None:
            try:
                self._compute(key, compute)
            except Exception as exc:  # the held value stays; the next request past the ttl retries
                log.warning(f"dashboard: refreshing {key!r} failed: {exc!r}")
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        threading.Thread(target=refresh, name=f"prodml-dashboard-{key}", daemon=True).start()

    # --- the facts -----------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """``prodml models --json``: every version (oldest first) and the current one."""
        from shared.cli.train_cmd import list_models

        return self.memo("models", lambda: list_models(self.settings, self.artifacts))

    def card(self, version: str) -> ModelCard:
        """One version's card; ``RegistryError`` (400) for an invalid id, ``NotFound`` (404)."""
        from shared.training import registry

        return registry.read_card(self.artifacts, version)

    def monitoring(self) -> list[dict[str, Any]]:
        """``prodml monitor --json``: per file version, oldest first, then files with no outcome."""
        from shared.cli.monitor_cmd import collect

        return self.memo(
            "monitoring", lambda: collect(self.settings, data=self.data, artifacts=self.artifacts)
        )

    def quarantine(self) -> list[dict[str, Any]]:
        """Every quarantine reason record, oldest first."""
        from shared.data.quarantine import list_quarantine

        return self.memo("quarantine", lambda: list_quarantine(self.data))

    def live(self) -> dict[str, Any] | None:
        """The last live report (``feedback/live.json``), or None when none was written."""
        from shared.feedback.report import read_report

        return self.memo("live", lambda: read_report(self.artifacts))

    def shadow(self) -> dict[str, Any]:
        """``prodml shadow status --json``, its comparison taken from the live report (no join)."""
        from shared.cli.shadow_cmd import status

        def compute() -> dict[str, Any]:
            report = self.live()
            known = (
                ((report or {}).get("shadow"), None)
                if report is not None
                else (None, "no live report yet: it is written after each labels file")
            )
            return status(self.settings, self.artifacts, known=known)

        return self.memo("shadow", compute)

    def ages(self) -> dict[str, Any]:
        """The serving model's and the table's ages and warnings, as ``/health`` gives them."""
        from shared.feedback.report import serving_ages

        return serving_ages(self.artifacts, self.settings, time.time())

    def advice(self) -> dict[str, Any] | None:
        """``prodml advise --json`` without the model's timing, or None without a schema."""
        from shared.tables.advisor import advise

        def compute() -> dict[str, Any] | None:
            try:
                return advise(self.artifacts, self.settings, measure=False).to_dict()
            except (SchemaError, NotFound):
                return None

        return self.memo("advice", compute)

    def traffic(self) -> Counter[str]:
        """Every traffic file's key counts summed (``read_traffic``), whatever their key."""
        from shared.serving.traffic import read_traffic

        return self.memo("traffic", lambda: read_traffic(self.artifacts))

    def pointer(self) -> dict[str, Any] | None:
        """The table pointer (``tables/current.json``), or None."""
        from shared.tables.format import read_pointer

        return read_pointer(self.artifacts)[0]

    def cardinality(self) -> int | None:
        """The schema's key space, or None without a readable schema."""
        from shared.schema import load_schema

        try:
            return load_schema(self.artifacts).key_cardinality
        except SchemaError:
            return None


def read_at() -> str:
    """Now, as a page says when its facts were read."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = ["RegistryError", "Sources", "read_at"]
