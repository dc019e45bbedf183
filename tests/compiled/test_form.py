"""The card's record of a compiled form: stored as JSON and read back whole, and absent from
cards written before compiled serving."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from shared.compiled.compile import compile_version
from shared.compiled.form import CompiledForm
from shared.contracts import CardStatus, CompileStatus
from shared.model import ModelBundle, to_frame
from shared.schema import Schema
from shared.training.card import Decision, ModelCard
from shared.training.fitting import default_preprocessor

VERIFIED = CompiledForm(
    CompileStatus.VERIFIED,
    "agrees with scikit-learn within 1e-06 absolute on 196 rows (largest 1.04e-07)",
    blob="models/versions/v1/model.onnx",
    precision="float32",
    max_abs_difference=1.04e-07,
    tolerance="1e-06 absolute",
    rows_checked=196,
    batch_invariant=True,
    onnx_bytes=1234,
    opsets={"ai.onnx": 17, "ai.onnx.ml": 1},
    libraries={"skl2onnx": "1.20.0", "onnxruntime": "1.32.0"},
    seconds=0.05,
)
UNCONVERTIBLE = CompiledForm(CompileStatus.UNCONVERTIBLE, "skl2onnx cannot convert it: ValueError: …")


def stored(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as it comes back from card.json."""
    return json.loads(json.dumps(body))


@pytest.mark.parametrize("form", [VERIFIED, UNCONVERTIBLE], ids=["verified", "unconvertible"])
def test_a_compiled_form_round_trips_through_json(form: CompiledForm) -> None:
    assert CompiledForm.from_dict(stored(form.to_dict())) == form


def test_only_a_verified_form_with_a_blob_is_served() -> None:
    assert VERIFIED.served
    assert not CompiledForm(CompileStatus.VERIFIED, "verified, but its file was not written").served
    assert not UNCONVERTIBLE.served
    assert not CompiledForm(CompileStatus.DIFFERS, "differs", blob="models/versions/v1/model.onnx").served


def test_a_status_that_is_none_of_compile_status_is_refused() -> None:
    with pytest.raises(ValueError, match="'maybe'"):
        CompiledForm.from_dict({**VERIFIED.to_dict(), "status": "maybe"})


def test_the_record_of_a_real_compilation_round_trips_through_json() -> None:
    # What the compile records comes from numpy: every value must still be plain JSON.
    schema = Schema.from_dict(
        {
            "features": [
                {"name": "country", "type": "category", "domain": ["br", "de", "us"]},
                {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.0},
            ],
            "label": {"name": "converted", "type": "category", "classes": [0, 1]},
            "key": ["country"],
        }
    )
    rng = np.random.default_rng(0)
    frame = to_frame(
        schema,
        [
            {"country": str(rng.choice(["br", "de", "us"])), "bid": float(rng.uniform(0, 10))}
            for _ in range(200)
        ],
    )
    y = (frame["bid"] > 5).astype(int)
    estimator = Pipeline([("preprocess", default_preprocessor(schema)), ("model", LogisticRegression())])
    form = compile_version(
        ModelBundle("v1", estimator.fit(frame, y), schema), frame, "models/versions/v1/model.onnx"
    ).form
    assert form.status == CompileStatus.VERIFIED, form.reason
    assert CompiledForm.from_dict(stored(form.to_dict())) == form


@pytest.mark.parametrize(
    "compiled", [VERIFIED, UNCONVERTIBLE, None], ids=["verified", "unconvertible", "none"]
)
def test_a_card_round_trips_with_or_without_its_compiled_form(compiled: CompiledForm | None) -> None:
    card = ModelCard(
        "v1",
        created="2026-11-25T12:00:00Z",
        task="binary",
        strategy="full",
        decision=Decision(CardStatus.PROMOTED, "better", "2026-11-25T12:00:01Z"),
        compiled=compiled,
    )
    body = stored(card.to_dict())
    assert body["compiled"] == (compiled.to_dict() if compiled is not None else None)
    assert ModelCard.from_dict(body) == card


def test_a_card_written_before_compiled_serving_reads_as_not_compiled() -> None:
    before = {
        "format": "prodml-card/1",
        "version": "v0",
        "task": "binary",
        "strategy": "full",
        "decision": {"status": "promoted", "reason": "first model", "time": "2026-01-01T00:00:00Z"},
    }
    card = ModelCard.from_dict(before)
    assert card.compiled is None and card.extra == {}
    assert stored(card.to_dict())["compiled"] is None
