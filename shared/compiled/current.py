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

``load_version`` loads any stored version in one named form, with the same checks (predict's
shadow, ``shared.serving.shadow``): there, a form that will not load is not replaced by the other.
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
from shared.training.registry import card_name, compiled_name, model_name

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
            compiled = load_compiled(artifacts, settings, version, eager=eager)
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
        bundle = _bundle(data, settings, CURRENT_MODEL, version, "its metadata says")
    except ScikitLearnMissing as exc:
        raise ScikitLearnMissing(_no_fallback_message(version, compiled_error, exc)) from None
    return LoadedCurrent(bundle, info, note)


def load_compiled(
    artifacts: Bucket, settings: Settings, version: str, *, eager: bool = True
) -> CompiledModel:
    """``models/versions/<version>/model.onnx``, checked (``onnx_checks``) and of that very version.

    ``NotFound`` when the version has no compiled file; ``ModelNotReady`` when it is refused or
    will not load (``eager``: ONNX Runtime's session is made now); storage faults propagate.
    """
    data = artifacts.read(compiled_name(version))
    return CompiledModel.from_bytes(data, settings.max_model_bytes, expected_version=version, eager=eager)


def load_version(artifacts: Bucket, settings: Settings, version: str, form: ModelForm) -> Scorer:
    """One stored version in ``form`` and in that form only (the shadow predict scores beside the
    current model): its compiled file with an eager session, or its skops file (scikit-learn
    imported then; ``ScikitLearnMissing`` where it cannot be). No fallback from one form to the
    other: a shadow must cost what its form costs, or not run.

    ``NotFound`` when the file is missing; ``ModelNotReady`` (or ``RegistryError`` for a version
    id that names no folder) when it cannot be loaded; storage faults propagate.
    """
    if form == ModelForm.ONNX:
        return load_compiled(artifacts, settings, version)
    blob = model_name(version)
    return _bundle(artifacts.read(blob), settings, blob, version, "it should hold")


def _bundle(data: bytes, settings: Settings, blob: str, version: str | None, says: str) -> ModelBundle:
    """A skops model file's bundle, checked to hold ``version`` (when known)."""
    bundle = ModelBundle.from_bytes(data, settings.model_trusted_types, max_bytes=settings.max_model_bytes)
    if version is not None and bundle.version != version:
        raise ModelNotReady(f"{blob} holds version {bundle.version!r}, {says} {version!r}")
    return bundle


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
