"""Setting a bad data file aside: ``quarantine/<name>`` plus ``quarantine/<name>.reason.json``.

``incoming/2024/day1.csv`` goes to ``quarantine/2024/day1.csv`` (the ``incoming/`` prefix is
dropped) in the same bucket, beside a reason record. When that place already holds an earlier
bad upload of the same name (another generation), the new one goes to
``quarantine/2024/day1.csv@<generation>`` with its own reason beside it: nothing is overwritten.
A name too long for GCS's 1,024 bytes with these additions keeps a head of it and a hash
(``quarantine_name``); the reason record holds the real name::

    {"object": "incoming/2024/day1.csv", "generation": 1716..., "rule": "out_of_range",
     "message": "...", "details": {"columns": [...], "rows": [...], "samples": [...], "count": 3},
     "quarantined_at": "2026-...Z", "quarantined_as": "quarantine/2024/day1.csv"}

The steps are ordered so that running again, or after a crash at any point, ends in the same
state: copy, then write the reason, then delete the original only if it is still the generation
that failed (a newer upload under the same name is another file, with its own event). Writes under
``quarantine/`` fire storage events too; the train function ignores everything outside
``incoming/``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.contracts import INCOMING_PREFIX, QUARANTINE_PREFIX, REASON_SUFFIX
from shared.data.fault_details import jsonable
from shared.errors import InvalidObjectName, NotFound, PreconditionFailed, QuarantineFailed, ValidationFailed
from shared.logs import get_logger
from shared.record_caps import fit_record
from shared.storage import Bucket
from shared.storage.names import derived_name

# What a reason over caps.MAX_RECORD_BYTES keeps (the message cut): what finds it and says why.
REASON_KEY_FIELDS = ("object", "generation", "rule", "message", "quarantined_at", "quarantined_as")

log = get_logger(__name__)


def quarantine_name(name: str, generation: int | None = None) -> str:
    """Where ``name`` goes: ``quarantine/`` + the name without its leading ``incoming/`` (+
    ``@<generation>`` beside an earlier bad upload), short enough that its reason record, the
    same name + ``.reason.json``, is within GCS's name limit too (``derived_name``)."""
    tail = "" if generation is None else f"@{int(generation)}"
    stem = name.removeprefix(INCOMING_PREFIX)
    return derived_name(QUARANTINE_PREFIX, stem, tail, reserve=len(REASON_SUFFIX))


def quarantine_object(data: Bucket, name: str, generation: int, failure: ValidationFailed) -> str:
    """Move generation ``generation`` of ``name`` to quarantine with ``failure`` as its reason.

    Idempotent and crash-safe; returns the quarantine object's name. If the original is no longer
    at ``generation`` (replaced by a newer upload, or deleted), nothing is moved: that generation
    is gone, and a newer one gets its own event and its own validation. ``QuarantineFailed`` when
    the store refuses the quarantine names (e.g. a local ``quarantine/`` folder replaced by a
    symlink out of the bucket).
    """
    try:
        return _move_to_quarantine(data, name, generation, failure)
    except InvalidObjectName as exc:
        raise QuarantineFailed(
            f"cannot quarantine {name!r} ({failure.rule}: {failure.message}): {exc}"
        ) from exc


def _move_to_quarantine(data: Bucket, name: str, generation: int, failure: ValidationFailed) -> str:
    target, previous = _destination(data, name, generation)
    reason_name = target + REASON_SUFFIX
    already = previous is not None

    if _live_generation(data, name) != generation:
        if not already:
            log.warning(
                f"not quarantining {name!r}: generation {generation} is no longer the live object",
                extra={"fields": {"object": name, "generation": generation, "rule": failure.rule}},
            )
        return target

    data.copy(name, data, target)
    if _live_generation(data, name) != generation:
        # Replaced while we copied: the copy may hold the newer upload, which has its own event
        # (and, if bad, its own reason). Leave the reason as it was.
        log.warning(f"{name!r} changed during quarantine; left to its newer generation's event")
        return target

    record: dict[str, Any] = {
        "object": name,
        "generation": generation,
        "rule": failure.rule,
        "message": failure.message,
        "details": jsonable(failure.details),
        # A rerun keeps the first time, so that running twice ends in the very same record.
        "quarantined_at": previous["quarantined_at"] if already and previous else _now(),
        "quarantined_as": target,
    }
    body = fit_record(record, REASON_KEY_FIELDS, _render)
    data.write(reason_name, (body + "\n").encode(), content_type="application/json")
    try:
        data.delete(name, if_generation_match=generation)
    except NotFound:
        pass  # a concurrent run deleted it already
    except PreconditionFailed:
        log.warning(f"{name!r} was replaced by a newer upload during quarantine; the newer one is kept")
    log.info(
        f"quarantined {name!r} as {target!r}: {failure.rule}: {failure.message}",
        extra={"fields": {"object": name, "generation": generation, "rule": failure.rule}},
    )
    return target


def _destination(data: Bucket, name: str, generation: int) -> tuple[str, dict[str, Any] | None]:
    """Where this generation goes, and its own earlier reason record there (a rerun), if any.

    ``quarantine/<name>`` unless that already holds another generation of the same name (a second
    bad upload): then ``quarantine/<name>@<generation>``, so the first copy and reason stay.
    """
    first, beside = quarantine_name(name), quarantine_name(name, generation)
    for target in (first, beside):
        record = _read_reason(data, target + REASON_SUFFIX)
        if record is None:
            if target == first and data.exists(beside + REASON_SUFFIX):
                continue  # this generation went beside an earlier one before: keep to that place
            return target, None
        if record.get("object") == name and record.get("generation") == generation:
            return target, record
    return beside, None


def list_quarantine(data: Bucket) -> list[dict[str, Any]]:
    """Every reason record under ``quarantine/``, oldest first (unreadable ones skipped, logged)."""
    records: list[dict[str, Any]] = []
    for info in data.list(QUARANTINE_PREFIX):
        if not info.name.endswith(REASON_SUFFIX):
            continue
        record = _read_reason(data, info.name)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: (str(r.get("quarantined_at", "")), str(r.get("object", ""))))


def _read_reason(data: Bucket, reason_name: str) -> dict[str, Any] | None:
    try:
        record = json.loads(data.read(reason_name))
    except NotFound:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning(f"quarantine record {reason_name!r} is not valid JSON: {exc}")
        return None
    if not isinstance(record, dict):
        log.warning(f"quarantine record {reason_name!r} is not a JSON object")
        return None
    return record


def _render(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, default=str, allow_nan=False)


def _live_generation(data: Bucket, name: str) -> int | None:
    try:
        return data.stat(name).generation
    except NotFound:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
