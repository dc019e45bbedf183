"""Watching local bucket folders for finished files.

A file is *finished* when its size and mtime have not changed for a quiet period
(``ROUTER_QUIET_SECONDS``): a file copied in slowly fires once, after the last byte, and never
half-way. Every write-related event (created, modified, attributes, closed after writing, moved
into place) restarts the quiet period of its file; the platform's close-after-write event is
treated the same and not as proof of completion, because a writer may close and reopen to append.
A file the local store writes atomically (temp file elsewhere, then rename into place) shows up as
created or moved-in with its final size, and fires after the quiet period.

Temp and hidden files never fire: any path component starting with ``.``, or a name ending in
``~``, ``.tmp``, ``.part``, ``.swp`` or ``.crdownload`` (editors, ``rsync``, browsers, ``gsutil``
write those and rename them when done: the rename then fires for the final name).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedNoWriteEvent,
    FileDeletedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer

from shared.logs import get_logger

log = get_logger(__name__)

IGNORED_SUFFIXES = ("~", ".tmp", ".part", ".swp", ".crdownload")


def is_ignored(relative_name: str) -> bool:
    """Whether a file at this path (relative to its bucket folder, ``/``-separated) never fires."""
    parts = relative_name.split("/")
    return any(part.startswith(".") for part in parts) or parts[-1].endswith(IGNORED_SUFFIXES)


@dataclass
class _Pending:
    signature: tuple[int, int] | None  # (size, mtime_ns) last seen, None until first looked at
    changed_at: float  # monotonic time of the last event or change seen


class FolderWatcher:
    """Calls ``on_finished(bucket, name)`` once for each file that settles in a watched folder.

    ``folders`` maps a bucket name to its folder. Calls come from one checker thread, in the order
    files settle; a slow callback delays the next ones, so hand work off quickly.
    """

    def __init__(
        self,
        folders: Mapping[str, Path],
        on_finished: Callable[[str, str], None],
        *,
        quiet_seconds: float = 0.5,
    ) -> None:
        self.folders = {bucket: Path(folder) for bucket, folder in folders.items()}
        self.on_finished = on_finished
        self.quiet_seconds = quiet_seconds
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer = Observer()
        self._checker = threading.Thread(target=self._check_loop, name="router-watcher", daemon=True)

    def start(self) -> FolderWatcher:
        """Start watching (files already there are not fired: ``prodml replay`` does that)."""
        # watchdog's inotify emitter warns when a new folder's watch is registered twice (a folder
        # created while its parent's watch is being added); the second registration replaces the
        # first and no event is lost, so the warning is only noise on the terminal.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        for bucket, folder in self.folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(_Handler(self, bucket, folder), str(folder), recursive=True)
        self._observer.start()
        self._checker.start()
        return self

    def stop(self) -> None:
        """Stop watching; files still settling do not fire."""
        self._stop.set()
        self._wake.set()
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._checker.is_alive():
            self._checker.join(timeout=5)

    @property
    def settling(self) -> int:
        """Files seen changing that have not settled yet."""
        with self._lock:
            return len(self._pending)

    def touched(self, bucket: str, name: str) -> None:
        """A write-related event for ``name``: (re)start its quiet period."""
        with self._lock:
            entry = self._pending.get((bucket, name))
            if entry is None:
                self._pending[(bucket, name)] = _Pending(None, time.monotonic())
            else:
                entry.changed_at = time.monotonic()
        self._wake.set()

    def gone(self, bucket: str, name: str) -> None:
        """``name`` was deleted or moved away: forget it."""
        with self._lock:
            self._pending.pop((bucket, name), None)

    def _check_loop(self) -> None:
        # Poll settling files a few times per quiet period; sleep until an event when none are.
        interval = max(0.02, min(0.05, self.quiet_seconds / 10))
        while not self._stop.is_set():
            if not self.settling:
                self._wake.wait()
                self._wake.clear()
                continue
            self._stop.wait(interval)
            for (bucket, name), entry, changed_at in self._settled():
                try:
                    self.on_finished(bucket, name)
                except Exception:  # a bug in a callback must not stop the watcher
                    log.exception("router: handling a finished file failed", extra={"fields": {"name": name}})
                # Forgotten only now, so "settling" covers the hand-off; kept if touched meanwhile.
                with self._lock:
                    if self._pending.get((bucket, name)) is entry and entry.changed_at == changed_at:
                        del self._pending[(bucket, name)]

    def _settled(self) -> list[tuple[tuple[str, str], _Pending, float]]:
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        ready: list[tuple[tuple[str, str], _Pending, float]] = []
        for (bucket, name), entry in items:
            try:
                st = os.stat(self.folders[bucket] / name)
            except OSError:
                self.gone(bucket, name)  # vanished before settling: nothing to fire
                continue
            signature = (st.st_size, st.st_mtime_ns)
            with self._lock:
                if self._pending.get((bucket, name)) is not entry:
                    continue
                if entry.signature is None:
                    # First look: the quiet period runs from the event that brought it here (every
                    # write sends one, so a later write restarts it through touched()).
                    entry.signature = signature
                elif signature != entry.signature:
                    entry.signature, entry.changed_at = signature, max(entry.changed_at, now)
                    continue
                if now - entry.changed_at >= self.quiet_seconds:
                    ready.append(((bucket, name), entry, entry.changed_at))
        return ready


class _Handler(FileSystemEventHandler):
    """Turns watchdog events under one bucket folder into ``touched``/``gone`` calls."""

    def __init__(self, watcher: FolderWatcher, bucket: str, folder: Path) -> None:
        self.watcher = watcher
        self.bucket = bucket
        self.folder = os.path.realpath(folder)

    def _name(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        relative = os.path.relpath(os.path.realpath(path), self.folder)
        if relative.startswith("..") or relative == ".":
            return None
        relative = relative.replace(os.sep, "/")
        return None if is_ignored(relative) else relative

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Route one watchdog event."""
        if event.is_directory or isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent):
            return  # folders are not objects; reads (the functions' own) change nothing
        if isinstance(event, FileSystemMovedEvent):
            source = self._name(event.src_path)
            if source is not None:
                self.watcher.gone(self.bucket, source)
            target = self._name(event.dest_path)
            if target is not None:
                self.watcher.touched(self.bucket, target)
            return
        name = self._name(event.src_path)
        if name is None:
            return
        if isinstance(event, FileDeletedEvent):
            self.watcher.gone(self.bucket, name)
        else:
            self.watcher.touched(self.bucket, name)
