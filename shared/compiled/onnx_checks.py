"""What an ONNX file may hold before ONNX Runtime sees it: a bounded size, the standard operator
domains only, no model-local functions, no tensor whose data lives in an outside file.

An ONNX model is data (a protobuf message), not code, but the runtime would still load a custom
operator domain's library if one were registered, resolve a model-local function, or open the
file an "external data" tensor names (a path an attacker chooses). The checks read the protobuf
wire format directly (about 100 lines) instead of importing the ``onnx`` package, which costs
0.7 s at import: more than the whole cold start budget of a predict instance.

Wire format (protobuf): each field is a varint key ``number << 3 | wire type``, then a varint
(type 0), 8 bytes (1), a length and that many bytes (2), or 4 bytes (5). Field numbers are
those of onnx/onnx.proto (IR version 10); messages are walked only as deep as the checks need.
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.errors import ModelNotReady

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""The operator sets ONNX Runtime implements itself; anything else is a custom operator."""

# ModelProto
_MODEL_METADATA_PROPS = 14
_MODEL_OPSET_IMPORT = 8
_MODEL_GRAPH = 7
_MODEL_FUNCTIONS = 25
# StringStringEntryProto
_ENTRY_KEY = 1
_ENTRY_VALUE = 2
# OperatorSetIdProto
_OPSET_DOMAIN = 1
# GraphProto
_GRAPH_NODE = 1
_GRAPH_INITIALIZER = 5
_GRAPH_SPARSE_INITIALIZER = 15
# NodeProto
_NODE_ATTRIBUTE = 5
_NODE_DOMAIN = 7
# AttributeProto
_ATTRIBUTE_TENSOR = 5
_ATTRIBUTE_GRAPH = 6
_ATTRIBUTE_TENSORS = 10
_ATTRIBUTE_GRAPHS = 11
_ATTRIBUTE_SPARSE_TENSOR = 22
_ATTRIBUTE_SPARSE_TENSORS = 23
# TensorProto
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
# SparseTensorProto
_SPARSE_VALUES = 1
_SPARSE_INDICES = 2

_MAX_DEPTH = 32  # subgraphs (If, Loop, Scan bodies) nested deeper than this are refused


def _malformed(why: str) -> ModelNotReady:
    """The bytes are not a well-formed protobuf message."""
    return ModelNotReady(f"compiled model is not a valid ONNX file: {why}")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of each field of one message: bytes for length-delimited
    fields, the integer for varints; fixed-size fields are skipped over (value 0)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise _malformed("a field runs past the end of its message")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, wire, 0
        else:
            raise _malformed(f"unsupported wire type {wire}")
    if pos != len(data):
        raise _malformed("a fixed-size field runs past the end of its message")


def _submessages(data: memoryview, number: int) -> Iterator[memoryview]:
    for field, wire, value in _fields(data):
        if field == number and wire == 2 and isinstance(value, memoryview):
            yield value


def _text(data: memoryview, number: int) -> str | None:
    found = None
    for value in _submessages(data, number):
        found = bytes(value).decode("utf-8", "replace")
    return found


def _check_tensor(tensor: memoryview, where: str) -> None:
    for field, _, value in _fields(tensor):
        if field == _TENSOR_EXTERNAL_DATA or (field == _TENSOR_DATA_LOCATION and value == 1):
            raise ModelNotReady(f"compiled model refused: {where} keeps its data in an outside file")


def _check_sparse(sparse: memoryview, where: str) -> None:
    for number in (_SPARSE_VALUES, _SPARSE_INDICES):
        for tensor in _submessages(sparse, number):
            _check_tensor(tensor, where)


def _check_graph(graph: memoryview, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ModelNotReady(f"compiled model refused: subgraphs nested deeper than {_MAX_DEPTH}")
    for tensor in _submessages(graph, _GRAPH_INITIALIZER):
        _check_tensor(tensor, "an initializer")
    for sparse in _submessages(graph, _GRAPH_SPARSE_INITIALIZER):
        _check_sparse(sparse, "a sparse initializer")
    for node in _submessages(graph, _GRAPH_NODE):
        domain = _text(node, _NODE_DOMAIN) or ""
        if domain not in STANDARD_DOMAINS:
            raise ModelNotReady(f"compiled model refused: operator of custom domain {domain[:100]!r}")
        for attribute in _submessages(node, _NODE_ATTRIBUTE):
            _check_attribute(attribute, depth)


def _check_attribute(attribute: memoryview, depth: int) -> None:
    for field, wire, value in _fields(attribute):
        if wire != 2 or not isinstance(value, memoryview):
            continue
        if field in (_ATTRIBUTE_TENSOR, _ATTRIBUTE_TENSORS):
            _check_tensor(value, "an attribute tensor")
        elif field in (_ATTRIBUTE_SPARSE_TENSOR, _ATTRIBUTE_SPARSE_TENSORS):
            _check_sparse(value, "an attribute sparse tensor")
        elif field in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
            _check_graph(value, depth + 1)


def check_onnx_model(data: bytes, max_bytes: int) -> None:
    """Refuse (``ModelNotReady``, with the reason) an ONNX file ONNX Runtime should not load.

    Bounded: at most ``max_bytes`` (``MAX_MODEL_BYTES``; an ONNX file is not compressed, so its
    size is what loading reads); operator set imports and node domains of the standard sets only
    (``STANDARD_DOMAINS``); no model-local functions; no external-data tensors.
    """
    if len(data) > max_bytes:
        raise ModelNotReady(
            f"compiled model refused unread: {len(data)} bytes is more than MAX_MODEL_BYTES={max_bytes}"
        )
    graphs = 0
    for field, wire, value in _fields(memoryview(data)):
        if field == _MODEL_FUNCTIONS:
            raise ModelNotReady("compiled model refused: it defines model-local functions")
        if field == _MODEL_OPSET_IMPORT and isinstance(value, memoryview):
            domain = _text(value, _OPSET_DOMAIN) or ""
            if domain not in STANDARD_DOMAINS:
                raise ModelNotReady(f"compiled model refused: custom operator domain {domain[:100]!r}")
        if field == _MODEL_GRAPH and wire == 2 and isinstance(value, memoryview):
            graphs += 1
            _check_graph(value, 0)
    if graphs != 1:
        raise _malformed(f"{graphs} graphs, not 1")


def metadata_props(data: bytes) -> dict[str, str]:
    """The model's ``metadata_props`` (key -> value), read from the wire like the checks above, so
    that a process that never scores (static serving) learns a compiled model's schema without
    importing ONNX Runtime. Call ``check_onnx_model`` first; a malformed file raises
    ``ModelNotReady``."""
    props: dict[str, str] = {}
    for entry in _submessages(memoryview(data), _MODEL_METADATA_PROPS):
        props[_text(entry, _ENTRY_KEY) or ""] = _text(entry, _ENTRY_VALUE) or ""
    return props
