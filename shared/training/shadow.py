"""The shadow pointer: which version runs in shadow beside the serving model, and its history.

``models/shadow.json`` names at most one version. It is replaced only by compare-and-swap on its
generation (``0``: not written yet), as ``models/current.skops`` is, so of two writers that read
the same pointer one wins and the other gets ``PreconditionFailed`` with nothing written. "No
shadow" is a pointer whose ``version`` is null (never a deleted object: a delete cannot be
compared-and-swapped against a reader's view on every backend). Each change is then recorded under
``registry/shadow/<generation>.json`` (``SHADOW_HISTORY_PREFIX``), named by the pointer's new
generation, so the records sort as the changes happened. The pointer itself carries its change,
so a record lost to a crash between the two writes is recovered from the pointer
(``list_history``).

What each change does to the versions' cards (``CardStatus.SHADOW``, ``REJECTED``, ...) and when a
shadow is promoted is ``shared.training.shadow_policy``'s; predict reads the pointer
(``shared.serving.state``) and scores the shadow beside the champion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.contracts import SHADOW_HISTORY_PREFIX, SHADOW_POINTER, ModelForm, ShadowChange
from shared.errors import NotFound, PreconditionFailed, RegistryError, ShadowError
from shared.logs import get_logger
from shared.storage import Bucket
from shared.training.registry import json_bytes, now_iso, read_json

log = get_logger(__name__)

POINTER_FORMAT = "prodml-shadow/1"


@dataclass(frozen=True)
class ShadowPointer:
    """``models/shadow.json`` as read: the version in shadow (None: none) and the last change.

    ``champion`` is the serving version when the shadow started: the live comparison pairs the
    shadow's scores with that version's answers only. ``form`` is the form predict scores the
    shadow in (ONNX when its card says it was compiled and verified). ``numbers`` are those the
    change was decided on (the live comparison's, for ``promoted`` or ``rejected``).
    """

    version: str | None
    change: ShadowChange
    time: str
    by: str
    reason: str = ""
    champion: str | None = None
    form: ModelForm = ModelForm.SKLEARN
    started: str | None = None  # when ``version`` began in shadow (None when no shadow)
    previous: str | None = None  # the version that was in shadow before this change
    numbers: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # of the pointer object read (0: none written yet); not stored

    @property
    def running(self) -> bool:
        """Whether a version is in shadow."""
        return self.version is not None

    def started_at(self) -> float | None:
        """When this shadow run started, in seconds since the epoch; None when unknown."""
        if not self.started:
            return None
        try:
            return datetime.fromisoformat(self.started.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """The pointer as stored (and as its history record)."""
        return {
            "format": POINTER_FORMAT,
            "version": self.version,
            "change": str(self.change),
            "time": self.time,
            "by": self.by,
            "reason": self.reason,
            "champion": self.champion,
            "form": str(self.form),
            "started": self.started,
            "previous": self.previous,
            "numbers": self.numbers,
        }

    @classmethod
    def from_dict(cls, body: Any, generation: int = 0) -> ShadowPointer:
        """A pointer as stored; ``ShadowError`` when it is not one."""
        if not isinstance(body, dict) or body.get("format") != POINTER_FORMAT:
            raise ShadowError(f"{SHADOW_POINTER} is not a {POINTER_FORMAT} object")
        version = body.get("version")
        try:
            if version is not None and not (isinstance(version, str) and version):
                raise ValueError(f"version {version!r} is not a version id")
            numbers = body.get("numbers") or {}
            if not isinstance(numbers, dict):
                raise ValueError("numbers is not an object")
            return cls(
                version=version,
                change=ShadowChange(body["change"]),
                time=str(body.get("time", "")),
                by=str(body.get("by", "")),
                reason=str(body.get("reason", "")),
                champion=_optional_text(body.get("champion")),
                form=ModelForm(body.get("form", ModelForm.SKLEARN)),
                started=_optional_text(body.get("started")),
                previous=_optional_text(body.get("previous")),
                numbers=numbers,
                generation=generation,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ShadowError(f"{SHADOW_POINTER} is malformed: {exc}") from None


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def read_pointer(artifacts: Bucket) -> ShadowPointer | None:
    """The shadow pointer (with its generation), or None when none was ever written.

    ``ShadowError`` when the object is there but is not a pointer."""
    try:
        data, info = artifacts.read_with_info(SHADOW_POINTER)
    except NotFound:
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShadowError(f"{SHADOW_POINTER} is not valid JSON: {exc}") from None
    return ShadowPointer.from_dict(body, info.generation)


def running_version(artifacts: Bucket) -> str | None:
    """The version in shadow now, or None (no pointer, or a stopped one)."""
    pointer = read_pointer(artifacts)
    return pointer.version if pointer is not None else None


def swap_pointer(artifacts: Bucket, new: ShadowPointer, expected_generation: int) -> ShadowPointer:
    """Compare-and-swap ``models/shadow.json`` to ``new`` against ``expected_generation`` (0: only
    if none was written); record the change; the pointer as written (with its generation).

    ``PreconditionFailed`` when another writer changed it first: nothing was written."""
    generation = artifacts.write(
        SHADOW_POINTER,
        json_bytes(new.to_dict()),
        content_type="application/json",
        if_generation_match=expected_generation,
    )
    written = dataclasses.replace(new, generation=generation)
    # A generation is written once, so the record's name is free; if not, the record is there.
    with contextlib.suppress(PreconditionFailed):
        artifacts.write(
            history_name(generation),
            json_bytes({**written.to_dict(), "generation": generation}),
            content_type="application/json",
            if_generation_match=0,
        )
    log.info(
        f"shadow {new.change}: {new.version or 'none'} (was {new.previous or 'none'})",
        extra={"fields": {"change": str(new.change), "version": new.version, "generation": generation}},
    )
    return written


def history_name(generation: int) -> str:
    """The history record of the pointer change that wrote ``generation``."""
    return f"{SHADOW_HISTORY_PREFIX}{generation:020d}.json"


def started(
    version: str,
    *,
    champion: str | None,
    form: ModelForm,
    by: str,
    reason: str,
    previous: ShadowPointer | None,
) -> ShadowPointer:
    """The pointer that puts ``version`` in shadow (``replaced`` when another was running)."""
    moment = now_iso()
    before = previous.version if previous is not None else None
    return ShadowPointer(
        version=version,
        change=ShadowChange.REPLACED if before is not None and before != version else ShadowChange.STARTED,
        time=moment,
        by=by,
        reason=reason,
        champion=champion,
        form=form,
        started=moment,
        previous=before,
    )


def ended(
    previous: ShadowPointer,
    change: ShadowChange,
    *,
    by: str,
    reason: str,
    numbers: dict[str, Any] | None = None,
) -> ShadowPointer:
    """The pointer that ends ``previous``'s shadow run with ``change`` (promoted, rejected, ...)."""
    return ShadowPointer(
        version=None,
        change=change,
        time=now_iso(),
        by=by,
        reason=reason,
        champion=previous.champion,
        form=previous.form,
        started=previous.started,
        previous=previous.version,
        numbers=dict(numbers or {}),
    )


def list_history(artifacts: Bucket) -> list[dict[str, Any]]:
    """Every change of the shadow pointer, oldest first (each record with its ``generation``).

    The pointer's own change is added when its record is missing (a crash between the swap and
    the record)."""
    records: list[dict[str, Any]] = []
    for info in artifacts.list(SHADOW_HISTORY_PREFIX):
        try:
            record = read_json(artifacts, info.name)
        except (NotFound, RegistryError) as exc:
            log.warning(f"skipping shadow record {info.name!r}: {exc}")
            continue
        if isinstance(record, dict) and isinstance(record.get("generation"), int):
            records.append(record)
    try:
        pointer = read_pointer(artifacts)
    except ShadowError as exc:
        log.warning(f"the shadow pointer cannot be read: {exc}")
        pointer = None
    if pointer is not None and all(r["generation"] != pointer.generation for r in records):
        records.append({**pointer.to_dict(), "generation": pointer.generation})
    return sorted(records, key=lambda r: int(r["generation"]))


def age_seconds(pointer: ShadowPointer, now: datetime | None = None) -> float | None:
    """How long the running shadow has run, in seconds; None when none runs or no start is known."""
    began = pointer.started_at()
    if pointer.version is None or began is None:
        return None
    return (now or datetime.now(UTC)).timestamp() - began
