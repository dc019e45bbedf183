"""The bucket interface every part of ``shared`` talks to (docs/design.md section 3).

Two implementations: ``LocalBucket`` (a folder, the embedded default) and ``GCSBucket``
(google-cloud-storage). Both raise the same errors from ``shared.errors``: ``NotFound``,
``PreconditionFailed`` and ``InvalidObjectName``.

Preconditions follow GCS: ``if_generation_match=0`` means "only if the object does not exist";
any other number means "only if the live generation is exactly this one".

Custom metadata follows GCS too: it belongs to one object generation, written with the content
(``write``/``upload`` ``metadata=``, checked by ``shared.storage.metadata``) and read with it
(``ObjectInfo.metadata``); an overwrite without metadata leaves none, a copy keeps the source's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` knows of one object version."""

    bucket: str
    name: str
    size: int
    generation: int
    content_type: str | None
    updated: datetime
    # Custom metadata of this generation (a fresh dict per info). Left out of the hash, so an
    # info stays hashable; equality still compares it.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@runtime_checkable
class Bucket(Protocol):
    """One bucket: the operations the system needs, nothing more."""

    @property
    def name(self) -> str:
        """The bucket's name."""
        ...

    def read(self, name: str) -> bytes:
        """Return the object's bytes; ``NotFound`` if absent."""
        ...

    def read_with_info(self, name: str) -> tuple[bytes, ObjectInfo]:
        """Return the bytes and the info of the very same generation (for compare-and-swap)."""
        ...

    def download(self, name: str, path: Path) -> ObjectInfo:
        """Stream a (possibly big) object to a local file; return the info of what was read."""
        ...

    def write(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_generation_match: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write atomically, with ``metadata`` as this generation's custom metadata; return the new
        generation. ``PreconditionFailed`` if it does not hold, ``InvalidMetadata`` (nothing
        written) if GCS would refuse the metadata."""
        ...

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
        ...

    def stat(self, name: str) -> ObjectInfo:
        """Size, generation, content type, update time and metadata; ``NotFound`` if absent."""
        ...

    def exists(self, name: str) -> bool:
        """Whether the object exists."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose names start with ``prefix``, in name order."""
        ...

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete the object; ``NotFound`` if absent, ``PreconditionFailed`` if it does not hold."""
        ...

    def copy(
        self,
        name: str,
        dest: Bucket,
        dest_name: str,
        *,
        if_generation_match: int | None = None,
    ) -> int:
        """Copy to ``dest`` (same backend) under ``dest_name``, content type and metadata with it;
        the precondition is on the destination. Return the destination's new generation."""
        ...
