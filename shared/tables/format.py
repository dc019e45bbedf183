"""The static prediction table: its format in the artifacts bucket and its form in memory.

A table maps a **key** (the values of the schema's key features, in key order) to the model's
score for that key, the key stored as its int64 code (``shared.tables.codec``).

Blobs (ARTIFACTS bucket)::

    tables/<model version>/<strategy>-<build id>.npz
                                  one build: one uncompressed npz of codes (int64, sorted, unique),
                                  scores (float64, (n,) or (n, k) for multiclass), meta (JSON)
    tables/current.json           the pointer: {"blob", "version" (the model version),
                                  "model_version", "model_generation", "rows", "strategy",
                                  "built_at", "key", ...}

One object holds codes and scores together, so a reader never pairs the codes of one build with
the scores of another. Every build writes its own object (the build id is a UTC timestamp and a
random suffix: unique, and sorted by time), so a rebuild of the same model (full after top-K,
top-K from newer traffic) never overwrites the object the pointer names, and the pointer's rows
and strategy always describe the object it names. The pointer is switched with compare-and-swap
on its generation. Pointers written before build ids (no "blob") name the old location
``tables/<version>/table.npz`` (``table_blob``), which readers still follow. The npz
is uncompressed because loading is then little more than a copy: a million keys load in tens of
milliseconds (see ``bench/bench_serving.py``); ``lookup_one`` is a binary search in microseconds.

The module stays whole at about 390 lines: blob names, the table object and the pointer are one
storage format (the pointer names the object, the object's name carries the build), defined in
one place so a reader and a writer cannot disagree.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shared.config import get_settings
from shared.contracts import TABLE_POINTER, TABLE_PREFIX
from shared.errors import NotFound, TableError, ZipTooLarge
from shared.logs import get_logger
from shared.storage import Bucket
from shared.zip_limits import read_npz

log = get_logger(__name__)

POINTER_FIELDS = (
    "blob",
    "version",
    "model_version",
    "model_generation",
    "rows",
    "strategy",
    "built_at",
    "key",
)
META_REQUIRED = ("model_version", "model_generation", "key")
_VERSION_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# <strategy>-<build id>.npz (or the old table.npz): letters, digits, '-' and '_' before ".npz"
_BUILD_FILE = re.compile(r"[A-Za-z0-9_-]{1,120}\.npz")


def _check_version(version: str) -> str:
    if not version or not set(version) <= _VERSION_CHARS or version.strip(".") == "":
        raise TableError(f"table version {version!r} must be non-empty letters, digits, '-', '_' or '.'")
    return version


def table_blob(version: str) -> str:
    """The old single location of table ``version``: ``tables/<version>/table.npz``.

    Builds no longer write it (see ``build_blob``); it is where a pointer without a "blob" field,
    written before build ids, names its table.
    """
    return f"{TABLE_PREFIX}{_check_version(version)}/table.npz"


def new_build_id(now: datetime | None = None) -> str:
    """A unique build id that sorts by time: ``20261125T130102123456Z-1a2b3c4d`` (UTC, microseconds)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{when:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}"


def build_blob(model_version: str, strategy: str, build_id: str) -> str:
    """The object of one build: ``tables/<model version>/<strategy>-<build id>.npz``."""
    return check_table_name(f"{TABLE_PREFIX}{model_version}/{strategy}-{build_id}.npz")


def build_id_of(name: str) -> str | None:
    """The build id in a build object's name (``tables/v/<strategy>-<id>.npz``); None for others
    (the old ``table.npz``)."""
    file = name.rsplit("/", 1)[-1]
    stem, dash, build_id = file.removesuffix(".npz").partition("-")
    return build_id if dash and stem and build_id[:8].isdigit() else None


def check_table_name(name: str) -> str:
    """``name`` if it is ``tables/<version>/<file>.npz`` (nothing that escapes the folder), else
    ``TableError`` naming it."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 3 or parts[0] + "/" != TABLE_PREFIX or not _BUILD_FILE.fullmatch(parts[2]):
        raise TableError(f"table object {name!r} is not {TABLE_PREFIX}<version>/<letters, digits, -, _>.npz")
    _check_version(parts[1])
    return name


def pointer_blob(pointer: Mapping[str, Any]) -> str:
    """The object ``pointer`` names: its "blob", or for an old pointer its version's ``table.npz``."""
    blob = pointer.get("blob")
    return check_table_name(blob) if blob is not None else table_blob(str(pointer.get("version")))


# --- the table -----------------------------------------------------------------------------------


