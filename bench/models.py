"""The model the serving and table benchmarks measure, and how they make it current.

The issue's default pipeline (``shared.training.fitting.default_pipeline``: OneHotEncoder on the
five category features of the synthetic ad data, StandardScaler on its two numbers, then
SGDClassifier) on a schema like the synthetic one but keyed by three category features
(``SERVING_KEY``: 20 x 3 x 12 = 720 keys), so static and hybrid tables hold every key. The
non-key features get defaults, the values a table is built with; requests send them at those
values, so a table hit and the model answer the same instance.

``publish`` makes a version current the way a promotion does (``shared.training.registry``):
compiled (its folder with ``model.onnx`` and the card, then ``models/current.skops`` with the
metadata that names the ONNX form) or not (the same skops bytes with no metadata: served by
scikit-learn, as a version written before compiled serving is).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from shared.compiled.compile import compile_version
from shared.compiled.runtime import CompiledModel
from shared.contracts import CURRENT_MODEL, ModelForm
from shared.local.synth import LABEL, day_frame, synth_schema
from shared.local.synth_keys import PLACEMENTS, USER_SEGMENTS
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.tables.codec import decode_codes
from shared.tables.format import build_blob, new_build_id, switch_pointer, write_table
from shared.tables.keys import score_keys
from shared.training import registry
from shared.training.card import ModelCard

SERVING_KEY = ("country", "device", "ad_category")
NON_KEY_DEFAULTS: dict[str, Any] = {
    "hour": 20,
    "placement": PLACEMENTS[0],
    "user_segment": USER_SEGMENTS[0],
}
MAX_COMPILED_BYTES = 10**8


def serving_schema() -> Schema:
    """The synthetic schema keyed by ``SERVING_KEY``, with a default for every non-key feature."""
    base = synth_schema()
    features = tuple(
        dataclasses.replace(f, default=NON_KEY_DEFAULTS[f.name]) if f.name in NON_KEY_DEFAULTS else f
        for f in base.features
    )
    return dataclasses.replace(base, features=features, key=SERVING_KEY)


def fit_default(schema: Schema, version: str, rows: int = 20_000) -> ModelBundle:
    """The default pipeline fitted on one synthetic day of ``rows`` rows."""
    from shared.training.fitting import default_pipeline

    frame = day_frame(seed=0, day=1, rows=rows)
    estimator = default_pipeline(schema).fit(to_frame(schema, frame), frame[LABEL].to_numpy())
    return ModelBundle(version, estimator, schema)


def publish(artifacts: Bucket, bundle: ModelBundle, compiled: bool) -> Scorer:
    """Make ``bundle`` the current model, compiled or not; the scorer that predict will serve."""
    model_bytes = bundle.to_bytes()
    if not compiled:
        artifacts.write(CURRENT_MODEL, model_bytes)
        return bundle
    compilation = compile_version(bundle, None, registry.compiled_name(bundle.version))
    if compilation.onnx is None:
        raise RuntimeError(f"the bench model did not compile: {compilation.form.reason}")
    card = dataclasses.replace(ModelCard(version=bundle.version), compiled=compilation.form)
    registry.write_version(artifacts, bundle.version, model_bytes, card, compiled=compilation.onnx)
    registry.swap_current(
        artifacts,
        bundle.version,
        model_bytes,
        registry.current_generation(artifacts),
        kind="promote",
        previous=None,
        by="bench",
        form=ModelForm.ONNX,
    )
    return CompiledModel.from_bytes(compilation.onnx, MAX_COMPILED_BYTES, bundle.version)


def publish_table(artifacts: Bucket, scorer: Scorer, codes: np.ndarray, strategy: str) -> None:
    """A table of ``codes`` scored by ``scorer`` (the served form), made the current table."""
    schema = scorer.schema
    generation = artifacts.stat(CURRENT_MODEL).generation
    scores = score_keys(scorer, schema, decode_codes(schema, codes))
    meta = {"model_version": scorer.version, "model_generation": generation, "key": list(schema.key)}
    blob = build_blob(scorer.version, strategy, new_build_id())
    write_table(artifacts, blob, codes, scores, meta)
    pointer = {
        **meta,
        "blob": blob,
        "version": scorer.version,
        "rows": len(codes),
        "strategy": strategy,
        "built_at": "2026-01-01T00:00:00+00:00",
    }
    switch_pointer(artifacts, pointer, if_generation_match=0)


def instance(schema: Schema, code: int) -> dict[str, Any]:
    """A full instance of key ``code``: its key values, every other feature at its default."""
    columns = decode_codes(schema, [code])
    out: dict[str, Any] = {name: _plain(values[0]) for name, values in columns.items()}
    for feature in schema.features:
        if feature.name not in out:
            out[feature.name] = feature.default
    return out


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy integers and strings become Python ones)."""
    return value.item() if isinstance(value, np.generic) else value
