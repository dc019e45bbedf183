"""The model registry in the artifacts bucket: versions, the current model, promotions, rollback.

Blobs (docs/design.md section 3)::

    models/versions/<version>/model.skops   every trained model (promoted or not), for rollback
    models/versions/<version>/card.json     what it is (``shared.training.card.ModelCard``)
    models/versions/<version>/holdout.parquet  held-out rows of its latest files (the next gate's)
    models/versions/<version>/model.onnx    its compiled form, when verified (``shared.compiled``)
    models/current.skops                    the serving model, a byte copy of one version's model;
                                            its metadata names the version and the form served
    registry/events/<generation>.json       one record per swap of current.skops (promote/rollback)

Every swap of ``models/current.skops`` is a compare-and-swap on its generation (``0`` when there
is none yet), so two writers can never both think they won. Each swap is then recorded under
``registry/events/`` named by the new generation, which orders the records exactly as the swaps
happened. The promotion history (what ``rollback`` walks back through) is replayed from those
records; a swap whose record was lost to a crash is recovered from the current model itself.

Which data file versions are done, and who works on one, is the ledger's
(``shared.training.ledger``: ``registry/processed/`` and ``registry/claims/``).

A little over 300 lines: the rollback stays beside the swap and the history it shares.

Version ids are ``<UTC time to the second>Z-<6 hex>`` (``20261125T120301Z-a1b2c3``): they sort by
time and two trainers in the same second still get different ids.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.contracts import (
    COMPILED_MODEL_FILE,
    CURRENT_FORM_METADATA,
    CURRENT_MODEL,
    CURRENT_VERSION_METADATA,
    EVENTS_PREFIX,
    VERSIONS_PREFIX,
    CardStatus,
    ModelForm,
)
from shared.errors import ModelNotReady, NotFound, PreconditionFailed, RegistryError
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.storage import Bucket
from shared.training.card import ModelCard

log = get_logger(__name__)


def now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z``."""
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with a ``Z`` (how every registry record writes a time)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def new_version_id(moment: datetime | None = None) -> str:
    """A fresh version id, sortable by time: ``20261125T120301Z-a1b2c3``."""
    moment = moment or datetime.now(UTC)
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def model_name(version: str) -> str:
    """The blob of a version's model."""
    return f"{VERSIONS_PREFIX}{_check_version(version)}/model.skops"


def compiled_name(version: str) -> str:
    """The blob of a version's compiled (ONNX) form."""
    return f"{VERSIONS_PREFIX}{_check_version(version)}/{COMPILED_MODEL_FILE}"


def current_metadata(version: str, form: ModelForm) -> dict[str, str]:
    """The metadata written with ``models/current.skops``: the version, and the form to serve."""
    return {CURRENT_VERSION_METADATA: version, CURRENT_FORM_METADATA: str(form)}


def holdout_name(version: str) -> str:
    """The blob of a version's held-out rows (the gate's rows for its successors)."""
    return f"{VERSIONS_PREFIX}{_check_version(version)}/holdout.parquet"


def card_name(version: str) -> str:
    """The blob of a version's card."""
    return f"{VERSIONS_PREFIX}{_check_version(version)}/card.json"


def _check_version(version: str) -> str:
    # A version names a folder: it must stay one path component.
    if not version or "/" in version or version in (".", "..") or len(version) > 100:
        raise RegistryError(f"invalid model version {version!r}")
    return version


