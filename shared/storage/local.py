"""The local backend: a bucket is the folder ``<root>/<bucket>/``, an object a plain file in it.

Users ``cp`` files into these folders and the file-drop router watches them, so nothing but
objects ever lives there. The bookkeeping lives beside the buckets, under the same root (same
filesystem, so ``os.replace`` from a temp file is atomic):

- ``<root>/.meta/<bucket>/generations.sqlite3``: per object its generation, content type, custom
  metadata and the identity of the file version it belongs to (inode, size, mtime, ctime). A file
  whose identity no longer matches (someone ``cp``-ed over it) gets a fresh generation, without
  metadata, the first time it is seen.
  It also keeps the real name of each path component stored under a hashed file name
  (``names.disk_component``: a component over the 255 bytes a file name may have, which GCS
  allows), so ``list`` gives back the real names and the router fires events with them.
- ``<root>/.meta/<bucket>/lock``: an ``flock`` held only around check-precondition + rename +
  record, never around copying data, so a 100 MB write does not block other writers.
- ``<root>/.tmp/``: temp files being written. A writer killed mid-write leaves only a temp file
  there (removed after an hour by the next process that opens the root); the object stays whole.

Generations are ``max(last + 1, now in microseconds)`` per bucket: monotonic across processes
and of the same magnitude as GCS's. The sqlite records and the lock are
``shared.storage.generations``.

The module stays whole at about 500 lines: it is one class, ``LocalBucket``, whose reads, writes,
listing and copies share one protocol (open, compare the file's identity with its record, retry
on a change; write a temp file, then check the precondition, rename and record under the lock),
and reads best in one place.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from shared.errors import InvalidObjectName, NotFound, ObjectChanged, PreconditionFailed, StorageError
from shared.storage.base import Bucket, ObjectInfo
from shared.storage.generations import GenerationRecord, GenerationStore, Transaction, file_identity
from shared.storage.metadata import check_metadata
from shared.storage.names import (
    check_bucket_name,
    check_local_object_name,
    default_content_type,
    disk_component,
    looks_hashed,
)

META_DIR = ".meta"
TMP_DIR = ".tmp"
STALE_TEMP_SECONDS = 3600.0
_MAX_ATTEMPTS = 50  # reads retried when the file is replaced between open and bookkeeping
_CHUNK = 1024 * 1024

_cleaned_roots: set[Path] = set()  # roots whose stale temps this process removed
_cleaned_lock = threading.Lock()


@dataclass(frozen=True)
class UnreachableFile:
    """A file in a bucket folder that no object name reaches (so it never fires), and why."""

    path: str  # relative to the bucket folder, ``/``-separated, as on disk
    reason: str


def _check_precondition(name: str, live: int | None, if_generation_match: int | None) -> None:
    if if_generation_match is None:
        return
    if if_generation_match == 0 and live is not None:
        raise PreconditionFailed(f"object {name!r} exists (generation {live}); expected it absent")
    if if_generation_match != 0 and live != if_generation_match:
        found = "it is absent" if live is None else f"it is at generation {live}"
        raise PreconditionFailed(f"object {name!r}: expected generation {if_generation_match}, {found}")


def _clean_stale_temps(tmp_dir: Path) -> None:
    """Remove temp files of writers that died more than STALE_TEMP_SECONDS ago."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    with contextlib.suppress(OSError), os.scandir(tmp_dir) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


