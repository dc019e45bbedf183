"""Compile a trained version to ONNX with skl2onnx, and verify the compiled form against the
scikit-learn model before it may serve (issue 14; docs/design.md section 10).

``compile_version`` converts the estimator with one graph input per schema feature (strings for
categories, float32 numbers), loads the graph in ONNX Runtime with the serving options, and scores
the check rows with both forms: the gate's held-out rows and a sample of the key space (the rows
a table holds). The compiled form is served only if

- every score is within the task's tolerance of scikit-learn's (``TOLERANCE``), and
- it is batch-invariant: each checked row scores the same bits alone, in a batch of 7 and in the
  whole batch, so a table score (scored in chunks) equals the score of the same instance sent
  alone to predict.

A float32 graph that misses the tolerance (a tree whose threshold falls between a value and its
float32 rounding) is converted again with float64 number inputs where skl2onnx can: the
preprocessing then runs in double precision, as scikit-learn's does, and each tree ensemble
compares the float32 rounding of its input, as scikit-learn's trees do. Whatever
fails (conversion, loading, tolerance, invariance) is recorded in the card with the reason, and
that version is served by scikit-learn as before: nothing breaks.

Training side only: imports scikit-learn (through the bundle), skl2onnx and onnx.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.compiled.form import CompiledForm
from shared.compiled.runtime import (
    COLUMNS_KEY,
    COMPILED_FORMAT,
    FORMAT_KEY,
    OUTPUT_KEY,
    SCHEMA_KEY,
    VERSION_KEY,
    CompiledModel,
)
from shared.contracts import CompileStatus
from shared.errors import ModelNotReady
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.schema import Schema
from shared.scoring import Columns
from shared.tables.codec import decode_codes
from shared.tables.keys import key_instance_columns

log = get_logger(__name__)

TOLERANCE: dict[str, tuple[float, str]] = {
    # task: (bound, how it applies). Probabilities: float32 arithmetic keeps them within ~1e-7 of
    # scikit-learn's float64 (measured 1.1e-7 on the default pipeline), 1e-6 leaves room for
    # longer sums. Regression: float32 has 24 bits, so the bound scales with the prediction.
    "binary": (1e-6, "absolute"),
    "multiclass": (1e-6, "absolute"),
    "regression": (1e-5, "relative to max(1, |prediction|)"),
}
KEY_SAMPLE = 2000  # keys of the key space scored by both forms
INVARIANCE_ROWS = 300  # rows scored alone, in sevens and in one batch
MAX_CHECK_ROWS = 20000  # held-out rows scored by both forms, at most
MAX_BYTES = 512 * 1024 * 1024  # a compiled graph is refused above this (the serving bound is lower)
# The tree operators whose thresholds skl2onnx writes in float32 (see _trees_compare_in_float32).
_FLOAT32_TREE_OPERATORS = frozenset({"TreeEnsembleClassifier", "TreeEnsembleRegressor"})


@dataclass(frozen=True)
class Compilation:
    """A version's compiled graph (None unless verified) and what the card records of it."""

    onnx: bytes | None
    form: CompiledForm


def compile_version(
    bundle: ModelBundle, check_rows: pd.DataFrame | None, blob: str, seed: int = 0
) -> Compilation:
    """Convert ``bundle`` and verify it (see the module docstring); ``blob``: where it will live."""
    started = time.perf_counter()
    columns = _check_columns(bundle.schema, check_rows, seed)
    expected = bundle.score_columns(columns)
    outcome = _try_precision(bundle, columns, expected, np.float32, blob)
    if outcome.form.status == CompileStatus.DIFFERS:
        wider = _try_precision(bundle, columns, expected, np.float64, blob)
        if wider.form.status == CompileStatus.VERIFIED:
            outcome = wider
    form = _with_seconds(outcome.form, time.perf_counter() - started)
    log.info(
        f"compiled {bundle.version}: {form.status} ({form.reason})",
        extra={"fields": {"version": bundle.version, "status": form.status, "max": form.max_abs_difference}},
    )
    return Compilation(outcome.onnx if form.served else None, form)


