"""A bound on what loading a zip may decompress: skops models and npz tables are zip files.

A few hundred KB of deflated zeros can declare, or merely hold, hundreds of MB, and the libraries
that read these files (skops, numpy, both through ``zipfile``) read a member whole: a 199 KB
model file made predict grow by 400 MB while it was refusing it. ``check_zip`` looks before
anything is read, in bounded memory:

- the members' declared uncompressed sizes together must stay within the limit;
- only stored and deflated members are accepted (``zipfile`` decompresses bzip2 and lzma input
  in unbounded steps, and nothing this system writes uses them);
- a deflated member must not hold more than it declares: ``zipfile`` stops at the declared size,
  but it decompresses a whole member in one call first, so a member that lies about its size is
  as bad as one that does not. Its stream is decompressed here in small steps and counted.

Stored members need no such pass: ``zipfile`` reads at most their compressed size, which is part
of the file already in memory.

``read_npz`` is the one reader of the system's own npz records (tables, the prediction log,
stored labels, feedback emissions): the bound first, then numpy without pickle.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from shared.errors import ZipTooLarge

ACCEPTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30  # APPNOTE 4.3.7: the fixed part; the name and extra field follow
_NAME_LENGTHS_AT = 26  # offset of the name and extra field lengths in the local header
_INPUT_STEP = 64 * 1024  # compressed bytes fed to the decompressor at a time
_OUTPUT_STEP = 1024 * 1024  # most bytes one decompress step may produce


def check_zip(data: bytes, limit: int, setting: str) -> None:
    """Refuse ``data`` with ``ZipTooLarge`` (naming ``setting``) if reading it could decompress
    more than ``limit`` bytes; return quietly otherwise.

    Bytes that are not a zip file are left to the loader, which refuses them with its own reason
    (it opens them with the same ``zipfile``, so it reads nothing either).
    """
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except Exception:  # not a zip (zipfile raises several types): the loader says why
        return
    declared = sum(member.file_size for member in members)
    if declared > limit:
        raise ZipTooLarge(
            f"its {len(members)} members declare {declared} bytes uncompressed, more than {setting}={limit}"
        )
    for member in members:
        if member.compress_type not in ACCEPTED_METHODS:
            raise ZipTooLarge(
                f"member {member.filename[:100]!r} is compressed with zip method {member.compress_type}; "
                f"only {' and '.join(ACCEPTED_METHODS.values())} members are read"
            )
        if member.compress_type == zipfile.ZIP_DEFLATED:
            _check_deflated(data, member)


def _check_deflated(data: bytes, member: zipfile.ZipInfo) -> None:
    """Decompress ``member``'s stream in small steps; ``ZipTooLarge`` once it exceeds its declared size."""
    start = _data_offset(data, member)
    if start is None:
        return  # no local header where the directory says: zipfile refuses to read it, unread
    stream = memoryview(data)[start : start + member.compress_size]
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as in a zip member
    produced = 0
    try:
        for at in range(0, len(stream), _INPUT_STEP):
            pending: bytes | memoryview = stream[at : at + _INPUT_STEP]
            while pending:
                produced += len(decompressor.decompress(pending, _OUTPUT_STEP))
                if produced > member.file_size:
                    raise ZipTooLarge(
                        f"member {member.filename[:100]!r} decompresses to more than the "
                        f"{member.file_size} bytes it declares"
                    )
                pending = decompressor.unconsumed_tail
            if decompressor.eof:
                return
    except zlib.error:
        # A corrupt stream: what came before the fault stayed within the declared size, and
        # zipfile stops at the same fault.
        return


def _data_offset(data: bytes, member: zipfile.ZipInfo) -> int | None:
    """Where ``member``'s compressed bytes start, from its local header; None if there is none."""
    at = member.header_offset
    if data[at : at + len(_LOCAL_HEADER)] != _LOCAL_HEADER or at + _LOCAL_HEADER_SIZE > len(data):
        return None
    lengths: tuple[int, int] = struct.unpack_from("<HH", data, at + _NAME_LENGTHS_AT)
    name_length, extra_length = lengths
    return at + _LOCAL_HEADER_SIZE + name_length + extra_length


NPZ_READ_ERRORS = (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError)
"""What reading a corrupt npz raises, besides ``ZipTooLarge`` (numpy and ``zipfile`` raise these
for a bad member, a bad CRC, a missing ``meta``, an object array that would need pickle)."""


def read_npz(data: bytes, limit: int, setting: str) -> tuple[dict[str, np.ndarray], Any]:
    """Every array of an npz record but ``meta``, and ``meta`` parsed as JSON.

    ``ZipTooLarge`` (naming ``setting``) before anything is read if it could decompress past
    ``limit``; one of ``NPZ_READ_ERRORS`` when it is not a readable, pickle-free npz with a meta.
    """
    check_zip(data, limit, setting)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        columns = {key: npz[key] for key in npz.files if key != "meta"}
        meta = json.loads(str(npz["meta"]))
    return columns, meta
