"""What an ONNX file may hold before ONNX Runtime loads it, and what ``CompiledModel`` accepts.

The refused files are crafted with ``onnx.helper``, each a small valid model but for the one
thing that must be refused; each is refused by ``check_onnx_model`` and, through it, by
``CompiledModel.from_bytes`` before ONNX Runtime sees it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from shared.compiled.compile import convert
from shared.compiled.onnx_checks import check_onnx_model
from shared.compiled.runtime import CompiledModel
from shared.errors import ModelNotReady
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.training.fitting import default_preprocessor

MAX_BYTES = 1024 * 1024
OPSET = helper.make_opsetid("", 17)
SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "country", "type": "category", "domain": ["br", "de", "us"]},
            {"name": "bid", "type": "float", "min": 0.0, "max": 10.0},
        ],
        "label": {"name": "converted", "type": "category", "classes": [0, 1]},
        "key": ["country"],
    }
)


def float_info(name: str) -> onnx.ValueInfoProto:
    """A float32 tensor of shape (n, 1)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1])


def graph(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto] | None = None) -> onnx.GraphProto:
    """A graph from input "x" to output "y" (float32, shape (n, 1))."""
    return helper.make_graph(nodes, "g", [float_info("x")], [float_info("y")], initializer=initializers or [])


def model_bytes(g: onnx.GraphProto, **kwargs: object) -> bytes:
    """A model of ``g`` (opset 17 unless ``opset_imports`` says otherwise), serialized."""
    kwargs.setdefault("opset_imports", [OPSET])
    return helper.make_model(g, **kwargs).SerializeToString()


def external_tensor(name: str, location: str = "../../etc/passwd") -> onnx.TensorProto:
    """A float tensor whose data is said to live in the file ``location``."""
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def if_node(then_graph: onnx.GraphProto, output: str = "y") -> onnx.NodeProto:
    """An If on a constant condition: ``then_graph``, else a copy of "x" (one body a level, so
    nesting stays linear in size)."""
    otherwise = branch([helper.make_node("Identity", ["x"], [f"else_{output}"])], f"else_{output}")
    return helper.make_node("If", ["condition"], [output], then_branch=then_graph, else_branch=otherwise)


