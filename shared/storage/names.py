"""Object and bucket name rules, shared by both backends.

GCS rules apply everywhere (``check_object_name``): 1-1024 bytes of UTF-8, no NUL, CR or LF,
not ``.`` or ``..``. The local backend maps a name to a file under the bucket folder, so it adds
path rules (``check_local_object_name``): no absolute name, no empty, ``.`` or ``..`` component,
no trailing ``/``. Every refusal raises ``InvalidObjectName`` naming the bad name (repr) and the
rule it breaks.

Two names are made short enough here, each in the same readable form, a head of the real name
followed by ``~h`` and 40 hex digits of its SHA-256 (``HASH_MARK``):

- ``derived_name``: a blob named after a data file (``monitoring/<name>@<generation>.json``,
  ``registry/processed/<bucket>/<name>@<generation>.json``, ``quarantine/<name>``) stays within
  GCS's 1,024 bytes whatever the data file's name; the record inside holds the real name.
- ``disk_component``: the local backend stores a path component longer than a file name may be
  (255 bytes) under such a name, and keeps the real component in its bookkeeping.

A name that itself contains the mark is put in the hashed form too, even when short: so a name
chosen to look like another name's hashed form can never take that name's place.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re

from shared.errors import InvalidObjectName

MAX_NAME_BYTES = 1024  # GCS's limit on an object name, in UTF-8 bytes
MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, tmpfs, APFS: longer ones are hashed

_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
BUCKET_NAME_RULE = "3-63 of a-z 0-9 - _ . starting and ending with a letter or digit"
"""GCS's bucket name rule, as the refusals (here and in shared.config) state it."""

HASH_MARK = "~h"  # then DIGEST_CHARS hex digits: the mark of a name put in its hashed form
DIGEST_CHARS = 40  # 160 bits of SHA-256: no two names meet by chance
_HASHED = re.compile(f"{HASH_MARK}[0-9a-f]{{{DIGEST_CHARS}}}")
DISK_HEAD_BYTES = 160  # of a hashed file name, the readable head taken from the real name
_EXTENSION = re.compile(r"\.[0-9A-Za-z_-]{1,15}")  # kept at the end of a hashed file name


def _refuse(name: object, rule: str) -> InvalidObjectName:
    return InvalidObjectName(f"invalid object name {name!r}: {rule}", rule)


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
    return name


def name_digest(text: str) -> str:
    """The first ``DIGEST_CHARS`` hex digits of the SHA-256 of ``text`` in UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def looks_hashed(text: str) -> bool:
    """Whether ``text`` holds ``HASH_MARK`` and a digest, as a name in its hashed form does."""
    return _HASHED.search(text) is not None


def utf8_head(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` that fits in ``max_bytes`` of UTF-8 (never half a character)."""
    return text.encode("utf-8")[: max(0, max_bytes)].decode("utf-8", "ignore")


def derived_name(prefix: str, name: str, suffix: str = "", *, reserve: int = 0) -> str:
    """``prefix + name + suffix`` when that fits in GCS's 1,024 bytes less ``reserve`` (bytes a
    caller appends later, such as ``.reason.json``); else ``prefix`` + a head of ``name`` +
    ``HASH_MARK`` + the digest of ``name`` + ``suffix``, exactly as long as fits.

    Different names always give different derived names: the plain form never holds the mark
    (a name holding it takes the hashed form), the hashed form always does.
    """
    plain = f"{prefix}{name}{suffix}"
    if len(plain.encode("utf-8")) + reserve <= MAX_NAME_BYTES and not looks_hashed(name):
        return plain
    fixed = len(f"{prefix}{HASH_MARK}{suffix}".encode()) + DIGEST_CHARS + reserve
    return f"{prefix}{utf8_head(name, MAX_NAME_BYTES - fixed)}{HASH_MARK}{name_digest(name)}{suffix}"


def disk_component(part: str) -> str:
    """The file (or folder) name the local backend stores the name component ``part`` under.

    ``part`` itself when it fits a file name (``MAX_COMPONENT_BYTES``) and does not look hashed;
    else a readable head of it, ``HASH_MARK``, its digest and its extension (``.csv``), at most
    218 bytes. The local backend records the real component, to give the name back.
    """
    if len(part.encode("utf-8")) <= MAX_COMPONENT_BYTES and not looks_hashed(part):
        return part
    _stem, dot, ext = part.rpartition(".")
    extension = f".{ext}" if dot and _EXTENSION.fullmatch(f".{ext}") else ""
    stem = part[: len(part) - len(extension)]
    return f"{utf8_head(stem, DISK_HEAD_BYTES)}{HASH_MARK}{name_digest(part)}{extension}"


def check_bucket_name(name: object) -> str:
    """Return ``name`` if it is a GCS bucket name (3-63 of a-z 0-9 - _ ., starting alphanumeric)."""
    if (
        not isinstance(name, str)
        or not 3 <= len(name) <= 63
        or not set(name) <= _BUCKET_CHARS
        or not name[0].isalnum()
        or not name[-1].isalnum()
    ):
        raise InvalidObjectName(f"invalid bucket name {name!r}: must be {BUCKET_NAME_RULE}")
    return name


def default_content_type(name: str) -> str:
    """The content type an object gets when none is given: guessed from its extension."""
    guessed, _encoding = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"