def _with_seconds(form: CompiledForm, seconds: float) -> CompiledForm:
    return CompiledForm(**{**form.__dict__, "seconds": round(seconds, 4)})


def _check_columns(schema: Schema, rows: pd.DataFrame | None, seed: int) -> dict[str, np.ndarray]:
    """The rows both forms score: held-out rows (at most ``MAX_CHECK_ROWS``), then sampled keys."""
    parts: list[dict[str, np.ndarray]] = []
    if rows is not None and len(rows):
        head = rows.iloc[:MAX_CHECK_ROWS]
        parts.append({f.name: head[f.name].to_numpy() for f in schema.features})
    if schema.key:
        rng = np.random.default_rng(seed)
        cardinality = schema.key_cardinality
        codes = (
            np.arange(cardinality)
            if cardinality <= KEY_SAMPLE
            else np.sort(rng.choice(cardinality, KEY_SAMPLE, replace=False))
        )
        keyed = key_instance_columns(schema, decode_codes(schema, codes.astype(np.int64)))
        parts.append({name: np.asarray(values) for name, values in keyed.items()})
    if not parts:
        return {f.name: np.asarray([]) for f in schema.features}
    return {
        f.name: np.concatenate([np.asarray(p[f.name], dtype=object) for p in parts])
        if f.type == "category"
        else np.concatenate([np.asarray(p[f.name], dtype=np.float64) for p in parts])
        for f in schema.features
    }


def _try_precision(
    bundle: ModelBundle, columns: Columns, expected: np.ndarray, number_type: Any, blob: str
) -> Compilation:
    """Convert with number inputs of ``number_type``, load, and check; the outcome either way."""
    precision = np.dtype(number_type).name
    try:
        onnx_bytes, opsets = convert(bundle, number_type)
    except Exception as exc:  # skl2onnx raises many types for an estimator it cannot convert
        return _refused(CompileStatus.UNCONVERTIBLE, f"skl2onnx cannot convert it: {_short(exc)}", precision)
    try:
        compiled = CompiledModel.from_bytes(onnx_bytes, MAX_BYTES, expected_version=bundle.version)
        got = compiled.score_columns(columns)
    except (ModelNotReady, Exception) as exc:  # noqa: BLE001 - any failure means: not served compiled
        return _refused(CompileStatus.UNCONVERTIBLE, f"ONNX Runtime cannot run it: {_short(exc)}", precision)
    bound, kind = TOLERANCE[bundle.schema.label.task]
    tolerance = f"{bound:g} {kind}"
    n = len(expected)
    difference = float(np.max(np.abs(got - expected))) if n else 0.0
    scale = np.maximum(1.0, np.abs(expected)) if kind != "absolute" else 1.0
    over = int(np.sum(np.any((np.abs(got - expected) / scale > bound).reshape(n, -1), axis=1))) if n else 0
    invariant = batch_invariant(compiled, columns)
    base: dict[str, Any] = {
        "precision": precision,
        "max_abs_difference": difference,
        "tolerance": tolerance,
        "rows_checked": n,
        "batch_invariant": invariant,
        "onnx_bytes": len(onnx_bytes),
        "opsets": opsets,
        "libraries": _libraries(),
    }
    if n == 0:
        form = CompiledForm(CompileStatus.DIFFERS, "no rows to check it on", **base)
    elif over:
        reason = (
            f"{over} of {n} rows differ from scikit-learn by more than {tolerance} (largest {difference:.3g})"
        )
        form = CompiledForm(CompileStatus.DIFFERS, reason, **base)
    elif not invariant:
        form = CompiledForm(CompileStatus.DIFFERS, "a row alone and in a batch score different bits", **base)
    else:
        reason = f"agrees with scikit-learn within {tolerance} on {n} rows (largest {difference:.3g})"
        form = CompiledForm(CompileStatus.VERIFIED, reason, blob=blob, **base)
    return Compilation(onnx_bytes, form)


def _refused(status: CompileStatus, reason: str, precision: str) -> Compilation:
    return Compilation(None, CompiledForm(status, reason, precision=precision, libraries=_libraries()))


