"""The generation store of a local bucket: ``<root>/.meta/<bucket>/generations.sqlite3`` and its lock.

Per object it records the generation, the content type and the identity of the file version the
generation belongs to, the object's custom metadata, and the real name behind each hashed path
component (see ``shared.storage.local``, whose ``LocalBucket`` is its one user). Readers only
SELECT; writers take the bucket's ``flock`` and one sqlite transaction (``GenerationStore.locked``).

Custom metadata lives in its own table, ``object_metadata``, keyed by name and holding the
generation it belongs to; it counts only while that is the object's recorded generation. So it is
written in the transaction that records the generation (a writer killed before the commit leaves
neither), a record that gets a new generation any other way (a file changed by hand) has none,
and a database made before metadata existed needs only the new table (``CREATE TABLE IF NOT
EXISTS``): the ``objects`` table keeps its four columns, so older code still writes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.storage.names import disk_component

# "inode:size:mtime_ns:ctime_ns" (text: inode numbers may not fit sqlite's signed 64-bit ints).
# ctime cannot be set by users, so even ``cp -p`` over a file of the same size is noticed; our
# own writes always bring a new inode.
Identity = str

_inherited_connections: list[sqlite3.Connection] = []  # see GenerationStore._conn


def file_identity(st: os.stat_result) -> Identity:
    """The identity of the file version ``st`` describes (see ``Identity``)."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


# One record: the object's row, and its metadata only where it belongs to the recorded generation.
_SELECT_RECORDS = (
    "SELECT o.name, o.generation, o.identity, o.content_type, m.metadata FROM objects AS o"
    " LEFT JOIN object_metadata AS m ON m.name = o.name AND m.generation = o.generation"
)


@dataclass(frozen=True)
class GenerationRecord:
    """What the store knows of one object: its generation, file identity, content type and custom
    metadata (a fresh dict per record)."""

    generation: int
    identity: Identity
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


def _record(row: tuple[str, int, Identity, str, str | None]) -> GenerationRecord:
    """The record of one ``_SELECT_RECORDS`` row (its metadata column is JSON, or NULL for none)."""
    _name, generation, identity, content_type, metadata = row
    return GenerationRecord(generation, identity, content_type, json.loads(metadata) if metadata else {})


class GenerationStore:
    """The generation records of one bucket: a small sqlite db plus an flock for writers.

    Readers only SELECT (WAL mode: never blocked by a writer). Writers take the flock first, so
    they queue in the kernel and wake at once, instead of polling on sqlite's busy handler.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._db_path = folder / "generations.sqlite3"
        self._lock_path = folder / "lock"
        self._local = threading.local()
        with self.locked() as tx:  # under the lock: race-free when processes start together
            tx.create_schema()

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread (sqlite3 objects are not shared across threads) and per
        # process: a connection inherited through fork must not be used, nor closed (closing
        # could disturb the parent's locks), so it is parked in _inherited_connections.
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        if held is not None:
            _inherited_connections.append(held[1])
        conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=True, timeout=60.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL skips an fsync per commit; after a power cut a lost record only means the file
        # looks changed and gets a new (still larger, time-based) generation.
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.held = (os.getpid(), conn)
        return conn

    def lookup(self, name: str) -> GenerationRecord | None:
        """The record of ``name`` as last committed (no lock)."""
        row = self._conn().execute(f"{_SELECT_RECORDS} WHERE o.name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def component_of(self, disk: str) -> str | None:
        """The real name component stored under the hashed file name ``disk``, if recorded."""
        row = self._conn().execute("SELECT component FROM components WHERE disk = ?", (disk,)).fetchone()
        return str(row[0]) if row else None

    def lookup_prefix(self, prefix: str) -> dict[str, GenerationRecord]:
        """The records of every name starting with ``prefix`` (no lock)."""
        rows = self._conn().execute(
            f"{_SELECT_RECORDS} WHERE substr(o.name, 1, ?) = ?", (len(prefix), prefix)
        )
        return {row[0]: _record(row) for row in rows}

    @contextlib.contextmanager
    def locked(self) -> Iterator[Transaction]:
        """The bucket's writer lock and one sqlite transaction, committed on success."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            os.close(fd)  # releases the flock


class Transaction:
    """Record operations inside ``GenerationStore.locked``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def create_schema(self) -> None:
        """Create the tables (objects, their metadata, the generation counter, hashed components)
        if absent: also what brings a database of older code up to date."""
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS objects (name TEXT PRIMARY KEY, generation INTEGER NOT NULL,"
            " identity TEXT NOT NULL, content_type TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS object_metadata (name TEXT PRIMARY KEY,"
            " generation INTEGER NOT NULL, metadata TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS components (disk TEXT PRIMARY KEY, component TEXT NOT NULL)"
        )

    def remember_components(self, name: str) -> None:
        """Record the real component behind each hashed file name of ``name``'s path."""
        for part in name.split("/"):
            disk = disk_component(part)
            if disk != part:
                self._conn.execute("INSERT OR IGNORE INTO components VALUES (?, ?)", (disk, part))

    def get(self, name: str) -> GenerationRecord | None:
        """The record of ``name`` as this transaction sees it."""
        row = self._conn.execute(f"{_SELECT_RECORDS} WHERE o.name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def put(
        self,
        name: str,
        generation: int,
        identity: Identity,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Record ``name`` at ``generation``, for the file version ``identity``, with ``metadata``
        (none when None or empty)."""
        self._conn.execute(
            "INSERT OR REPLACE INTO objects (name, generation, identity, content_type) VALUES (?, ?, ?, ?)",
            (name, generation, identity, content_type),
        )
        if metadata:
            self._conn.execute(
                "INSERT OR REPLACE INTO object_metadata (name, generation, metadata) VALUES (?, ?, ?)",
                (name, generation, json.dumps(dict(metadata), sort_keys=True)),
            )
        else:
            self._conn.execute("DELETE FROM object_metadata WHERE name = ?", (name,))

    def remove(self, name: str) -> None:
        """Forget ``name`` (it was deleted)."""
        self._conn.execute("DELETE FROM objects WHERE name = ?", (name,))
        self._conn.execute("DELETE FROM object_metadata WHERE name = ?", (name,))

    def next_generation(self) -> int:
        """A new generation: ``max(last + 1, now in microseconds)``, monotonic across processes."""
        row = self._conn.execute("SELECT last FROM counter WHERE id = 1").fetchone()
        last = row[0] if row else 0
        generation = max(last + 1, time.time_ns() // 1000)
        self._conn.execute("INSERT OR REPLACE INTO counter VALUES (1, ?)", (generation,))
        return generation
