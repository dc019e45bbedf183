"""The model registry in the artifacts bucket: versions, the current model, promotions, markers.

Blobs (docs/design.md section 3)::

    models/versions/<version>/model.skops   every trained model (promoted or not), for rollback
    models/versions/<version>/card.json     what it is: metrics, lineage, parent, decision, ...
    models/versions/<version>/holdout.parquet  held-out rows of its latest files (the next gate's)
    models/current.skops                    the serving model, a byte copy of one version's model
    registry/events/<generation>.json       one record per swap of current.skops (promote/rollback)
    registry/processed/<bucket>/<name>@<generation>.json   "this data file is done", only-if-absent
    registry/claims/<bucket>/<name>@<generation>.json      who works on a data file version, until
                                                           when, and the version it wrote, if any

(A marker or claim name that would pass GCS's 1,024 bytes keeps a head of ``<name>`` and a hash
of it instead: ``shared.storage.names.derived_name``.)

Every swap of ``models/current.skops`` is a compare-and-swap on its generation (``0`` when there
is none yet), so two writers can never both think they won. Each swap is then recorded under
``registry/events/`` named by the new generation, which orders the records exactly as the swaps
happened. The promotion history (what ``rollback`` walks back through) is replayed from those
records; a swap whose record was lost to a crash is recovered from the current model itself.

A claim makes the work on one data file version run once, however many deliveries of its
event arrive at once: it is created only if absent, so one delivery holds it; it names the
delivery's event id and an expiry. The holder records in it the version it is about to write,
each update a compare-and-swap on the claim's generation. A claim past its expiry
(its holder died) is taken over with a compare-and-swap on its generation too, so of two
deliveries that find it expired only one takes it; the taker keeps the version recorded in it, to
promote that very version. The trainer deletes its claim when the work is done; work that
ends otherwise releases it at once (deleted, or expired when it records a version to resume).

Version ids are ``<UTC time to the second>Z-<6 hex>`` (``20261125T120301Z-a1b2c3``): they sort by
time and two trainers in the same second still get different ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import CLAIMS_PREFIX, CURRENT_MODEL, EVENTS_PREFIX, PROCESSED_PREFIX, VERSIONS_PREFIX
from shared.errors import ClaimLost, ModelNotReady, NotFound, PreconditionFailed, RegistryError
from shared.logs import get_logger
from shared.model import ModelBundle
from shared.record_caps import fit_record
from shared.storage import Bucket
from shared.storage.names import derived_name

CARD_FORMAT = "prodml-card/1"

log = get_logger(__name__)


def now_iso() -> str:
    """The current UTC time as ISO 8601 with a ``Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_version_id(moment: datetime | None = None) -> str:
    """A fresh version id, sortable by time: ``20261125T120301Z-a1b2c3``."""
    moment = moment or datetime.now(UTC)
    return f"{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def model_name(version: str) -> str:
    """The blob of a version's model."""
    return f"{VERSIONS_PREFIX}{_check_version(version)}/model.skops"


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


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n").encode()