class LocalBucket(Bucket):
    """A bucket kept as the folder ``<root>/<name>/`` (see the module docstring)."""

    def __init__(self, root: Path, name: str) -> None:
        self._name = check_bucket_name(name)
        self._root = Path(root)
        self._folder = self._root / name
        self._folder.mkdir(parents=True, exist_ok=True)
        self._real_folder = os.path.realpath(self._folder)
        self._tmp_dir = self._root / TMP_DIR
        self._tmp_dir.mkdir(exist_ok=True)
        self._generations = GenerationStore(self._root / META_DIR / name)
        self._components: dict[str, str] = {}  # hashed file name -> real component (never changes)
        real_root = Path(os.path.realpath(self._root))
        with _cleaned_lock:
            first = real_root not in _cleaned_roots
            _cleaned_roots.add(real_root)
        if first:
            _clean_stale_temps(self._tmp_dir)

    def __repr__(self) -> str:
        return f"LocalBucket({str(self._root)!r}, {self._name!r})"

    @property
    def name(self) -> str:
        """The bucket's name (its folder's name)."""
        return self._name

    @property
    def folder(self) -> Path:
        """The folder holding the objects (what the file-drop router watches)."""
        return self._folder

    # --- names and paths -------------------------------------------------------------------

    def _path(self, name: str) -> str:
        """The file of object ``name``, refusing anything that resolves outside the folder.

        A component too long for a file name is stored under its ``disk_component``.
        """
        check_local_object_name(name)
        path = os.path.join(self._folder, *(disk_component(part) for part in name.split("/")))
        real = os.path.realpath(path)
        if not real.startswith(self._real_folder + os.sep):
            raise InvalidObjectName(
                f"invalid object name {name!r}: resolves to {real!r}, outside bucket folder "
                f"{self._real_folder!r} (through a symlink)"
            )
        return path

    def object_name(self, relative_path: str) -> str:
        """The object name of the file at ``relative_path`` (``/``-separated, relative to the
        folder, as the file-drop router sees it); ``InvalidObjectName`` if no name reaches it."""
        name = "/".join(self._component(part) for part in relative_path.split("/"))
        return check_local_object_name(name)

    def _component(self, disk: str) -> str:
        """The real name component of the file name ``disk``."""
        if not looks_hashed(disk):
            return disk
        component = self._components.get(disk) or self._generations.component_of(disk)
        if component is None or disk_component(component) != disk:
            raise InvalidObjectName(
                f"invalid object name {disk!r}: looks like a long name's hashed file name, but "
                f"local bucket {self._name!r} has no record of it",
                "a hashed file name the store has no record of (copied in by hand?)",
            )
        self._components[disk] = component
        return component

    # --- generations -----------------------------------------------------------------------

    def _info(self, name: str, path: str, st: os.stat_result) -> ObjectInfo:
        """The info of the file version ``st`` (of ``path``), giving it a generation if new.

        Raises ``ObjectChanged`` if ``path`` no longer holds that version.
        """
        identity = file_identity(st)
        record = self._generations.lookup(name)
        if record is None or record.identity != identity:
            with self._generations.locked() as tx:
                try:
                    current = os.stat(path)
                except (FileNotFoundError, NotADirectoryError):
                    raise ObjectChanged from None
                if file_identity(current) != identity:
                    raise ObjectChanged
                record = tx.get(name)
                if record is None or record.identity != identity:
                    # Appeared or changed outside the store (a user's cp): a new version.
                    record = GenerationRecord(tx.next_generation(), identity, default_content_type(name))
                    tx.put(name, record.generation, identity, record.content_type)
        return ObjectInfo(
            bucket=self._name,
            name=name,
            size=st.st_size,
            generation=record.generation,
            content_type=record.content_type,
            updated=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
            metadata=dict(record.metadata),
        )

    def _live_generation(self, tx: Transaction, name: str, path: str) -> int | None:
        """Inside the lock: the generation of what ``path`` holds now, or None if absent."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        record = tx.get(name)
        identity = file_identity(st)
        if record is not None and record.identity == identity:
            return record.generation
        generation = tx.next_generation()
        tx.put(name, generation, identity, default_content_type(name))
        return generation

    # --- reading ---------------------------------------------------------------------------

    def _open(self, name: str) -> tuple[BinaryIO, os.stat_result, ObjectInfo]:
        """An open file of the live version, its stat and its info (all of the same version)."""
        path = self._path(name)
        for _ in range(_MAX_ATTEMPTS):
            try:
                # O_NONBLOCK: a FIFO someone left in the folder must not hang us.
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise self._not_found(name) from None
            f = os.fdopen(fd, "rb")
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                f.close()
                raise self._not_found(name)
            try:
                return f, st, self._info(name, path, st)
            except ObjectChanged:
                f.close()  # replaced between open and bookkeeping: open the new version
        raise self._too_busy(name)

    def _read_consistent(self, name: str, sink: BinaryIO | None) -> tuple[bytes, ObjectInfo]:
        """Read one whole version into memory or ``sink``.

        Our writes replace the file (a new inode), so an open file never changes under us; a
        user's ``cp`` over an existing file rewrites it in place, which the identity check
        after reading catches (then we read again).
        """
        for _ in range(_MAX_ATTEMPTS):
            f, st, info = self._open(name)
            with f:
                if sink is None:
                    data = f.read()
                    size = len(data)
                else:
                    sink.seek(0)
                    sink.truncate()
                    shutil.copyfileobj(f, sink, _CHUNK)
                    data, size = b"", sink.tell()
                unchanged = file_identity(os.fstat(f.fileno())) == file_identity(st)
            if unchanged and size == st.st_size:
                return data, info
        raise self._too_busy(name)

    def _not_found(self, name: str) -> NotFound:
        return NotFound(f"object {name!r} not found in local bucket {self._name!r}")

    def _too_busy(self, name: str) -> StorageError:
        return StorageError(
            f"object {name!r} in local bucket {self._name!r} changed {_MAX_ATTEMPTS} times while being read"
        )

    def read(self, name: str) -> bytes:
        """Return the object's bytes; ``NotFound`` if absent."""
        return self._read_consistent(name, None)[0]

    def read_with_info(self, name: str) -> tuple[bytes, ObjectInfo]:
        """Return the bytes and the info of the very same version."""
        return self._read_consistent(name, None)

    def download(self, name: str, path: Path) -> ObjectInfo:
        """Stream the object to the local file ``path``; return the info of what was copied.

        If the object is missing, ``path`` is removed (as google-cloud-storage does).
        """
        self._path(name)  # a bad name must not create or truncate ``path``
        try:
            with open(path, "wb") as sink:
                return self._read_consistent(name, sink)[1]
        except NotFound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    def stat(self, name: str) -> ObjectInfo:
        """Size, generation, content type, update time and metadata; ``NotFound`` if absent."""
        path = self._path(name)
        for _ in range(_MAX_ATTEMPTS):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise self._not_found(name) from None
            if not stat_mod.S_ISREG(st.st_mode):
                raise self._not_found(name)
            try:
                return self._info(name, path, st)
            except ObjectChanged:
                continue
        raise self._too_busy(name)

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        try:
            self.stat(name)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose names start with ``prefix``, in name order (a snapshot taken first)."""
        found = sorted(self._walk(prefix))
        records = self._generations.lookup_prefix(prefix)
        for name, st in found:
            record = records.get(name)
            if record is not None and record.identity == file_identity(st):
                yield ObjectInfo(
                    self._name,
                    name,
                    st.st_size,
                    record.generation,
                    record.content_type,
                    datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
                    dict(record.metadata),
                )
                continue
            with contextlib.suppress(NotFound):  # deleted since the walk: not listed
                yield self.stat(name)

    # builtins.list: inside this class, a bare `list` in an annotation names the method above.
    def unreachable(self, prefix: str = "") -> builtins.list[UnreachableFile]:
        """Files under ``prefix`` that no object name reaches: a name GCS refuses (a line feed,
        invalid UTF-8), a symlink out of the folder, a FIFO... They never fire and are never
        listed, so this is how they are shown to the user. In path order."""
        return sorted(
            (found for found in self._scan(prefix) if isinstance(found, UnreachableFile)),
            key=lambda found: found.path,
        )

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        """(name, stat) of every regular file whose name starts with ``prefix``."""
        for found in self._scan(prefix):
            if not isinstance(found, UnreachableFile):
                yield found

    def _scan(self, prefix: str) -> Iterator[tuple[str, os.stat_result] | UnreachableFile]:
        """Every file under ``prefix``: (name, stat) of objects, ``UnreachableFile`` of the rest."""
        start = prefix.rpartition("/")[0]
        if not start:
            yield from self._scan_dir(str(self._folder), "", "", prefix)
            return
        try:
            folder = self._path(start)  # the deepest folder the prefix names, if inside the bucket
        except InvalidObjectName:
            return  # no valid object name can start with this prefix
        disk = os.path.relpath(folder, self._folder).replace(os.sep, "/")
        yield from self._scan_dir(folder, start + "/", disk + "/", prefix)

    def _scan_dir(
        self, folder: str, rel: str, disk_rel: str, prefix: str
    ) -> Iterator[tuple[str, os.stat_result] | UnreachableFile]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            disk = disk_rel + entry.name
            name: str | None = None
            try:
                name = rel + self._component(os.fsdecode(entry.name))
                if entry.is_dir(follow_symlinks=False):
                    # Only descend where names under this folder can still match the prefix;
                    # never into a symlinked folder (it could lead out, or loop).
                    if (name + "/").startswith(prefix) or prefix.startswith(name + "/"):
                        yield from self._scan_dir(entry.path, name + "/", disk + "/", prefix)
                    continue
                if not name.startswith(prefix):
                    continue
                check_local_object_name(name)
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not real.startswith(self._real_folder + os.sep):
                        yield UnreachableFile(disk, f"a symlink to {real!r}, outside the bucket folder")
                        continue
                st = os.stat(entry.path)
                if stat_mod.S_ISREG(st.st_mode):
                    yield name, st
                else:
                    yield UnreachableFile(disk, "not a regular file")
            except InvalidObjectName as exc:
                if (name or disk).startswith(prefix):
                    yield UnreachableFile(disk, f"name refused: {exc.rule}")
            except OSError:
                continue  # vanished since the scan, or a dangling link

    # --- writing ---------------------------------------------------------------------------

    def _new_temp(self) -> tuple[int, str]:
        path = os.path.join(self._tmp_dir, f"{self._name}.{os.getpid()}.{secrets.token_hex(8)}.part")
        # 0o666 with O_CREAT lets the umask decide, as for a file the user copies in by hand.
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path

    def _commit(
        self,
        name: str,
        temp: str,
        content_type: str,
        metadata: Mapping[str, str],
        if_generation_match: int | None,
    ) -> int:
        """Under the lock: check the precondition, rename ``temp`` into place, record it.

        The rename and the record (generation, content type, metadata) are one sqlite
        transaction: a writer killed after the rename leaves a file the store has no record of,
        which the next reader gives a new generation without metadata, never another
        generation's metadata.
        """
        path = self._path(name)
        with self._generations.locked() as tx:
            _check_precondition(name, self._live_generation(tx, name, path), if_generation_match)
            tx.remember_components(name)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(temp, path)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise InvalidObjectName(
                    f"invalid object name {name!r}: a folder and a file would share a path in local "
                    f"bucket {self._name!r} (objects 'a' and 'a/b' cannot both exist locally): {exc}"
                ) from None
            generation = tx.next_generation()
            tx.put(name, generation, file_identity(os.stat(path)), content_type, metadata)
        return generation

    def _write_from(
        self,
        name: str,
        fill: Callable[[BinaryIO], object],
        content_type: str,
        metadata: Mapping[str, str] | None,
        if_generation_match: int | None,
    ) -> int:
        self._path(name)  # refuse a bad name before writing any data
        checked = check_metadata(metadata)  # and bad metadata
        fd, temp = self._new_temp()
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            return self._commit(name, temp, content_type, checked, if_generation_match)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # gone already when the rename happened

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write atomically, with ``metadata``; return the new generation. ``PreconditionFailed``
        if it does not hold, ``InvalidMetadata`` (nothing written) if GCS would refuse the metadata."""
        view = memoryview(data)
        return self._write_from(
            name,
            lambda f: f.write(view),
            content_type or default_content_type(name),
            metadata,
            if_generation_match,
        )

    def upload(
        self,
        name: str,
        path: Path,
        *,
        content_type: str | None = None,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write a local file's content (and ``metadata``, as ``write``) as the object, streaming;
        return the new generation."""
        with open(path, "rb") as src:
            return self._write_from(
                name,
                lambda f: shutil.copyfileobj(src, f, _CHUNK),
                content_type or default_content_type(name),
                metadata,
                if_generation_match,
            )

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete the object; ``NotFound`` if absent, ``PreconditionFailed`` if it does not hold.

        Empty folders are kept: users drop files into them (e.g. ``incoming/``).
        """
        path = self._path(name)
        with self._generations.locked() as tx:
            live = self._live_generation(tx, name, path)
            if live is None:
                raise self._not_found(name)
            _check_precondition(name, live, if_generation_match)
            os.unlink(path)
            tx.remove(name)

    def copy(
        self,
        name: str,
        dest: Bucket,
        dest_name: str,
        *,
        if_generation_match: int | None = None,
    ) -> int:
        """Copy to another ``LocalBucket`` (any root), content type and metadata with it; the
        precondition is on the destination."""
        if not isinstance(dest, LocalBucket):
            raise TypeError(f"LocalBucket.copy needs a LocalBucket destination, not {type(dest).__name__}")
        dest._path(dest_name)  # refuse a bad destination name before copying
        for _ in range(_MAX_ATTEMPTS):
            f, st, info = self._open(name)
            fd, temp = dest._new_temp()
            try:
                with f, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(f, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                    unchanged = (
                        file_identity(os.fstat(f.fileno())) == file_identity(st) and out.tell() == st.st_size
                    )
                if unchanged:
                    return dest._commit(
                        dest_name, temp, info.content_type or "", info.metadata, if_generation_match
                    )
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        raise self._too_busy(name)
