"""A version's compiled form served by ONNX Runtime: ``CompiledModel``, a ``Scorer`` that needs
neither scikit-learn nor pandas.

The ONNX file (``models/versions/<v>/model.onnx``, written by ``shared.compiled.compile``) carries
what serving needs in its metadata: the format, the version, the schema, and which output column
holds which of the schema's classes. Inputs are one tensor per schema feature, shape ``(n, 1)``:
strings for categories, numbers as the graph declares them (float32, or float64 for a graph
converted in double precision).

ONNX Runtime is imported, and the session made, when the model first scores, or at load when
``eager`` (predict in dynamic and hybrid mode, the table build, the parity check: a graph the
runtime refuses is then refused at load, never on a request). Static serving answers from the
table alone: it reads the schema from the file's metadata and never imports the runtime.

Sessions: one per loaded model, reused by every request. ``InferenceSession.run`` is thread-safe
and releases the GIL while it computes, so request threads run in parallel. Each session computes
on one thread (``intra_op_num_threads=1``): a request's few rows gain nothing from more, threads
would compete with the other requests', and the tree ensembles' sums then come out in the same
order whatever the batch size (measured: with several threads, a forest's scores of a row differ
in the last bit between a batch of one and a batch of 20,000).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.compiled.onnx_checks import check_onnx_model, metadata_props
from shared.contracts import ModelForm
from shared.errors import ModelNotReady, SchemaError
from shared.schema import Schema
from shared.scoring import Columns

COMPILED_FORMAT = "prodml-compiled/1"

# Keys of the ONNX file's metadata (``metadata_props``).
FORMAT_KEY = "prodml.format"
VERSION_KEY = "prodml.version"
SCHEMA_KEY = "prodml.schema"
OUTPUT_KEY = "prodml.output"  # the output that holds the scores
COLUMNS_KEY = "prodml.columns"  # JSON: the output column of each schema class (-1: never seen)

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}


def session_options() -> Any:
    """The options of every session (an ``onnxruntime.SessionOptions``), in predict, the table
    build and the parity check alike (so they all run the same kernels in the same order: see the
    module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the optimizer's notes are not ours to show
    return options


@dataclass(frozen=True)
class _Input:
    name: str
    category: bool
    dtype: Any  # numpy type of a number input


class CompiledModel:
    """A compiled version: its schema, and an ONNX Runtime session that scores it."""

    form = ModelForm.ONNX

    def __init__(self, data: bytes, version: str, schema: Schema, output: str, columns: list[int]) -> None:
        self._data = data
        self._version = version
        self._schema = schema
        self._output = output
        self._columns = columns
        self._output_names = [output]
        self._session: Any = None  # an onnxruntime.InferenceSession, made by _ready()
        self._inputs: list[_Input] = []
        self._lock = threading.Lock()

    def _ready(self) -> tuple[Any, list[_Input]]:
        """The session and how to feed it, made once (``ModelNotReady`` if the runtime refuses)."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._inputs, self._session = self._load_session()
        return self._session, self._inputs

    def _load_session(self) -> tuple[list[_Input], Any]:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(self._data, session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph/... for bad content
            raise ModelNotReady(f"compiled model cannot be loaded: {type(exc).__name__}: {exc}") from None
        declared = {i.name: i.type for i in session.get_inputs()}
        try:
            inputs = [_input(f.name, f.type == "category", declared) for f in self._schema.features]
        except (KeyError, TypeError) as exc:
            raise ModelNotReady(f"compiled model's inputs do not fit its schema: {exc}") from None
        if self._output not in {o.name for o in session.get_outputs()}:
            raise ModelNotReady(f"compiled model has no output {self._output!r}")
        return inputs, session

    @property
    def version(self) -> str:
        """The version it is."""
        return self._version

    @property
    def schema(self) -> Schema:
        """The schema it was trained on."""
        return self._schema

    @classmethod
    def from_bytes(
        cls, data: bytes, max_bytes: int, expected_version: str | None = None, *, eager: bool = True
    ) -> CompiledModel:
        """Load an ONNX file written by ``shared.compiled.compile``; ``ModelNotReady`` for any file
        that is refused (``check_onnx_model``), is not a prodml compiled model (of
        ``expected_version``, when given) or, when ``eager``, will not load in ONNX Runtime."""
        check_onnx_model(data, max_bytes)
        meta = metadata_props(data)
        if meta.get(FORMAT_KEY) != COMPILED_FORMAT:
            raise ModelNotReady(f"compiled model is not a {COMPILED_FORMAT} file")
        version = meta.get(VERSION_KEY, "")
        if expected_version is not None and version != expected_version:
            raise ModelNotReady(f"compiled model holds version {version!r}, not {expected_version!r}")
        try:
            schema = Schema.from_json(meta.get(SCHEMA_KEY, ""))
            columns = [int(c) for c in json.loads(meta.get(COLUMNS_KEY, "[]"))]
        except (SchemaError, ValueError, TypeError) as exc:
            raise ModelNotReady(f"compiled model's metadata is invalid: {exc}") from None
        model = cls(data, version, schema, meta.get(OUTPUT_KEY, ""), columns)
        if eager:
            model._ready()
        return model

    def feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        """The session's inputs for rows given by column: no pandas, one array per feature.

        A category value is its string (``7`` and ``"7"`` are one category, as ``to_frame`` has
        it). A single row is sent twice: ONNX Runtime's linear kernels take another path for one
        row (a matrix-vector product) whose sums differ in the last bit from the batched path
        (measured on SGDRegressor: 7.6e-6 on a prediction of about 100), and a table's score must
        equal the score of the same instance sent alone, bit for bit.
        """
        feeds: dict[str, np.ndarray] = {}
        _, inputs = self._ready()
        for spec in inputs:
            values = columns[spec.name]
            if spec.category:
                array = np.asarray([str(v) for v in values], dtype=object)
            else:
                array = np.asarray(values, dtype=spec.dtype)
            if len(array) == 1:
                array = np.concatenate([array, array])
            feeds[spec.name] = array.reshape(-1, 1)
        return feeds

    def score_columns(self, columns: Columns) -> np.ndarray:
        """Scores for rows given by column (see ``shared.scoring.Scorer.score_columns``)."""
        session, inputs = self._ready()
        n = len(columns[inputs[0].name]) if inputs else 0
        if n == 0:
            width = len(self._columns)
            return np.zeros((0, width) if self._schema.label.task == "multiclass" else 0)
        raw = np.asarray(session.run(self._output_names, self.feeds(columns))[0], dtype=np.float64)[:n]
        task = self._schema.label.task
        if task == "regression":
            return raw.reshape(n)
        if task == "binary":
            return raw[:, self._columns[1]].copy()
        out = np.zeros((n, len(self._columns)))
        for j, column in enumerate(self._columns):
            if column >= 0:
                out[:, j] = raw[:, column]
        return out


def _input(name: str, category: bool, declared: Mapping[str, str]) -> _Input:
    """How to feed feature ``name``: its graph input must exist with a type that fits the feature."""
    kind = declared.get(name)
    if kind is None:
        raise KeyError(f"the graph has no input for feature {name!r}")
    if category:
        if kind != "tensor(string)":
            raise TypeError(f"category feature {name!r} is a {kind} input, not strings")
        return _Input(name, True, object)
    if kind not in _NUMPY_TYPES:
        raise TypeError(f"number feature {name!r} is a {kind} input")
    return _Input(name, False, _NUMPY_TYPES[kind])
