"""Crafted bad model and table files, for the tests that check every way loading one can fail.

Each takes the bytes of a good file (a skops model or a table npz: both are zip files) and
returns a hostile variant; the zip itself stays well formed, so the fault shows only late, when
a member is read.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable

import numpy as np


def _rewrite(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    """``data`` (a zip) with every member's bytes replaced by ``change(name, bytes)``."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, change(info.filename, source.read(info)))
    return out.getvalue()


def _first_array(data: bytes) -> str:
    return next(n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.endswith(".npy"))


def with_object_array(data: bytes) -> bytes:
    """A skops file whose first npy member is an array of objects (numpy needs a pickle for it)."""
    target = _first_array(data)

    def change(name: str, member: bytes) -> bytes:
        if name != target:
            return member
        buffer = io.BytesIO()
        np.save(buffer, np.array(["a", 1], dtype=object), allow_pickle=True)
        return buffer.getvalue()

    return _rewrite(data, change)


def with_short_array(data: bytes) -> bytes:
    """A skops file whose first npy member is cut short (its zip entry and CRC are consistent)."""
    target = _first_array(data)
    return _rewrite(data, lambda name, member: member[:-8] if name == target else member)


def first_array(data: bytes) -> str:
    """The name of the first npy member of a skops file: one that loading reads."""
    return _first_array(data)


def deflate_bomb(data: bytes, member: str, size: int) -> bytes:
    """``data`` (a zip) with ``member`` replaced by (or added as) ``size`` deflated zero bytes:
    a few hundred KB on disk that declare, and hold, ``size`` bytes."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for info in source.infolist():
            if info.filename != member:
                target.writestr(info.filename, source.read(info))
        with target.open(member, "w", force_zip64=True) as stream:
            for _ in range(size // len(chunk)):
                stream.write(chunk)
    return out.getvalue()


def lying_bomb(data: bytes, member: str, size: int, declared: int) -> bytes:
    """``data`` (a zip) plus a deflated member of ``size`` zero bytes that declares ``declared``.

    The CRC is that of the first ``declared`` bytes, so a reader that stops at the declared size
    sees a whole, valid member; one that decompresses the stream in one call holds ``size`` bytes.
    Named as an existing member, it shadows that one (zipfile reads the last of a name).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    compressed = b"".join(compressor.compress(chunk) for _ in range(size // len(chunk)))
    compressed += compressor.flush()
    crc = zlib.crc32(bytes(declared))
    source = zipfile.ZipFile(io.BytesIO(data))
    name = member.encode()
    offset = source.start_dir
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(compressed), declared, len(name), 0
    )
    central_dir = data[source.start_dir :]
    end = central_dir.rfind(b"PK\x05\x06")
    entries, eocd = central_dir[:end], bytearray(central_dir[end:])
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(compressed),
        declared,
        len(name),
        0,
        0,
        0,
        0,
        0,
        offset,
    )
    body = data[:offset] + local + name + compressed
    count = struct.unpack_from("<H", eocd, 10)[0] + 1
    new_entries = entries + central + name
    struct.pack_into("<HHLL", eocd, 8, count, count, len(new_entries), len(body))
    return body + new_entries + bytes(eocd)


def onnx_failing_at_run_time(schema, version: str) -> bytes:  # (Schema, str) -> ONNX bytes
    """A compiled-model file that passes every load check and loads in ONNX Runtime, but fails on
    every call: its graph reshapes the first number input, ``(n, 1)``, to 1,000,003 elements, so a
    run raises unless a batch holds exactly that many rows. Shape inference at load cannot see it
    (``n`` is symbolic), so the fault shows only on a run, as a model broken in use would."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from shared.compiled.runtime import (
        COLUMNS_KEY,
        COMPILED_FORMAT,
        FORMAT_KEY,
        OUTPUT_KEY,
        SCHEMA_KEY,
        VERSION_KEY,
    )

    inputs = [
        helper.make_tensor_value_info(
            f.name, TensorProto.STRING if f.type == "category" else TensorProto.FLOAT, ["n", 1]
        )
        for f in schema.features
    ]
    number = next(f.name for f in schema.features if f.type != "category")
    shape = helper.make_tensor("impossible", TensorProto.INT64, [1], [1_000_003])
    graph = helper.make_graph(
        [helper.make_node("Reshape", [number, "impossible"], ["probabilities"])],
        "fails-at-run-time",
        inputs,
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["m"])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        FORMAT_KEY: COMPILED_FORMAT,
        VERSION_KEY: version,
        SCHEMA_KEY: schema.to_json(),
        OUTPUT_KEY: "probabilities",
        COLUMNS_KEY: json.dumps(list(range(len(schema.label.classes)))),
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model.SerializeToString()