def json_bytes(value: Any) -> bytes:
    """A registry record as stored: indented JSON, no NaN (GCS readers and humans read it)."""
    return (json.dumps(value, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n").encode()


def read_json(bucket: Bucket, name: str) -> Any:
    """The JSON blob ``name``; ``NotFound`` if absent, ``RegistryError`` if it is not JSON."""
    try:
        return json.loads(bucket.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{name!r} in bucket {bucket.name!r} is not valid JSON: {exc}") from None


# --- versions ----------------------------------------------------------------------------------


def write_version(
    artifacts: Bucket,
    version: str,
    model_bytes: bytes,
    card: ModelCard,
    holdout: bytes | None = None,
    compiled: bytes | None = None,
) -> None:
    """Write a new version: the model (its compiled form, its held-out rows), then its card (then
    it is complete)."""
    artifacts.write(
        model_name(version), model_bytes, content_type="application/octet-stream", if_generation_match=0
    )
    if compiled is not None:
        write_compiled(artifacts, version, compiled)
    if holdout is not None:
        artifacts.write(
            holdout_name(version),
            holdout,
            content_type="application/vnd.apache.parquet",
            if_generation_match=0,
        )
    artifacts.write(
        card_name(version), json_bytes(card.to_dict()), content_type="application/json", if_generation_match=0
    )


def write_compiled(artifacts: Bucket, version: str, compiled: bytes) -> None:
    """Write a version's compiled form, once (a second writer finds the same version's file there)."""
    with contextlib.suppress(PreconditionFailed):
        artifacts.write(
            compiled_name(version), compiled, content_type="application/octet-stream", if_generation_match=0
        )


def served_form(card: ModelCard | None) -> ModelForm:
    """The form predict serves a version in: ONNX when its card says it was compiled and verified."""
    return (
        ModelForm.ONNX
        if card is not None and card.compiled is not None and card.compiled.served
        else ModelForm.SKLEARN
    )


def write_card(artifacts: Bucket, card: ModelCard) -> None:
    """Replace a version's card (its decision changed)."""
    artifacts.write(card_name(card.version), json_bytes(card.to_dict()), content_type="application/json")


def read_card(artifacts: Bucket, version: str) -> ModelCard:
    """A version's card; ``NotFound`` if there is none, ``RegistryError`` if it is no card."""
    return _parse_card(read_json(artifacts, card_name(version)), f"card of version {version!r}")


def _parse_card(body: Any, what: str) -> ModelCard:
    if not isinstance(body, dict):
        raise RegistryError(f"{what} is not a JSON object")
    try:
        return ModelCard.from_dict(body)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"{what} is not a model card: {exc}") from None


def set_decision(artifacts: Bucket, card: ModelCard, status: CardStatus, reason: str) -> ModelCard:
    """Record a version's (new) decision in its card; return the updated card."""
    card = card.decided(status, reason, now_iso())
    write_card(artifacts, card)
    return card


def list_cards(artifacts: Bucket) -> list[ModelCard]:
    """Every version's card, oldest first (unreadable cards are skipped and logged)."""
    cards = []
    for info in artifacts.list(VERSIONS_PREFIX):
        if not info.name.endswith("/card.json"):
            continue
        try:
            cards.append(_parse_card(read_json(artifacts, info.name), repr(info.name)))
        except (NotFound, RegistryError) as exc:
            log.warning(f"skipping card {info.name!r}: {exc}")
    return sorted(cards, key=lambda c: (c.created, c.version))


# --- the current model -------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """The serving model as read, with the generation to compare-and-swap against."""

    bundle: ModelBundle
    generation: int
    card: ModelCard | None  # None for a model written without a card

    @property
    def version(self) -> str:
        """The current model's version."""
        return self.bundle.version

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """The data files accumulated into the current model (from its card)."""
        return list(self.card.lineage) if self.card is not None else []


def read_current(artifacts: Bucket, extra_trusted: Iterable[str] = ()) -> Current | None:
    """The current model, or None when none was promoted yet.

    ``ModelNotReady`` if the blob is not a loadable model (corrupt, or untrusted types).
    """
    try:
        data, info = artifacts.read_with_info(CURRENT_MODEL)
    except NotFound:
        return None
    bundle = ModelBundle.from_bytes(data, extra_trusted)
    try:
        card: ModelCard | None = read_card(artifacts, bundle.version)
    except (NotFound, RegistryError):
        card = None
    return Current(bundle, info.generation, card)


def current_generation(artifacts: Bucket) -> int:
    """The generation of ``models/current.skops``; 0 when there is none."""
    try:
        return artifacts.stat(CURRENT_MODEL).generation
    except NotFound:
        return 0


def swap_current(
    artifacts: Bucket,
    version: str,
    model_bytes: bytes,
    expected_generation: int,
    *,
    kind: str,
    previous: str | None,
    by: str,
    form: ModelForm = ModelForm.SKLEARN,
) -> int:
    """Compare-and-swap ``models/current.skops`` to ``version``; record the swap; return the generation.

    ``expected_generation`` is the generation read with the model being replaced (0: none yet).
    The blob's metadata names the version and ``form``, the form predict serves (written with the
    content, in the one compare-and-swap: no reader sees one without the other).
    ``PreconditionFailed`` when someone else swapped first: nothing was written.
    """
    generation = artifacts.write(
        CURRENT_MODEL,
        model_bytes,
        content_type="application/octet-stream",
        if_generation_match=expected_generation,
        metadata=current_metadata(version, form),
    )
    record = {
        "kind": kind,
        "version": version,
        "previous": previous,
        "generation": generation,
        "time": now_iso(),
        "by": by,
        "form": str(form),
    }
    # A generation is written once, so the record's name is free; if not, the record is there.
    with contextlib.suppress(PreconditionFailed):
        artifacts.write(
            f"{EVENTS_PREFIX}{generation:020d}.json",
            json_bytes(record),
            content_type="application/json",
            if_generation_match=0,
        )
    log.info(
        f"{kind}: {CURRENT_MODEL} is now version {version} (was {previous})",
        extra={"fields": {"version": version, "previous": previous, "generation": generation, "kind": kind}},
    )
    return generation


def list_events(artifacts: Bucket) -> list[dict[str, Any]]:
    """The swap records, in the order the swaps happened."""
    events = []
    for info in artifacts.list(EVENTS_PREFIX):
        try:
            record = read_json(artifacts, info.name)
        except (NotFound, RegistryError) as exc:
            log.warning(f"skipping registry event {info.name!r}: {exc}")
            continue
        if isinstance(record, dict) and isinstance(record.get("version"), str):
            events.append(record)
    return sorted(events, key=lambda e: int(e.get("generation", 0)))


def promotion_history(events: list[dict[str, Any]], current_version: str | None) -> list[str]:
    """The stack of promoted versions, oldest first, the current one last.

    A promotion pushes its version; a rollback pops back down to its target (or pushes the target
    if it was never promoted), so rolling back twice goes two steps back, not back and forth. If
    the current model is not on top (its swap record was lost to a crash), it is pushed.
    """
    stack: list[str] = []
    for event in events:
        version = event["version"]
        if event.get("kind") == "rollback" and version in stack:
            del stack[stack.index(version) + 1 :]
        else:
            stack.append(version)
    if current_version is not None and (not stack or stack[-1] != current_version):
        stack.append(current_version)
    return stack


@dataclass(frozen=True)
class Rollback:
    """What a rollback did."""

    previous: str
    version: str
    generation: int


def rollback(artifacts: Bucket, target: str | None = None, extra_trusted: Iterable[str] = ()) -> Rollback:
    """Make ``target`` (default: the version promoted before the current one) the current model.

    A compare-and-swap like a promotion, and recorded the same way. When the current model will
    not load (corrupt, untrusted types), the swap is made against its blob's generation and the
    default target is the most recent promoted version that loads. ``RegistryError`` when there
    is nothing to roll back to or ``target`` is unknown; ``PreconditionFailed`` when the current
    model changed meanwhile (run it again).
    """
    try:
        current = read_current(artifacts, extra_trusted)
    except ModelNotReady as exc:
        # A corrupt or untrusted current model is exactly when a rollback is needed most.
        return _rollback_from_unloadable(artifacts, target, extra_trusted, str(exc))
    if current is None:
        raise RegistryError(f"no current model ({CURRENT_MODEL}) to roll back from")
    if target is None:
        stack = promotion_history(list_events(artifacts), current.version)
        if len(stack) < 2:
            raise RegistryError(f"nothing to roll back to: {current.version} is the first promoted model")
        target = stack[-2]
    if target == current.version:
        raise RegistryError(f"version {target} is already the current model")
    try:
        data = artifacts.read(model_name(target))
    except NotFound:
        raise RegistryError(f"no model version {target!r} (see `prodml models`)") from None
    bundle = ModelBundle.from_bytes(data, extra_trusted)  # refuse to serve a model that cannot load
    if bundle.version != target:
        raise RegistryError(f"{model_name(target)!r} holds version {bundle.version!r}, not {target!r}")
    generation = swap_current(
        artifacts,
        target,
        data,
        current.generation,
        kind="rollback",
        previous=current.version,
        by="rollback",
        form=_rollback_form(artifacts, bundle),
    )
    return Rollback(previous=current.version, version=target, generation=generation)


def _rollback_form(artifacts: Bucket, bundle: ModelBundle) -> ModelForm:
    """The form a rollback target is served in, compiling it first if it never was (a version
    stored before compiled serving existed)."""
    # Imported here: the compiling module builds on this one (names, cards).
    from shared.config import get_settings
    from shared.training.compiling import ensure_compiled

    try:
        card: ModelCard | None = read_card(artifacts, bundle.version)
    except (NotFound, RegistryError):
        card = None
    return served_form(ensure_compiled(artifacts, bundle, card, get_settings()))


UNLOADABLE = "(unloadable)"  # the ``previous`` of a rollback away from a model that would not load


def _rollback_from_unloadable(
    artifacts: Bucket, target: str | None, extra_trusted: Iterable[str], problem: str
) -> Rollback:
    """Replace a current model that will not load with ``target``, or else the last good promotion.

    The compare-and-swap uses the generation of the blob as it is (it cannot be read as a model).
    Without ``target``, the promotion history is walked from the most recent version down to the
    first one whose stored model loads and is not the very bytes of the broken blob.
    """
    try:
        broken, info = artifacts.read_with_info(CURRENT_MODEL)
    except NotFound:
        raise RegistryError(f"no current model ({CURRENT_MODEL}) to roll back from") from None
    log.warning(f"the current model cannot be loaded ({problem}); rolling back to a good version")
    candidates = (
        [target] if target is not None else list(reversed(promotion_history(list_events(artifacts), None)))
    )
    refused: list[str] = []
    for version in dict.fromkeys(candidates):
        try:
            data = artifacts.read(model_name(version))
        except NotFound:
            if target is not None:
                raise RegistryError(f"no model version {target!r} (see `prodml models`)") from None
            refused.append(f"{version}: its model is gone")
            continue
        try:
            bundle = ModelBundle.from_bytes(data, extra_trusted)
        except ModelNotReady as exc:
            if target is not None:
                raise RegistryError(f"version {target} cannot be loaded either: {exc}") from None
            refused.append(f"{version}: {exc}")
            continue
        if data == broken or bundle.version != version:
            refused.append(f"{version}: holds the broken model or another version")
            continue
        generation = swap_current(
            artifacts,
            version,
            data,
            info.generation,
            kind="rollback",
            previous=UNLOADABLE,
            by="rollback",
            form=_rollback_form(artifacts, bundle),
        )
        return Rollback(previous=UNLOADABLE, version=version, generation=generation)
    detail = "; ".join(refused) or f"no promotion recorded under {EVENTS_PREFIX}"
    raise RegistryError(
        f"the current model cannot be loaded ({problem}) and no promoted version loads: {detail}"
    )
