"""Custom object metadata rules, shared by both backends (docs/design.md section 3).

GCS limits custom metadata (its storage API's ``ServiceConstants``): a key at most 1 KiB, a value
at most 4 KiB, all keys and values of one object together at most 8 KiB. Its JSON API would carry
any Unicode, but the XML API sends each entry as an ``x-goog-meta-<key>: <value>`` HTTP header,
which takes neither non-ASCII nor control characters (GCS's metadata page: "avoid non-ascii
characters, because they are not permitted in HTTP headers, which the XML API uses"). So here
keys and values are printable ASCII (space to ``~``), keys non-empty: metadata written through
one API reads back the same through every other, on GCS and locally alike. A refusal raises
``InvalidMetadata`` naming the rule, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import InvalidMetadata

MAX_METADATA_KEY_BYTES = 1024  # GCS: MAX_CUSTOM_METADATA_FIELD_NAME_BYTES
MAX_METADATA_VALUE_BYTES = 4096  # GCS: MAX_CUSTOM_METADATA_FIELD_VALUE_BYTES
MAX_METADATA_BYTES = 8192  # GCS: MAX_CUSTOM_METADATA_TOTAL_SIZE_BYTES, keys and values together
_PRINTABLE_ASCII = frozenset(map(chr, range(0x20, 0x7F)))


def _refuse(rule: str, key: object = None) -> InvalidMetadata:
    """The refusal of ``rule``, naming the entry's ``key`` (its repr, cut) when there is one."""
    where = "" if key is None else f" (at key {repr(key)[:100]})"
    return InvalidMetadata(f"invalid object metadata: {rule}{where}", rule)


def _size(role: str, text: object, limit: int, key: object) -> int:
    """The size of the key or value ``text`` (``role``), if it is printable ASCII within ``limit``."""
    if not isinstance(text, str):
        raise _refuse(f"a metadata {role} must be a str, not {type(text).__name__}", key)
    if not set(text) <= _PRINTABLE_ASCII:
        raise _refuse(f"a metadata {role} must be printable ASCII (no control characters, no non-ASCII)", key)
    if len(text) > limit:
        raise _refuse(f"a metadata {role} must be at most {limit} bytes (it is {len(text)})", key)
    return len(text)  # printable ASCII: one byte a character


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A fresh copy of ``metadata`` (``{}`` for None) if GCS would store it; ``InvalidMetadata`` if not."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise _refuse(f"metadata must be a mapping of str to str, not {type(metadata).__name__}")
    total = 0
    for key, value in metadata.items():
        if key == "":
            raise _refuse("a metadata key must not be empty", key)
        total += _size("key", key, MAX_METADATA_KEY_BYTES, key)
        total += _size("value", value, MAX_METADATA_VALUE_BYTES, key)
    if total > MAX_METADATA_BYTES:
        raise _refuse(
            f"metadata keys and values must be at most {MAX_METADATA_BYTES} bytes in all (they are {total})"
        )
    return dict(metadata)
