"""The local file-drop router: storage triggers for local bucket folders (docs/design.md section 6).

For each finished file in a bucket folder that has subscribers (``infra/functions.json``), the
router stats it through ``LocalBucket`` (which gives a new or changed file its generation), builds
the CloudEvent Eventarc would send (``shared.events.build_cloudevent``, binary content mode) and
delivers it to every subscribed function (``shared.local.router.delivery``). It fires at most once per
object generation, whatever events the filesystem reports. Writes by the system itself fire too,
exactly as on GCS: promoting a model writes ``models/current.skops`` on the artifacts bucket,
which fires build_table.

    router = Router.from_declaration(settings).start()   # watches and delivers
    router.fire(info)                                    # deliver one object now (replay)
    router.stop()
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings, get_settings
from shared.errors import InvalidObjectName, NotFound
from shared.events import build_cloudevent
from shared.local.functions import Declaration, load_declaration
from shared.local.processes import HOST
from shared.local.router.delivery import Deliverer, Delivery, DeliveryResult
from shared.local.router.watcher import FolderWatcher, is_ignored
from shared.logs import get_logger
from shared.storage.base import ObjectInfo
from shared.storage.local import LocalBucket

__all__ = ["Route", "Router", "Delivery", "DeliveryResult", "is_ignored", "routes_from_declaration"]

log = get_logger(__name__)

_REMEMBERED = 100_000  # (bucket, name, generation) triples kept to refuse firing twice


@dataclass(frozen=True)
class Route:
    """Objects finalized in ``bucket`` are POSTed to ``url`` (the function ``function``)."""

    bucket: str
    function: str
    url: str
    retry: bool = True


def routes_from_declaration(
    settings: Settings,
    declaration: Declaration | None = None,
    urls: Mapping[str, str] | None = None,
) -> list[Route]:
    """One route per declared storage trigger; a function's URL is its local port on 127.0.0.1
    unless ``urls`` names another."""
    declaration = declaration or load_declaration()
    urls = urls or {}
    routes = []
    for trigger in declaration.triggers:
        spec = declaration.functions[trigger.function]
        url = urls.get(spec.name, f"http://{HOST}:{spec.port(settings)}")
        routes.append(Route(trigger.bucket(settings), spec.name, url, trigger.retry))
    return routes


class Router:
    """Watches the routed buckets' folders and delivers an event per finished object version."""

    def __init__(self, routes: list[Route], settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.routes = list(routes)
        self.buckets = {
            route.bucket: LocalBucket(self.settings.local_buckets_root, route.bucket) for route in self.routes
        }
        self.deliverer = Deliverer(
            deadletter_dir=self.settings.local_deadletter_dir,
            max_in_flight=self.settings.router_max_in_flight,
            backoff_seconds=self.settings.router_backoff_seconds,
            timeout_seconds=self.settings.router_timeout_seconds,
        )
        self.watcher = FolderWatcher(
            {name: bucket.folder for name, bucket in self.buckets.items()},
            self._on_finished,
            quiet_seconds=self.settings.router_quiet_seconds,
        )
        self._fired: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._lock = threading.Lock()
        # finished deliveries, in finishing order (the last _REMEMBERED: `prodml up` runs for days)
        self.results: deque[DeliveryResult] = deque(maxlen=_REMEMBERED)

    @classmethod
    def from_declaration(
        cls, settings: Settings | None = None, urls: Mapping[str, str] | None = None
    ) -> Router:
        """A router for the triggers of ``infra/functions.json``."""
        settings = settings or get_settings()
        return cls(routes_from_declaration(settings, urls=urls), settings)

    @property
    def folders(self) -> dict[str, Path]:
        """The watched folder of each routed bucket."""
        return {name: bucket.folder for name, bucket in self.buckets.items()}

    def start(self) -> Router:
        """Start watching the folders."""
        self.watcher.start()
        log.info(
            "router watching",
            extra={"fields": {"folders": {b: str(f) for b, f in self.folders.items()}}},
        )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching, then stop delivering (unfinished deliveries are dead-lettered)."""
        self.watcher.stop()
        self.deliverer.close(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no file is settling and no delivery is pending; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.watcher.settling or self.deliverer.pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def fire(self, info: ObjectInfo, *, again: bool = False) -> list[Future[DeliveryResult]]:
        """Deliver the event of ``info`` to every function subscribed to its bucket.

        Refuses (returns no futures) an object generation already fired, unless ``again``.
        """
        key = (info.bucket, info.name, info.generation)
        with self._lock:
            if key in self._fired and not again:
                return []
            self._fired[key] = None
            while len(self._fired) > _REMEMBERED:
                self._fired.popitem(last=False)
        futures = []
        for route in self.routes:
            if route.bucket != info.bucket:
                continue
            headers, body = build_cloudevent(info)  # a fresh ce-id per subscription, kept on retries
            delivery = Delivery(
                function=route.function,
                url=route.url,
                headers=headers,
                body=body,
                max_attempts=self.settings.router_max_attempts if route.retry else 1,
            )
            log.info(
                "router firing",
                extra={
                    "fields": {
                        "function": route.function,
                        "bucket": info.bucket,
                        "name": info.name,
                        "generation": info.generation,
                        "event_id": delivery.event_id,
                    }
                },
            )
            future = self.deliverer.submit(delivery)
            future.add_done_callback(self._record)
            futures.append(future)
        return futures

    def _record(self, future: Future[DeliveryResult]) -> None:
        with self._lock:
            self.results.append(future.result())

    def _on_finished(self, bucket: str, path: str) -> None:
        """Fire the object of the file settled at ``path`` (relative to the bucket folder)."""
        folder = self.buckets[bucket]
        try:
            # The file's own name, unless the store keeps a long name under a hashed file name.
            name = folder.object_name(path)
            info = folder.stat(name)
        except NotFound:
            return  # deleted right after settling
        except InvalidObjectName as exc:
            log.warning(
                "router: file is not a valid object name; it never fires (`prodml replay` lists it)",
                extra={"fields": {"error": str(exc)}},
            )
            return
        if is_ignored(name):
            return  # a temp name whose hashed file name hid its suffix from the watcher
        self.fire(info)