def branch(nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    """A subgraph (an If body: no inputs) with the one output ``output``."""
    return helper.make_graph(nodes, f"branch_{output}", [], [float_info(output)])


def nested_ifs(depth: int) -> bytes:
    """A model whose If bodies nest ``depth`` deep, the innermost one reading "x"."""
    body = branch([helper.make_node("Identity", ["x"], [f"out{depth}"])], f"out{depth}")
    for level in range(depth - 1, 0, -1):
        body = branch([if_node(body, f"out{level}")], f"out{level}")
    condition = helper.make_tensor("condition", TensorProto.BOOL, [], [True])
    return model_bytes(graph([if_node(body)], [condition]))


def length_delimited(number: int, payload: bytes) -> bytes:
    """Protobuf wire format: field ``number`` holding ``payload`` (a message, a string)."""
    out = bytearray()
    for value in (number << 3 | 2, len(payload)):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def deeply_nested(depth: int) -> bytes:
    """A model whose If bodies nest ``depth`` deep, written on the wire by hand: the protobuf
    library refuses to build or parse messages nested past 100 levels, an attacker's bytes need not.
    (Appending a serialized field to a serialized message is how protobuf merges them.)"""
    graph_node, node_attribute, attribute_graph, model_graph = 1, 5, 6, 7
    body = branch([helper.make_node("Identity", ["x"], ["inner"])], "inner").SerializeToString()
    for _ in range(depth):
        attribute = helper.make_attribute("then_branch", helper.make_graph([], "g", [], []))
        attribute.ClearField("g")
        node = helper.make_node("If", ["condition"], ["inner"]).SerializeToString()
        node += length_delimited(
            node_attribute, attribute.SerializeToString() + length_delimited(attribute_graph, body)
        )
        body = helper.make_graph([], "level", [], [float_info("inner")]).SerializeToString()
        body += length_delimited(graph_node, node)
    model = helper.make_model(helper.make_graph([], "empty", [], []), opset_imports=[OPSET])
    model.ClearField("graph")
    return model.SerializeToString() + length_delimited(model_graph, body)


@pytest.fixture(scope="module")
def skl2onnx_bytes() -> bytes:
    """A prodml compiled model (version v1) of a fitted logistic regression, as the compile writes it."""
    rng = np.random.default_rng(0)
    rows = [
        {"country": str(rng.choice(["br", "de", "us"])), "bid": float(rng.uniform(0, 10))} for _ in range(200)
    ]
    frame = to_frame(SCHEMA, rows)
    y = (frame["bid"] + (frame["country"] == "us") * 3 > 6).astype(int)
    estimator = Pipeline([("preprocess", default_preprocessor(SCHEMA)), ("model", LogisticRegression())])
    return convert(ModelBundle("v1", estimator.fit(frame, y), SCHEMA), np.float32)[0]


def assert_refused(data: bytes, reason: str) -> None:
    """Refused with ``reason``, by the check and by loading alike."""
    with pytest.raises(ModelNotReady, match=reason):
        check_onnx_model(data, MAX_BYTES)
    with pytest.raises(ModelNotReady, match=reason):
        CompiledModel.from_bytes(data, MAX_BYTES)


# --- what passes ----------------------------------------------------------------------------


def test_a_skl2onnx_model_passes_and_loads(skl2onnx_bytes: bytes) -> None:
    check_onnx_model(skl2onnx_bytes, MAX_BYTES)
    model = CompiledModel.from_bytes(skl2onnx_bytes, MAX_BYTES, expected_version="v1")
    assert model.version == "v1" and model.schema == SCHEMA
    scores = model.score_columns({"country": ["us", "br"], "bid": [9.0, 0.5]})
    assert scores.shape == (2,) and scores[0] > 0.5 > scores[1]


def test_a_crafted_model_of_standard_operators_passes_the_check() -> None:
    # The control of the crafted files below: the same shapes, with nothing refused in them.
    check_onnx_model(model_bytes(graph([helper.make_node("Identity", ["x"], ["y"])])), MAX_BYTES)
    check_onnx_model(nested_ifs(5), MAX_BYTES)


# --- what is refused ------------------------------------------------------------------------


def test_a_custom_operator_domain_in_the_opset_imports_is_refused() -> None:
    imports = [OPSET, helper.make_opsetid("com.attacker", 1)]
    data = model_bytes(graph([helper.make_node("Identity", ["x"], ["y"])]), opset_imports=imports)
    assert_refused(data, "custom operator domain 'com.attacker'")


def test_a_node_of_a_custom_domain_is_refused_even_when_not_imported() -> None:
    node = helper.make_node("Exec", ["x"], ["y"], domain="com.attacker")
    assert_refused(model_bytes(graph([node])), "operator of custom domain 'com.attacker'")


def test_a_node_of_a_custom_domain_inside_a_subgraph_is_refused() -> None:
    inner = branch([helper.make_node("Exec", ["x"], ["inner"], domain="com.attacker")], "inner")
    condition = helper.make_tensor("condition", TensorProto.BOOL, [], [True])
    assert_refused(
        model_bytes(graph([if_node(inner)], [condition])), "operator of custom domain 'com.attacker'"
    )


def test_model_local_functions_are_refused() -> None:
    function = helper.make_function(
        "com.local", "Twice", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])], [OPSET]
    )
    data = model_bytes(graph([helper.make_node("Identity", ["x"], ["y"])]), functions=[function])
    assert_refused(data, "model-local functions")


def test_an_initializer_with_external_data_is_refused() -> None:
    data = model_bytes(graph([helper.make_node("Add", ["x", "w"], ["y"])], [external_tensor("w")]))
    assert_refused(data, "an initializer keeps its data in an outside file")


