"""The current model in the form that answers for it: read by predict, the table build and the
Beam table pipeline alike, so a table is scored by the very form predict serves.

``models/current.skops`` carries metadata written with its content in the one compare-and-swap
of a promotion or rollback (``shared.training.registry.swap_current``): the version it holds and
the form to serve. For ``onnx`` the reader loads ``models/versions/<v>/model.onnx`` (a few KB to a
few MB; ONNX Runtime, no scikit-learn) and never reads the skops file; for ``sklearn``, or a blob
written before compiled serving (no metadata), it loads the skops file, importing scikit-learn
then and only then.

Version-consistent: the metadata and the content belong to one generation, and a version's files
are written before it can become current and never change, so the form loaded is always that of
the version of the generation it was read at. A compiled file that will not load (deleted,
corrupt) is logged and the version is served from its skops file instead: slower, same answers
within the recorded tolerance, never down.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.compiled.runtime import CompiledModel
from shared.config import Settings
from shared.contracts import CURRENT_FORM_METADATA, CURRENT_MODEL, CURRENT_VERSION_METADATA, ModelForm
from shared.errors import ModelNotReady, NotFound, RegistryError, ScikitLearnMissing, is_transient
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.scoring import Scorer
from shared.storage import Bucket, ObjectInfo
from shared.training.registry import card_name, compiled_name

log = get_logger(__name__)


@dataclass(frozen=True)
class LoadedCurrent:
    """The current model as loaded: the scorer, and the blob generation it belongs to."""

    scorer: Scorer
    info: ObjectInfo
    note: str  # how it was loaded, for /health and logs


def named_version(info: ObjectInfo) -> tuple[str | None, ModelForm]:
    """The version and the form the current blob's metadata names (None, sklearn: no metadata)."""
    version = info.metadata.get(CURRENT_VERSION_METADATA)
    form = info.metadata.get(CURRENT_FORM_METADATA)
    if version and form == ModelForm.ONNX:
        return version, ModelForm.ONNX
    return version or None, ModelForm.SKLEARN


def load_current(
    artifacts: Bucket, settings: Settings, info: ObjectInfo | None = None, *, eager: bool = True
) -> LoadedCurrent:
    """Load the current model's serving form (``info``: its blob's stat, if already made).

    ``eager=False`` (static serving, which never scores) reads a compiled model's schema without
    starting ONNX Runtime (``CompiledModel.from_bytes``).

    ``NotFound`` when there is no current model; ``ModelNotReady`` when it cannot be loaded in
    any form; storage faults propagate (the caller retries).
    """
    info = info or artifacts.stat(CURRENT_MODEL)
    version, form = named_version(info)
    if form == ModelForm.ONNX and version is not None:
        try:
            data = artifacts.read(compiled_name(version))
            compiled = CompiledModel.from_bytes(
                data, settings.max_model_bytes, expected_version=version, eager=eager
            )
            return LoadedCurrent(compiled, info, "compiled (ONNX Runtime)")
        except (NotFound, ModelNotReady, RegistryError) as exc:
            if is_transient(exc):
                raise
            log.error(
                "compiled model will not load; serving its scikit-learn form",
                extra={"fields": {"version": version, "error": str(exc)}},
            )
            fallback = f"scikit-learn (the compiled form will not load: {exc})"
            return _load_skops(artifacts, settings, fallback, eager, compiled_error=str(exc))
    return _load_skops(artifacts, settings, "scikit-learn", eager)


def _load_skops(
    artifacts: Bucket, settings: Settings, note: str, eager: bool, compiled_error: str | None = None
) -> LoadedCurrent:
    """The skops form of the current blob, of the generation read (it may be newer than a stat);
    ``compiled_error``: why its compiled form did not load, if it has one."""
    data, info = artifacts.read_with_info(CURRENT_MODEL)
    version, form = named_version(info)
    if form == ModelForm.ONNX and compiled_error is None:
        # Swapped since the stat, to a compiled version: serve that one in its compiled form.
        return load_current(artifacts, settings, info, eager=eager)
    try:
        bundle = ModelBundle.from_bytes(
            data, settings.model_trusted_types, max_bytes=settings.max_model_bytes
        )
    except ScikitLearnMissing as exc:
        raise ScikitLearnMissing(_no_fallback_message(version, compiled_error, exc)) from None
    if version is not None and bundle.version != version:
        raise ModelNotReady(
            f"{CURRENT_MODEL} holds version {bundle.version!r}, its metadata says {version!r}"
        )
    return LoadedCurrent(bundle, info, note)


def _no_fallback_message(version: str | None, compiled_error: str | None, cause: Exception) -> str:
    """Why a version cannot be served here at all, and the two ways out (docs/deploy.md)."""
    if version is None:
        why = f"{CURRENT_MODEL} was written before compiled serving and names no version"
        which = "the current model has no compiled form"
    elif compiled_error is not None:
        which = f"version {version!r} has no compiled form that loads"
        why = compiled_error
    else:
        which = f"version {version!r} has no compiled form"
        why = f"its card {card_name(version)} says why"
    return (
        f"this predict deployment has no scikit-learn fallback ({cause}): {which} ({why}); "
        "deploy predict with PREDICT_SKLEARN_FALLBACK=1 or fix the estimator so that it compiles"
    )