def _short(exc: BaseException) -> str:
    """An exception in one line of at most 300 characters (skl2onnx's messages dump whole arrays)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def batch_invariant(compiled: CompiledModel, columns: Columns, rows: int = INVARIANCE_ROWS) -> bool:
    """Whether the first ``rows`` rows score the same bits alone, in sevens, and in one batch."""
    n = min(rows, len(next(iter(columns.values()), [])))
    if n == 0:
        return True
    head = {name: np.asarray(values)[:n] for name, values in columns.items()}
    whole = compiled.score_columns(head)

    def in_pieces(size: int) -> np.ndarray:
        pieces = [
            compiled.score_columns({name: values[i : i + size] for name, values in head.items()})
            for i in range(0, n, size)
        ]
        return np.concatenate(pieces)

    return bool(np.array_equal(in_pieces(1), whole) and np.array_equal(in_pieces(7), whole))


def convert(bundle: ModelBundle, number_type: Any) -> tuple[bytes, dict[str, int]]:
    """The bundle's estimator as a prodml ONNX file (number inputs of ``number_type``), and its
    operator sets; raises whatever skl2onnx raises for an estimator it cannot convert."""
    import onnx.helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    schema = bundle.schema
    number = DoubleTensorType if number_type is np.float64 else FloatTensorType
    inputs = [
        (f.name, StringTensorType([None, 1]) if f.type == "category" else number([None, 1]))
        for f in schema.features
    ]
    estimator = bundle.estimator
    classifier = schema.label.task != "regression"
    # Plain arrays of probabilities rather than skl2onnx's default list of {class: probability}.
    options = {id(step): {"zipmap": False} for step in _steps(estimator) if hasattr(step, "predict_proba")}
    model = convert_sklearn(estimator, initial_types=inputs, options=options or None)
    if number_type is np.float64:
        _trees_compare_in_float32(model)
    outputs = [o.name for o in model.graph.output]
    output = (
        "probabilities" if classifier and "probabilities" in outputs else outputs[-1 if classifier else 0]
    )
    onnx.helper.set_model_props(
        model,
        {
            FORMAT_KEY: COMPILED_FORMAT,
            VERSION_KEY: bundle.version,
            SCHEMA_KEY: schema.to_json(),
            OUTPUT_KEY: output,
            COLUMNS_KEY: _class_columns(bundle),
        },
    )
    opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    return model.SerializeToString(), opsets


def _trees_compare_in_float32(model: Any) -> None:
    """Cast the input of every tree ensemble of a double-precision graph to float32, in place.

    scikit-learn's trees cast their input to float32 before comparing it with their thresholds;
    skl2onnx 1.20's tree converters write the thresholds as float32 attributes (ai.onnx.ml opset 1)
    whatever the input type, and ONNX Runtime then compares the double input with them as
    doubles, so a value that rounds onto a threshold in float32 falls on the other side of it
    (measured: 0.15 on a forest's probability). With the cast, the graph compares what
    scikit-learn compares, and only the preprocessing before it runs in double precision.
    """
    import onnx.helper

    nodes = []
    casts: dict[str, str] = {}  # one Cast per tensor, however many ensembles read it (a voting model)
    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _FLOAT32_TREE_OPERATORS:
            source = node.input[0]
            if source not in casts:
                casts[source] = f"{source}_as_float32"
                nodes.append(
                    onnx.helper.make_node("Cast", [source], [casts[source]], to=onnx.TensorProto.FLOAT)
                )
            node.input[0] = casts[source]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _steps(estimator: Any) -> list[Any]:
    """The estimator and, for a Pipeline, its steps (skl2onnx's options are keyed by object)."""
    steps = [estimator]
    for _, step in getattr(estimator, "steps", []):
        steps.extend(_steps(step))
    return steps


def _class_columns(bundle: ModelBundle) -> str:
    """JSON: for each schema class, its column in the estimator's probabilities (-1: never seen)."""
    import json

    if bundle.task == "regression":
        return "[]"
    fitted = list(bundle.estimator.classes_)
    return json.dumps([fitted.index(c) if c in fitted else -1 for c in bundle.classes])


def _libraries() -> dict[str, str]:
    import onnxruntime
    import skl2onnx

    return {"skl2onnx": skl2onnx.__version__, "onnxruntime": onnxruntime.__version__}
