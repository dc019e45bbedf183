"""The shadow pointer: which version runs in shadow beside the serving model, and its history.

``models/shadow.json`` names at most one version. It is replaced only by compare-and-swap on its
generation (``0``: not written yet), as ``models/current.skops`` is, so of two writers that read
the same pointer one wins and the other gets ``PreconditionFailed`` with nothing written. "No
shadow" is a pointer whose ``version`` is null (never a deleted object: a delete cannot be
compared-and-swapped against a reader's view on every backend). Each change is then recorded under
``registry/shadow/<generation>.json`` (``SHADOW_HISTORY_PREFIX``), named by the pointer's new
generation, so the records sort as the changes happened. The pointer itself carries its change,
so a record lost to a crash between the two writes is recovered from the pointer
(``list_history``) while it is current, and written by the next swap before it replaces that
pointer (``swap_pointer``): no change loses its record.

An ended pointer keeps ``carry``: the lineage entries of the ended shadow (and of the shadows it
replaced) that the serving model lacked, so the next challenger still learns those files
(``shared.training.event_shadow.carried_lineage``). An object that is not a pointer
(``read_state``'s ``problem``) is replaced as "none running" by the next start or stop.

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
    change was decided on (the live comparison's, for ``promoted`` or ``rejected``). ``carry``:
    lineage entries (data files) the next challenger must be trained on beside the serving
    model's lineage, or their rows would drop out of every later model: an ended run's files, or,
    for a version started by hand, an earlier ended pointer's carry its own lineage lacks.
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
    carry: list[dict[str, Any]] = field(default_factory=list)
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
            "carry": self.carry,
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
            carry = body.get("carry") or []  # a pointer written before carry existed has none
            if not (isinstance(carry, list) and all(isinstance(ref, dict) for ref in carry)):
                raise ValueError("carry is not a list of lineage entries")
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
                carry=carry,
                generation=generation,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ShadowError(f"{SHADOW_POINTER} is malformed: {exc}") from None


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class PointerState:
    """``models/shadow.json`` as it is: the pointer (None: none written, or not a pointer), the
    generation of the object (0: none), and why the object is not a pointer (None: it is one)."""

    pointer: ShadowPointer | None
    generation: int
    problem: str | None = None


def read_state(artifacts: Bucket) -> PointerState:
    """The pointer object as it is, malformed or not, with its generation (one read).

    A writer that must replace a malformed pointer swaps against this generation: a pointer
    nobody can parse must not stall every start and stop."""
    try:
        data, info = artifacts.read_with_info(SHADOW_POINTER)
    except NotFound:
        return PointerState(None, 0)
    try:
        return PointerState(_parse(data, info.generation), info.generation)
    except ShadowError as exc:
        return PointerState(None, info.generation, str(exc))


def read_pointer(artifacts: Bucket) -> ShadowPointer | None:
    """The shadow pointer (with its generation), or None when none was ever written.

    ``ShadowError`` when the object is there but is not a pointer."""
    try:
        data, info = artifacts.read_with_info(SHADOW_POINTER)
    except NotFound:
        return None
    return _parse(data, info.generation)


def _parse(data: bytes, generation: int) -> ShadowPointer:
    """The pointer in ``data``; ``ShadowError`` when it is not one."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShadowError(f"{SHADOW_POINTER} is not valid JSON: {exc}") from None
    return ShadowPointer.from_dict(body, generation)


def running_version(artifacts: Bucket) -> str | None:
    """The version in shadow now, or None (no pointer, or a stopped one)."""
    pointer = read_pointer(artifacts)
    return pointer.version if pointer is not None else None


def swap_pointer(
    artifacts: Bucket,
    new: ShadowPointer,
    expected_generation: int,
    *,
    replacing: ShadowPointer | None = None,
) -> ShadowPointer:
    """Compare-and-swap ``models/shadow.json`` to ``new`` against ``expected_generation`` (0: only
    if none was written); record the change; the pointer as written (with its generation).

    ``replacing``: the pointer the caller read at ``expected_generation``. Its record is written
    first when missing (a crash between its swap and its record), as once it is replaced only its
    record can say what it did. ``PreconditionFailed`` when another writer changed the pointer
    first: nothing but that missing record was written."""
    if replacing is not None and replacing.generation:
        _record(artifacts, replacing)
    generation = artifacts.write(
        SHADOW_POINTER,
        json_bytes(new.to_dict()),
        content_type="application/json",
        if_generation_match=expected_generation,
    )
    written = dataclasses.replace(new, generation=generation)
    _record(artifacts, written)
    log.info(
        f"shadow {new.change}: {new.version or 'none'} (was {new.previous or 'none'})",
        extra={"fields": {"change": str(new.change), "version": new.version, "generation": generation}},
    )
    return written


def _record(artifacts: Bucket, pointer: ShadowPointer) -> None:
    """Write ``pointer``'s history record, created only if absent (named by its generation)."""
    # A generation is written once, so the record's name is free; if not, the record is there.
    with contextlib.suppress(PreconditionFailed):
        artifacts.write(
            history_name(pointer.generation),
            json_bytes({**pointer.to_dict(), "generation": pointer.generation}),
            content_type="application/json",
            if_generation_match=0,
        )


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
    carry: list[dict[str, Any]] | None = None,
) -> ShadowPointer:
    """The pointer that puts ``version`` in shadow (``replaced`` when another was running);
    ``carry``: files it must keep for the next challenger that its own lineage lacks."""
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
        carry=list(carry or []),
    )


def ended(
    previous: ShadowPointer,
    change: ShadowChange,
    *,
    by: str,
    reason: str,
    numbers: dict[str, Any] | None = None,
    carry: list[dict[str, Any]] | None = None,
) -> ShadowPointer:
    """The pointer that ends ``previous``'s shadow run with ``change`` (promoted, rejected, ...);
    ``carry``: the files of that run the next challenger must still learn."""
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
        carry=list(carry or []),
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
