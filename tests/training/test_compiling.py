"""Compiling where versions are written: every trained version on a real local bucket gets its
compiled form checked, recorded in its card and named in the current blob's metadata; a plug-in
skl2onnx cannot convert is served by scikit-learn with the card's reason; a rollback target stored
before compiled serving is compiled when it becomes current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import training_rows
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from test_on_event import make_world

from shared.compiled.current import load_current, named_version
from shared.compiled.runtime import CompiledModel
from shared.contracts import CURRENT_MODEL, CompileStatus, ModelForm
from shared.model import ModelBundle
from shared.schema import Schema
from shared.training import fitting, registry


def hist_gradient_boosting(schema: Schema) -> Pipeline:
    """An ESTIMATOR plug-in that skl2onnx 1.20 cannot convert (with scikit-learn 1.9)."""
    return Pipeline(
        [
            ("preprocess", fitting.default_preprocessor(schema)),
            ("model", HistGradientBoostingClassifier(max_iter=10, random_state=0)),
        ]
    )


def _fresh_columns(schema: Schema, seed: int) -> dict[str, np.ndarray]:
    rows = training_rows(300, seed, schema.label.task)
    return {f.name: rows[f.name].to_numpy() for f in schema.features}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_trained_version_is_compiled_verified_and_served_in_its_compiled_form(
    tmp_path: Path, task: str
) -> None:
    world = make_world(tmp_path, task)
    outcome = world.send("incoming/a.csv", training_rows(300, 1, task))
    assert outcome.status == "promoted", outcome.message
    version = outcome.version or ""

    card = registry.read_card(world.artifacts, version)
    compiled = card.compiled
    assert compiled is not None and compiled.status == CompileStatus.VERIFIED, compiled
    assert compiled.blob == registry.compiled_name(version)
    assert compiled.rows_checked > 0 and compiled.batch_invariant is True
    assert compiled.max_abs_difference is not None and compiled.max_abs_difference < 1e-4
    assert named_version(world.artifacts.stat(CURRENT_MODEL)) == (version, ModelForm.ONNX)

    served = load_current(world.artifacts, world.settings).scorer
    assert isinstance(served, CompiledModel) and served.version == version
    bundle = world.current().bundle
    fresh = _fresh_columns(bundle.schema, 77)
    got, want = served.score_columns(fresh), bundle.score_columns(fresh)
    bound = 1e-6 if task != "regression" else 1e-5 * np.maximum(1.0, np.abs(want))
    assert np.all(np.abs(got - want) <= bound)


def test_a_plug_in_skl2onnx_cannot_convert_is_promoted_and_served_by_sklearn_with_the_reason(
    tmp_path: Path,
) -> None:
    world = make_world(
        tmp_path,
        ESTIMATOR="test_compiling:hist_gradient_boosting",
        MODEL_TRUSTED_TYPES="sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    )
    outcome = world.send("incoming/a.csv", training_rows(300, 1))
    assert outcome.status == "promoted", outcome.message

    card = registry.read_card(world.artifacts, outcome.version or "")
    assert card.compiled is not None and card.compiled.status == CompileStatus.UNCONVERTIBLE
    assert card.compiled.reason.startswith("skl2onnx cannot convert it:")
    assert not world.artifacts.exists(registry.compiled_name(card.version))
    assert named_version(world.artifacts.stat(CURRENT_MODEL)) == (card.version, ModelForm.SKLEARN)
    assert isinstance(load_current(world.artifacts, world.settings).scorer, ModelBundle)


def test_with_compile_models_off_nothing_is_compiled_and_the_card_says_so(tmp_path: Path) -> None:
    world = make_world(tmp_path, COMPILE_MODELS="false")
    outcome = world.send("incoming/a.csv", training_rows(300, 1))

    card = registry.read_card(world.artifacts, outcome.version or "")
    assert card.compiled is not None and card.compiled.status == CompileStatus.DISABLED
    assert named_version(world.artifacts.stat(CURRENT_MODEL))[1] == ModelForm.SKLEARN


def test_a_rollback_target_stored_before_compiled_serving_is_compiled_as_it_becomes_current(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    old = world.send("incoming/a.csv", training_rows(300, 1)).version or ""
    world.send("incoming/b.csv", training_rows(300, 2))
    # ``old`` as a version of before: no compiled form, a card that never tried.
    world.artifacts.delete(registry.compiled_name(old))
    card = registry.read_card(world.artifacts, old)
    registry.write_card(world.artifacts, dataclasses.replace(card, compiled=None))

    done = registry.rollback(world.artifacts, old)

    assert done.version == old
    assert registry.read_card(world.artifacts, old).compiled.status == CompileStatus.VERIFIED  # type: ignore[union-attr]
    assert world.artifacts.exists(registry.compiled_name(old))
    assert named_version(world.artifacts.stat(CURRENT_MODEL)) == (old, ModelForm.ONNX)
    assert isinstance(load_current(world.artifacts, world.settings).scorer, CompiledModel)
