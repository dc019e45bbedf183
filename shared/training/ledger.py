"""The idempotency ledger in the artifacts bucket: which data file versions are done, and who
works on one now.

Blobs (docs/design.md section 3)::

    registry/processed/<bucket>/<name>@<generation>.json   "this data file is done", only-if-absent
    registry/claims/<bucket>/<name>@<generation>.json      who works on a data file version, until
                                                           when, and the version it wrote, if any

(A marker or claim name that would pass GCS's 1,024 bytes keeps a head of ``<name>`` and a hash
of it instead: ``shared.storage.names.derived_name``.)

A claim makes the work on one data file version run once, however many deliveries of its
event arrive at once: it is created only if absent, so one delivery holds it; it names the
delivery's event id and an expiry. The holder records in it the version it is about to write,
each update a compare-and-swap on the claim's generation. A claim past its expiry
(its holder died) is taken over with a compare-and-swap on its generation too, so of two
deliveries that find it expired only one takes it; the taker keeps the version recorded in it, to
promote that very version. The trainer deletes its claim when the work is done; work that
ends otherwise releases it at once (deleted, or expired when it records a version to resume).

The versions and the current model they lead to are ``shared.training.registry``'s.

It stays one module (a little over 300 lines): the done markers and the claims are the two
halves of one promise, that a data file version is worked on once and finished once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import CLAIMS_PREFIX, PROCESSED_PREFIX
from shared.errors import ClaimLost, NotFound, PreconditionFailed
from shared.logs import get_logger
from shared.record_caps import fit_record
from shared.storage import Bucket
from shared.storage.names import derived_name
from shared.training.registry import iso, json_bytes, now_iso, read_json

log = get_logger(__name__)


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
        record = read_json(artifacts, processed_name(bucket, name, generation))
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
    marker = fit_record(body, PROCESSED_KEY_FIELDS, lambda r: json_bytes(r).decode())
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
            f"expired at {iso(held.expires)}"
            if datetime.now(UTC) >= held.expires
            else f"whose process is gone (claim until {iso(held.expires)})"
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
        "expires": iso(expires),
        "time": iso(now),
        "version": version,
        "parent": parent,
        "holder": _this_process(),
    }
    generation = artifacts.write(
        blob, json_bytes(body), content_type="application/json", if_generation_match=expected
    )
    return Claim(blob, event_id, expires, generation, version, parent, body["holder"])
