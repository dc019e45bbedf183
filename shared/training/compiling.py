"""Compiling versions where they are written: a challenger before its version is stored, and a
rollback target that was stored before compiled serving existed (``shared.compiled.compile``
does the converting and the checking; this module decides when, on which rows, and records it).
"""

from __future__ import annotations

import dataclasses
import io

import pandas as pd

from shared.compiled.compile import Compilation, compile_version
from shared.compiled.form import CompiledForm
from shared.config import Settings
from shared.contracts import CompileStatus
from shared.errors import NotFound
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.storage import Bucket
from shared.training import registry
from shared.training.card import ModelCard

log = get_logger(__name__)

DISABLED = CompiledForm(CompileStatus.DISABLED, "COMPILE_MODELS=false: served by scikit-learn")


def compile_challenger(
    bundle: ModelBundle, check_rows: pd.DataFrame | None, settings: Settings
) -> Compilation:
    """The compiled form of a new version, checked on ``check_rows`` (the gate's held-out rows)
    and sampled keys; a ``DISABLED`` record when ``COMPILE_MODELS`` is off."""
    if not settings.compile_models:
        return Compilation(None, DISABLED)
    return compile_version(bundle, check_rows, registry.compiled_name(bundle.version), settings.random_seed)


def ensure_compiled(
    artifacts: Bucket, bundle: ModelBundle, card: ModelCard | None, settings: Settings
) -> ModelCard | None:
    """Compile a stored version that never was (its card has no ``compiled``), on its stored
    held-out rows, and record it in its card; the card as it now is (unchanged if it was tried)."""
    if card is None or card.compiled is not None or not settings.compile_models:
        return card
    compilation = compile_version(
        bundle,
        _stored_holdout(artifacts, bundle),
        registry.compiled_name(bundle.version),
        settings.random_seed,
    )
    if compilation.onnx is not None:
        registry.write_compiled(artifacts, bundle.version, compilation.onnx)
    card = dataclasses.replace(card, compiled=compilation.form)
    registry.write_card(artifacts, card)
    return card


def _stored_holdout(artifacts: Bucket, bundle: ModelBundle) -> pd.DataFrame | None:
    """The version's stored held-out rows (``holdout.parquet``), or None (then keys only)."""
    try:
        return pd.read_parquet(io.BytesIO(artifacts.read(registry.holdout_name(bundle.version))))
    except (NotFound, ValueError, OSError) as exc:
        log.info(f"no usable held-out rows for {bundle.version} ({exc!r}): checking on keys only")
        return None