@dataclass
class Table:
    """A loaded table: sorted codes and their scores, and what built them."""

    version: str
    model_version: str
    model_generation: int
    key: tuple[str, ...]
    codes: np.ndarray
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    blob: str = ""  # the object it was read from ("" for a table made in memory)

    def __post_init__(self) -> None:
        n = len(self.codes)
        # A full table (every code 0..n-1) is answered by direct indexing, no search at all.
        self._dense = bool(n == 0 or (int(self.codes[0]) == 0 and int(self.codes[-1]) == n - 1))
        # Bound methods and .item() (a Python number, no numpy scalar) keep lookup_one near 1 us.
        self._search = self.codes.searchsorted
        self._code_at = self.codes.item
        self._score_at: Callable[[int], float | np.ndarray] = (
            self.scores.item if self.scores.ndim == 1 else self.scores.__getitem__
        )

    def __len__(self) -> int:
        return len(self.codes)

    def lookup(self, codes: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each code: whether the table holds it, and its score row (undefined where not found)."""
        wanted = np.asarray(codes, dtype=np.int64)
        n = len(self.codes)
        if n == 0:
            return np.zeros(len(wanted), dtype=bool), np.zeros((len(wanted), *self.scores.shape[1:]))
        pos = np.minimum(np.searchsorted(self.codes, wanted), n - 1)
        found = (self.codes[pos] == wanted) & (wanted >= 0)
        return found, self.scores[pos]

    def lookup_one(self, code: int) -> float | np.ndarray | None:
        """The score (a float, or a row for multiclass) of one code, or None if absent."""
        n = len(self.codes)
        if code < 0:
            return None
        if self._dense:
            return self._score_at(code) if code < n else None
        i = int(self._search(code))
        if i < n and self._code_at(i) == code:
            return self._score_at(i)
        return None


def _check_arrays(codes: np.ndarray, scores: np.ndarray, where: str) -> None:
    if codes.ndim != 1 or codes.dtype != np.int64:
        raise TableError(f"{where}: codes must be a 1-d int64 array, got {codes.dtype} {codes.shape}")
    if scores.dtype != np.float64 or scores.ndim not in (1, 2) or len(scores) != len(codes):
        raise TableError(
            f"{where}: scores must be float64 of shape (n,) or (n, k) with n={len(codes)}, "
            f"got {scores.dtype} {scores.shape}"
        )
    if len(codes) and (codes[0] < 0 or bool(np.any(codes[1:] <= codes[:-1]))):
        raise TableError(f"{where}: codes must be non-negative, sorted and unique")
    if not bool(np.all(np.isfinite(scores))):
        raise TableError(f"{where}: scores hold NaN or infinity")


def write_table(
    artifacts: Bucket,
    name: str,
    codes: np.ndarray,
    scores: np.ndarray,
    meta: Mapping[str, Any],
) -> int:
    """Write one table as the npz object ``name`` (``build_blob(...)``); return its generation.

    ``meta`` must hold ``model_version``, ``model_generation`` and ``key`` (the key feature
    names); anything else JSON-able (strategy, built_at, coverage, ...) is kept as is.
    """
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    check_table_name(name)
    _check_arrays(codes, scores, name)
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise TableError(f"{name}: meta lacks {missing}")
    meta_json = json.dumps({**meta, "version": name.split("/")[1], "blob": name}, default=str)
    # Serialized to a temporary file and uploaded from it (streamed), never as bytes in memory: a
    # BytesIO and its getvalue() were two more copies of the table's 16 bytes a row. (Where /tmp is
    # memory, as on Cloud Functions, the file is then the one copy.)
    fd, path = tempfile.mkstemp(prefix="prodml-table-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as out:
            _write_npz(out, {"codes": codes, "scores": scores, "meta": np.array(meta_json)})
        return artifacts.upload(name, Path(path), content_type="application/octet-stream")
    finally:
        os.unlink(path)


def _write_npz(out: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as the uncompressed npz ``np.savez`` writes (``np.load`` reads it), straight
    from the arrays' memory: ``np.savez`` first copies each array in 16 MiB ``tobytes`` chunks.

    Arrays of one or more dimensions must be C-contiguous (``write_table`` makes them so).
    """
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as npz:
        for key, array in arrays.items():
            with npz.open(f"{key}.npy", "w", force_zip64=True) as member:
                if array.ndim == 0:  # the small meta string: numpy's own writer
                    np.lib.format.write_array(member, array, allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(array))
                if array.size:  # memoryview cannot cast an empty shape; an empty table has no data
                    member.write(array.data.cast("B"))  # .data: the array's buffer, as a memoryview


def read_table(artifacts: Bucket, name: str, max_bytes: int | None = None) -> Table:
    """Load the table object ``name``; ``NotFound`` if absent, ``TableError`` if malformed.

    A blob whose members would decompress to more than ``max_bytes`` (default: the process's
    ``MAX_TABLE_BYTES``) is refused (``TableError``) before any of it is read.
    """
    check_table_name(name)
    data = artifacts.read(name)
    limit = get_settings().max_table_bytes if max_bytes is None else max_bytes
    try:
        columns, meta = read_npz(data, limit, "MAX_TABLE_BYTES")
        codes, scores = columns["codes"], columns["scores"]
    except ZipTooLarge as exc:
        raise TableError(f"{name} is refused unread: {exc}") from None
    except Exception as exc:  # BadZipFile, KeyError, ValueError...: a corrupt blob is bad data, not a crash
        raise TableError(f"{name} is not a table npz: {exc!r}") from None
    _check_arrays(codes, scores, name)
    if not isinstance(meta, dict) or any(k not in meta for k in META_REQUIRED):
        raise TableError(f"{name}: meta must hold {list(META_REQUIRED)}, got {meta!r}")
    return Table(
        version=name.split("/")[1],
        model_version=str(meta["model_version"]),
        model_generation=int(meta["model_generation"]),
        key=tuple(meta["key"]),
        codes=codes,
        scores=scores,
        meta=meta,
        blob=name,
    )


# --- the pointer ---------------------------------------------------------------------------------


def read_pointer(artifacts: Bucket) -> tuple[dict[str, Any] | None, int]:
    """The pointer and its generation; ``(None, 0)`` when there is none.

    A malformed pointer gives ``(None, generation)`` and a warning, so a builder can still
    replace it with compare-and-swap. (A reader that must not mistake a malformed pointer for
    no table, as predict, uses ``read_valid_pointer``.)
    """
    try:
        data, info = artifacts.read_with_info(TABLE_POINTER)
    except NotFound:
        return None, 0
    try:
        pointer = parse_pointer(data)
    except TableError as exc:
        log.warning(
            "table pointer is malformed; ignoring it",
            extra={"fields": {"blob": TABLE_POINTER, "generation": info.generation, "error": str(exc)}},
        )
        return None, info.generation
    return pointer, info.generation


def read_valid_pointer(artifacts: Bucket) -> tuple[dict[str, Any] | None, int]:
    """The pointer and its generation; ``(None, 0)`` when there is none, ``TableError`` (naming
    what is wrong) when there is one but it is malformed."""
    try:
        data, info = artifacts.read_with_info(TABLE_POINTER)
    except NotFound:
        return None, 0
    return parse_pointer(data), info.generation


def parse_pointer(data: bytes) -> dict[str, Any]:
    """The pointer held in ``data``: a JSON object with a "version" string; ``TableError`` if not."""
    try:
        pointer = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableError(f"the table pointer is not JSON: {exc}") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise TableError(f"the table pointer must be an object with a 'version' string, got {pointer!r:.200}")
    return pointer


def switch_pointer(artifacts: Bucket, pointer: Mapping[str, Any], if_generation_match: int) -> int:
    """Point ``tables/current.json`` at a table, only if its generation is still
    ``if_generation_match`` (0: only if absent); ``PreconditionFailed`` otherwise. Returns the
    new generation."""
    missing = [k for k in POINTER_FIELDS if k not in pointer]
    if missing:
        raise TableError(f"table pointer lacks {missing}: {dict(pointer)!r}")
    check_table_name(str(pointer["blob"]))
    _check_version(str(pointer["version"]))
    body = json.dumps(dict(pointer), default=str, indent=1).encode()
    return artifacts.write(
        TABLE_POINTER, body, content_type="application/json", if_generation_match=if_generation_match
    )


def prune_builds(artifacts: Bucket, model_version: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest build objects of ``model_version``; return their names.

    Never the object the pointer names (read just before deleting), whatever its age, and never
    an object without a build id (an old ``table.npz`` an old pointer may name). A build still
    switching the pointer wrote the newest object, which is kept. Objects another pruner deleted
    first are skipped.
    """
    folder = f"{TABLE_PREFIX}{_check_version(model_version)}/"
    builds = sorted(
        ((build_id, info.name) for info in artifacts.list(folder) if (build_id := build_id_of(info.name))),
        reverse=True,
    )
    if len(builds) <= keep:
        return []
    pointer, _ = read_pointer(artifacts)
    named = pointer_blob(pointer) if pointer is not None else None
    deleted = []
    for _, name in builds[keep:]:
        if name == named:
            continue
        try:
            artifacts.delete(name)
        except NotFound:
            continue
        deleted.append(name)
    return deleted


def load_current_table(artifacts: Bucket) -> Table | None:
    """The table the pointer names, or None when there is no (valid) pointer.

    ``NotFound`` if the pointer names a missing blob, ``TableError`` if the blob is malformed or
    disagrees with the pointer; callers keep what they had.
    """
    pointer, _ = read_pointer(artifacts)
    if pointer is None:
        return None
    return read_pointed_table(artifacts, pointer)


def read_pointed_table(artifacts: Bucket, pointer: Mapping[str, Any], max_bytes: int | None = None) -> Table:
    """The table object ``pointer`` names, checked against it (model version, rows).

    ``NotFound`` if the object is missing, ``TableError`` if it is malformed, larger than
    ``max_bytes`` (see ``read_table``) or disagrees with the pointer (a table the pointer does
    not describe is never served).
    """
    name = pointer_blob(pointer)
    table = read_table(artifacts, name, max_bytes)
    if "model_version" in pointer and str(pointer["model_version"]) != table.model_version:
        raise TableError(
            f"table pointer names model {pointer['model_version']!r} but {name} "
            f"was built from {table.model_version!r}"
        )
    if "rows" in pointer and int(pointer["rows"]) != len(table):
        raise TableError(f"table pointer says {pointer['rows']} rows but {name} holds {len(table)}")
    return table