def _read_json(bucket: Bucket, name: str) -> Any:
    try:
        return json.loads(bucket.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{name!r} in bucket {bucket.name!r} is not valid JSON: {exc}") from None


# --- data file markers -------------------------------------------------------------------------


def file_key(bucket: str, name: str, generation: int) -> str:
    """``<bucket>/<name>@<generation>``: one version of one data file, as markers and lineage name it."""
    return f"{bucket}/{name}@{int(generation)}"


def _file_blob(prefix: str, bucket: str, name: str, generation: int) -> str:
    """``<prefix><bucket>/<name>@<generation>.json``, within GCS's name limit for any data file
    name (``derived_name``: a long one is shortened with a hash; the blob's content names it)."""
    return derived_name(f"{prefix}{bucket}/", name, f"@{int(generation)}.json")


def processed_name(bucket: str, name: str, generation: int) -> str:
    """The marker blob of a data file version."""
    return _file_blob(PROCESSED_PREFIX, bucket, name, generation)


def is_processed(artifacts: Bucket, bucket: str, name: str, generation: int) -> bool:
    """Whether the train function has finished with this data file version (any outcome)."""
    return artifacts.exists(processed_name(bucket, name, generation))


def read_processed(artifacts: Bucket, bucket: str, name: str, generation: int) -> dict[str, Any] | None:
    """The marker of a data file version, or None."""
    try:
        record = _read_json(artifacts, processed_name(bucket, name, generation))
    except NotFound:
        return None
    return record if isinstance(record, dict) else None


# What a "done" marker over caps.MAX_RECORD_BYTES keeps (its message cut).
PROCESSED_KEY_FIELDS = (
    "bucket",
    "name",
    "generation",
    "time",
    "event_id",
    "outcome",
    "version",
    "rule",
    "message",
)


def mark_processed(
    artifacts: Bucket, bucket: str, name: str, generation: int, record: dict[str, Any]
) -> bool:
    """Write the "done" marker only if absent; False when it was there already (a duplicate).

    A marker over ``caps.MAX_RECORD_BYTES`` (a huge message) is cut to fit, keeping its identity.
    """
    body = {"bucket": bucket, "name": name, "generation": int(generation), "time": now_iso(), **record}
    marker = fit_record(body, PROCESSED_KEY_FIELDS, lambda r: _json_bytes(r).decode())
    try:
        artifacts.write(
            processed_name(bucket, name, generation),
            marker.encode(),
            content_type="application/json",
            if_generation_match=0,
        )
    except PreconditionFailed:
        return False
    return True


# --- claims: one delivery at a time works on a data file version ------------------------------

CLAIM_ATTEMPTS = 5  # rounds of create / read / take over before contention counts as transient


@dataclass(frozen=True)
class Claim:
    """One data file version's claim as read or written, with its blob's generation (for CAS)."""

    blob: str
    event_id: str
    expires: datetime
    generation: int
    version: str | None = None  # a version written for the file, not yet promoted
    parent: str | None = None  # the current model it was trained against
    holder: str | None = None  # the process holding it (``_this_process``), if it could tell

    def expired(self, now: datetime | None = None) -> bool:
        """Whether its holder is past the time it was given (so it died, or hangs), or is a
        process of this very machine that no longer runs (``holder_is_gone``)."""
        return (now or datetime.now(UTC)) >= self.expires or holder_is_gone(self.holder)


def _process_start(pid: int | str) -> str:
    """The start time of process ``pid`` (clock ticks since boot, field 22 of /proc/<pid>/stat):
    with the pid, it names one process, even after the pid is reused."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[19]


def _machine() -> str | None:
    """This host, boot and pid namespace (Linux), where a pid names one process; else None."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{socket.gethostname()}|{boot}|{os.readlink('/proc/self/ns/pid')}"
    except (OSError, IndexError):
        return None


def _this_process() -> str | None:
    """The holder a claim written now names: machine, pid and start time; None where unknown."""
    machine = _machine()
    if machine is None:
        return None
    try:
        return f"{machine}|{os.getpid()}|{_process_start('self')}"
    except (OSError, IndexError):
        return None


def holder_is_gone(holder: str | None) -> bool:
    """True only when ``holder`` was a process of this very machine (host, boot and pid
    namespace) that no longer runs. The expiry alone (``TRAIN_CLAIM_SECONDS``, 900 s) would
    turn the redeliveries of a killed holder's event away for that long: the local router gives
    up after a few seconds (dead-lettering the file), and so would a retry after a restart. On
    another machine (another instance in the cloud) nothing can be known: the expiry decides."""
    if not holder:
        return False
    machine, _, process = holder.rpartition("|")
    machine, _, pid = machine.rpartition("|")
    if not pid.isdigit() or machine != _machine():
        return False
    try:
        return _process_start(pid) != process
    except FileNotFoundError:
        return True  # no such process
    except (OSError, IndexError):
        return False


def claim_name(bucket: str, name: str, generation: int) -> str:
    """The claim blob of a data file version."""
    return _file_blob(CLAIMS_PREFIX, bucket, name, generation)


def acquire_claim(
    artifacts: Bucket, bucket: str, name: str, generation: int, event_id: str, seconds: float
) -> tuple[Claim, bool]:
    """Claim a data file version for the delivery of ``event_id``, for ``seconds``.

    ``(claim, True)``: this delivery holds it, created only-if-absent or taken over from an
    expired holder (keeping the version it recorded). ``(claim, False)``: another delivery holds a
    live claim, returned as read. ``PreconditionFailed`` if the claim kept changing under us.
    """
    blob = claim_name(bucket, name, generation)
    for _ in range(CLAIM_ATTEMPTS):
        try:
            return _write_claim(artifacts, blob, event_id, seconds, expected=0), True
        except PreconditionFailed:
            pass  # there is one: whose, and is it alive?
        held = read_claim(artifacts, blob)
        if held is None:
            continue  # released in between: try to create it again
        if not held.expired():
            return held, False
        try:
            taken = _write_claim(
                artifacts,
                blob,
                event_id,
                seconds,
                expected=held.generation,
                version=held.version,
                parent=held.parent,
            )
        except PreconditionFailed:
            continue  # another delivery took it over (or its holder wrote) first: look again
        why = (
            f"expired at {_iso(held.expires)}"
            if datetime.now(UTC) >= held.expires
            else f"whose process is gone (claim until {_iso(held.expires)})"
        )
        log.warning(
            f"took over the claim on {blob} from the delivery of event {held.event_id}, {why}",
            extra={"fields": {"claim": blob, "event_id": event_id, "previous_event_id": held.event_id}},
        )
        return taken, True
    raise PreconditionFailed(f"the claim {blob} kept changing under {CLAIM_ATTEMPTS} attempts to take it")


def read_claim(artifacts: Bucket, blob: str) -> Claim | None:
    """The claim stored in ``blob``, or None. One that cannot be read is taken as long expired."""
    try:
        data, info = artifacts.read_with_info(blob)
    except NotFound:
        return None
    try:
        body = json.loads(data)
        return Claim(
            blob,
            str(body["event_id"]),
            datetime.fromisoformat(body["expires"]).astimezone(UTC),
            info.generation,
            body.get("version") if isinstance(body.get("version"), str) else None,
            body.get("parent") if isinstance(body.get("parent"), str) else None,
            body.get("holder") if isinstance(body.get("holder"), str) else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return Claim(blob, "", datetime.min.replace(tzinfo=UTC), info.generation)


def record_claim_version(
    artifacts: Bucket, claim: Claim, version: str, parent: str | None, seconds: float
) -> Claim:
    """Record in the held claim that ``version`` (trained against ``parent``) is about to be
    promoted, and renew it for ``seconds``. ``ClaimLost`` if it was taken over meanwhile."""
    try:
        return _write_claim(
            artifacts,
            claim.blob,
            claim.event_id,
            seconds,
            expected=claim.generation,
            version=version,
            parent=parent,
        )
    except PreconditionFailed:
        raise ClaimLost(f"the claim {claim.blob} was taken over by another delivery") from None


def release_claim(artifacts: Bucket, claim: Claim) -> None:
    """Give up a held claim without finishing: a redelivery may take the work over at once.

    A claim that records a version is kept, expired, so that the redelivery promotes that very
    version; one that records none is deleted. Nothing happens if it was taken over meanwhile.
    """
    with contextlib.suppress(NotFound, PreconditionFailed):
        if claim.version is None:
            artifacts.delete(claim.blob, if_generation_match=claim.generation)
        else:
            _write_claim(
                artifacts,
                claim.blob,
                claim.event_id,
                0.0,
                expected=claim.generation,
                version=claim.version,
                parent=claim.parent,
            )


def delete_claim(artifacts: Bucket, claim: Claim) -> None:
    """Remove a held claim, its work done; one taken over meanwhile is left to its taker."""
    with contextlib.suppress(NotFound, PreconditionFailed):
        artifacts.delete(claim.blob, if_generation_match=claim.generation)


def _write_claim(
    artifacts: Bucket,
    blob: str,
    event_id: str,
    seconds: float,
    *,
    expected: int,
    version: str | None = None,
    parent: str | None = None,
) -> Claim:
    """Write a claim with the precondition ``expected`` (0: only if absent); the claim written."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=seconds)
    body = {
        "event_id": event_id,
        "expires": _iso(expires),
        "time": _iso(now),
        "version": version,
        "parent": parent,
        "holder": _this_process(),
    }
    generation = artifacts.write(
        blob, _json_bytes(body), content_type="application/json", if_generation_match=expected
    )
    return Claim(blob, event_id, expires, generation, version, parent, body["holder"])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- versions ----------------------------------------------------------------------------------


def write_version(
    artifacts: Bucket, version: str, model_bytes: bytes, card: dict[str, Any], holdout: bytes | None = None
) -> None:
    """Write a new version: the model (and its held-out rows), then its card (then it is complete)."""
    artifacts.write(
        model_name(version), model_bytes, content_type="application/octet-stream", if_generation_match=0
    )
    if holdout is not None:
        artifacts.write(
            holdout_name(version),
            holdout,
            content_type="application/vnd.apache.parquet",
            if_generation_match=0,
        )
    artifacts.write(
        card_name(version), _json_bytes(card), content_type="application/json", if_generation_match=0
    )


def write_card(artifacts: Bucket, card: dict[str, Any]) -> None:
    """Replace a version's card (its decision changed)."""
    artifacts.write(card_name(card["version"]), _json_bytes(card), content_type="application/json")


def read_card(artifacts: Bucket, version: str) -> dict[str, Any]:
    """A version's card; ``NotFound`` if there is none."""
    card = _read_json(artifacts, card_name(version))
    if not isinstance(card, dict):
        raise RegistryError(f"card of version {version!r} is not a JSON object")
    return card


def set_decision(artifacts: Bucket, card: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    """Record a version's (new) decision in its card; return the updated card."""
    card = {**card, "decision": {"status": status, "reason": reason, "time": now_iso()}}
    write_card(artifacts, card)
    return card


def list_cards(artifacts: Bucket) -> list[dict[str, Any]]:
    """Every version's card, oldest first (unreadable cards are skipped and logged)."""
    cards = []
    for info in artifacts.list(VERSIONS_PREFIX):
        if not info.name.endswith("/card.json"):
            continue
        try:
            card = _read_json(artifacts, info.name)
        except (NotFound, RegistryError) as exc:
            log.warning(f"skipping card {info.name!r}: {exc}")
            continue
        if isinstance(card, dict) and isinstance(card.get("version"), str):
            cards.append(card)
    return sorted(cards, key=lambda c: (str(c.get("created", "")), c["version"]))


# --- the current model -------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """The serving model as read, with the generation to compare-and-swap against."""

    bundle: ModelBundle
    generation: int
    card: dict[str, Any] | None  # None for a model written without a card

    @property
    def version(self) -> str:
        """The current model's version."""
        return self.bundle.version

    @property
    def lineage(self) -> list[dict[str, Any]]:
        """The data files accumulated into the current model (from its card)."""
        return list((self.card or {}).get("lineage", []))


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
        card: dict[str, Any] | None = read_card(artifacts, bundle.version)
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
) -> int:
    """Compare-and-swap ``models/current.skops`` to ``version``; record the swap; return the generation.

    ``expected_generation`` is the generation read with the model being replaced (0: none yet).
    ``PreconditionFailed`` when someone else swapped first: nothing was written.
    """
    generation = artifacts.write(
        CURRENT_MODEL,
        model_bytes,
        content_type="application/octet-stream",
        if_generation_match=expected_generation,
    )
    record = {
        "kind": kind,
        "version": version,
        "previous": previous,
        "generation": generation,
        "time": now_iso(),
        "by": by,
    }
    # A generation is written once, so the record's name is free; if not, the record is there.
    with contextlib.suppress(PreconditionFailed):
        artifacts.write(
            f"{EVENTS_PREFIX}{generation:020d}.json",
            _json_bytes(record),
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
            record = _read_json(artifacts, info.name)
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
        artifacts, target, data, current.generation, kind="rollback", previous=current.version, by="rollback"
    )
    return Rollback(previous=current.version, version=target, generation=generation)


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
            artifacts, version, data, info.generation, kind="rollback", previous=UNLOADABLE, by="rollback"
        )
        return Rollback(previous=UNLOADABLE, version=version, generation=generation)
    detail = "; ".join(refused) or f"no promotion recorded under {EVENTS_PREFIX}"
    raise RegistryError(
        f"the current model cannot be loaded ({problem}) and no promoted version loads: {detail}"
    )
