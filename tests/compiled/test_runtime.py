"""CompiledModel's two ways to load: eager (the session made at load, for every form that scores)
and lazy (static serving: the schema from the file's own metadata, ONNX Runtime never started)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import fit_serving_bundle

from shared.compiled.compile import convert
from shared.compiled.runtime import CompiledModel
from shared.errors import ModelNotReady

LIMIT = 10**8


@pytest.fixture(scope="module")
def compiled_bytes() -> bytes:
    return convert(fit_serving_bundle("v1"), np.float32)[0]


def broken_graph(data: bytes) -> bytes:
    """The same file, metadata and all, whose first node names an operator ONNX Runtime lacks."""
    model = onnx.load_model_from_string(data)
    model.graph.node[0].op_type = "NoSuchOperator"
    return model.SerializeToString()


def test_a_lazy_load_reads_the_schema_from_the_metadata_and_scores_as_an_eager_one(
    compiled_bytes: bytes,
) -> None:
    lazy = CompiledModel.from_bytes(compiled_bytes, LIMIT, "v1", eager=False)
    eager = CompiledModel.from_bytes(compiled_bytes, LIMIT, "v1")
    assert (
        (lazy.version, lazy.schema)
        == (eager.version, eager.schema)
        == ("v1", fit_serving_bundle("v1").schema)
    )
    columns = {"country": ["us", "br", "kr"], "hour": [20, 3, 11], "bid": [1.5, 9.0, 0.25]}
    assert np.array_equal(lazy.score_columns(columns), eager.score_columns(columns))


def test_a_graph_the_runtime_refuses_is_refused_at_an_eager_load_and_at_a_lazy_models_first_score(
    compiled_bytes: bytes,
) -> None:
    data = broken_graph(compiled_bytes)
    with pytest.raises(ModelNotReady, match="compiled model cannot be loaded"):
        CompiledModel.from_bytes(data, LIMIT, "v1")
    lazy = CompiledModel.from_bytes(data, LIMIT, "v1", eager=False)  # static serving never scores
    assert lazy.schema.key == ("country", "hour")
    with pytest.raises(ModelNotReady, match="compiled model cannot be loaded"):
        lazy.score_columns({"country": ["us"], "hour": [1], "bid": [1.5]})
