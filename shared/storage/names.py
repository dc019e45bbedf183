"""Object and bucket name rules, shared by both backends.

GCS rules apply everywhere (``check_object_name``): 1-1024 bytes of UTF-8, no NUL, CR or LF,
not ``.`` or ``..``. The local backend maps a name to a file under the bucket folder, so it adds
path rules (``check_local_object_name``): no absolute name, no empty, ``.`` or ``..`` component,
no trailing ``/``, no component longer than the filesystem allows. Every refusal raises
``InvalidObjectName`` naming the bad name (repr) and the rule it breaks.
"""

from __future__ import annotations

import mimetypes

from shared.errors import InvalidObjectName

MAX_NAME_BYTES = 1024  # GCS's limit on an object name, in UTF-8 bytes
MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, tmpfs, APFS

_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _refuse(name: object, rule: str) -> InvalidObjectName:
    return InvalidObjectName(f"invalid object name {name!r}: {rule}")


def check_object_name(name: object) -> str:
    """Return ``name`` if GCS would accept it as an object name; raise ``InvalidObjectName``."""
    if not isinstance(name, str):
        raise _refuse(name, f"must be a str, not {type(name).__name__}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # A str holding lone surrogates (e.g. from os.fsdecode of bad bytes) has no UTF-8 form.
        raise _refuse(name, "must be valid UTF-8 (it holds a lone surrogate)") from None
    if not encoded:
        raise _refuse(name, "must not be empty")
    if len(encoded) > MAX_NAME_BYTES:
        raise _refuse(name, f"must be at most {MAX_NAME_BYTES} bytes of UTF-8 (it is {len(encoded)})")
    for char, label in (("\x00", "NUL"), ("\r", "carriage return"), ("\n", "line feed")):
        if char in name:
            raise _refuse(name, f"must not contain a {label} character")
    if name in (".", ".."):
        raise _refuse(name, "must not be '.' or '..'")
    return name


def check_local_object_name(name: object) -> str:
    """The GCS rules plus the rules that keep a name a relative file path inside its folder."""
    check_object_name(name)
    assert isinstance(name, str)  # narrowed by check_object_name
    if name.startswith("/"):
        raise _refuse(name, "must not be an absolute path (starts with '/')")
    if name.endswith("/"):
        raise _refuse(name, "must not end with '/' (that names a folder, not an object)")
    for part in name.split("/"):
        if part == "":
            raise _refuse(name, "must not have an empty path component ('//')")
        if part in (".", ".."):
            raise _refuse(name, f"must not have a {part!r} path component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _refuse(name, f"each path component must be at most {MAX_COMPONENT_BYTES} bytes")
    return name


def check_bucket_name(name: object) -> str:
    """Return ``name`` if it is a GCS bucket name (3-63 of a-z 0-9 - _ ., starting alphanumeric)."""
    if (
        not isinstance(name, str)
        or not 3 <= len(name) <= 63
        or not set(name) <= _BUCKET_CHARS
        or not name[0].isalnum()
        or not name[-1].isalnum()
    ):
        raise InvalidObjectName(
            f"invalid bucket name {name!r}: must be 3-63 of a-z 0-9 - _ . starting and ending "
            "with a letter or digit"
        )
    return name


def default_content_type(name: str) -> str:
    """The content type an object gets when none is given: guessed from its extension."""
    guessed, _encoding = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"