def test_a_tensor_marked_external_without_a_location_is_refused() -> None:
    tensor = external_tensor("w")
    tensor.ClearField("external_data")  # data_location=EXTERNAL alone
    data = model_bytes(graph([helper.make_node("Add", ["x", "w"], ["y"])], [tensor]))
    assert_refused(data, "outside file")


def test_a_sparse_initializer_with_external_data_is_refused() -> None:
    indices = helper.make_tensor("w_indices", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(external_tensor("w"), indices, [1])
    g = graph([helper.make_node("Add", ["x", "w"], ["y"])])
    g.sparse_initializer.append(sparse)
    assert_refused(model_bytes(g), "a sparse initializer keeps its data in an outside file")


def test_a_constant_with_external_data_is_refused() -> None:
    constant = helper.make_node("Constant", [], ["w"], value=external_tensor("w_value"))
    data = model_bytes(graph([constant, helper.make_node("Add", ["x", "w"], ["y"])]))
    assert_refused(data, "an attribute tensor keeps its data in an outside file")


def test_an_external_data_tensor_in_a_subgraph_is_refused() -> None:
    inner = branch(
        [helper.make_node("Constant", [], ["inner"], value=external_tensor("inner_value", "/etc/shadow"))],
        "inner",
    )
    inner.initializer.append(external_tensor("unused"))
    condition = helper.make_tensor("condition", TensorProto.BOOL, [], [True])
    assert_refused(model_bytes(graph([if_node(inner)], [condition])), "keeps its data in an outside file")


def test_subgraphs_nested_past_the_bound_are_refused() -> None:
    check_onnx_model(deeply_nested(32), MAX_BYTES)  # the bound itself passes the check
    assert_refused(deeply_nested(33), "subgraphs nested deeper than 32")
    assert_refused(deeply_nested(5000), "subgraphs nested deeper than 32")  # no RecursionError on the way


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_a_truncated_file_is_refused(skl2onnx_bytes: bytes, cut: float) -> None:
    assert_refused(skl2onnx_bytes[: int(len(skl2onnx_bytes) * cut)], "not a valid ONNX file")


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\xff" * 64, b"PK\x03\x04 a zip, not ONNX", np.random.default_rng(0).bytes(4096)],
    ids=["empty", "ff", "zip", "random"],
)
def test_garbage_bytes_are_refused(garbage: bytes) -> None:
    assert_refused(garbage, "not a valid ONNX file")


def test_a_file_over_the_bound_is_refused_unread(skl2onnx_bytes: bytes) -> None:
    assert_refused(b"\xff" * (MAX_BYTES + 1), "refused unread")  # garbage: a read would say "not valid"
    with pytest.raises(ModelNotReady, match=f"{len(skl2onnx_bytes)} bytes is more than MAX_MODEL_BYTES"):
        CompiledModel.from_bytes(skl2onnx_bytes, len(skl2onnx_bytes) - 1)
    CompiledModel.from_bytes(skl2onnx_bytes, len(skl2onnx_bytes))  # the bound itself is allowed


# --- what CompiledModel asks of a valid ONNX file ------------------------------------------------


def test_a_valid_onnx_model_without_prodml_metadata_is_refused(skl2onnx_bytes: bytes) -> None:
    model = onnx.load_from_string(skl2onnx_bytes)
    del model.metadata_props[:]
    data = model.SerializeToString()
    check_onnx_model(data, MAX_BYTES)  # nothing unsafe in it: it is refused for what it is not
    with pytest.raises(ModelNotReady, match="is not a prodml-compiled/1 file"):
        CompiledModel.from_bytes(data, MAX_BYTES)


def test_a_model_of_another_version_is_refused(skl2onnx_bytes: bytes) -> None:
    with pytest.raises(ModelNotReady, match="holds version 'v1', not 'v2'"):
        CompiledModel.from_bytes(skl2onnx_bytes, MAX_BYTES, expected_version="v2")
