"""Joined rows back into training (issue 15 item 6, ``FEEDBACK_TRAINING``): matured joined rows
(features as served, and the label: observed, or LABEL_DEFAULT past LABEL_WINDOW) written as an
ordinary data file into ``incoming/feedback/`` of the data bucket, so validation, test-then-train,
the gate and promotion learn from live traffic. docs/feedback.md "Back into training".

Which rows: every matured row (``shared.feedback.maturity``) of the join whose id no earlier
emission holds; nothing while fewer than ``FEEDBACK_MIN_ROWS`` such rows wait. Once emitted, a
row is never emitted again, whatever label arrives for it later.

One emission, numbered ``seq`` (1, 2, ...), is three objects, written in this order:

1. ``feedback/emitted/<seq>.npz`` (artifacts): the rows and what they cover, written only if
   absent. It is the reservation: of two emitters at once (two labels files joined at the same
   moment), one writes ``<seq>`` and the other finds it taken, reads it, and starts again without
   its rows. Every later emission leaves out the ids of every ``.npz``.
2. ``incoming/feedback/<seq>-<hash of its ids>.parquet`` (data): the data file, only if absent, its
   custom metadata naming the reservation. It fires the train function as any file does.
3. ``feedback/emitted/<seq>.json`` (artifacts): the emission record, only if absent.

A reservation without its record is unfinished (a crash after step 1 or 2): the next emitter
finishes it first, writing the same file from the same rows (the name is deterministic, so a file
written before the crash is not written again). A finished emission is never written again, even
when its file is gone (trained and moved to quarantine, or deleted).

The file's lineage entry (``attach_origin``, at its train event) says ``"source": "feedback"``, the
reservation and the prediction time window it covers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.contracts import EMITTED_PREFIX, FEEDBACK_INCOMING_PREFIX, FEEDBACK_SOURCE, LabelState
from shared.errors import EmissionError, NotFound, PreconditionFailed, RetryLater, ZipTooLarge
from shared.feedback import join, maturity
from shared.feedback.log_format import FEATURE_PREFIX, ID_COLUMN
from shared.logs import get_logger
from shared.schema import Schema, load_schema
from shared.storage import Bucket
from shared.training.window import DataFile
from shared.zip_limits import NPZ_READ_ERRORS, read_npz

log = get_logger(__name__)

EMISSION_FORMAT = "prodml-emission/1"
RESERVATION_METADATA = "prodml-emission"  # custom metadata of an emitted file: its reservation
SEQ_DIGITS = 8
HASH_CHARS = 12
LISTED = 20  # log objects an emission record names (and counts all)


@dataclass(frozen=True)
class Emission:
    """One emission: its number, its objects, and the rows it holds."""

    seq: int
    reservation: str  # feedback/emitted/<seq>.npz
    record: str  # feedback/emitted/<seq>.json
    file: str  # incoming/feedback/<seq>-<hash>.parquet in the data bucket
    meta: dict[str, Any]  # what the reservation says (the record's fields)

    @property
    def rows(self) -> int:
        """Rows emitted."""
        return int(self.meta["rows"])


@dataclass(frozen=True)
class EmitResult:
    """What one ``emit`` call did."""

    emitted: Emission | None  # the new emission (None: nothing new, too few rows, or a dry run)
    finished: tuple[Emission, ...]  # unfinished emissions of earlier calls, finished by this one
    matured: int  # matured rows in the join
    emitted_before: int  # of them, rows an earlier emission holds
    new_rows: int  # matured rows never emitted (emitted now, or waiting for FEEDBACK_MIN_ROWS)
    note: str

    def to_dict(self) -> dict[str, Any]:
        """The result as ``prodml feedback emit --json`` prints it."""
        return {
            "emitted": None if self.emitted is None else self.emitted.meta,
            "finished": [e.meta for e in self.finished],
            "matured": self.matured,
            "emitted_before": self.emitted_before,
            "new_rows": self.new_rows,
            "note": self.note,
        }


def reservation_name(seq: int) -> str:
    """``feedback/emitted/<seq>.npz``."""
    return f"{EMITTED_PREFIX}{seq:0{SEQ_DIGITS}d}.npz"


def record_name(seq: int) -> str:
    """``feedback/emitted/<seq>.json``."""
    return f"{EMITTED_PREFIX}{seq:0{SEQ_DIGITS}d}.json"


def file_name(seq: int, ids: Iterable[str]) -> str:
    """``incoming/feedback/<seq>-<hash>.parquet``: the same rows always name the same file, and a
    sequence restarted from 1 (the records wiped by hand) names no earlier file."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:HASH_CHARS]
    return f"{FEEDBACK_INCOMING_PREFIX}{seq:0{SEQ_DIGITS}d}-{digest}.parquet"


def emit(
    settings: Settings,
    *,
    data: Bucket,
    artifacts: Bucket,
    predictions: Bucket,
    now: float | None = None,
    dry_run: bool = False,
    by: str = "",
) -> EmitResult:
    """Emit the matured joined rows never emitted before as one data file (module doc).

    ``dry_run`` writes nothing (and finishes nothing): it says what would be emitted.
    ``RetryLater`` when other emitters took the next number ``CAS_MAX_ATTEMPTS`` times in a row;
    ``EmissionError`` when a stored reservation cannot be read; ``JoinTooLarge`` past JOIN_MAX_ROWS.
    """
    schema = load_schema(artifacts)
    default = maturity.label_default(schema, settings)
    finished: list[Emission] = []
    for _ in range(settings.cas_max_attempts):
        reservations = _reservations(artifacts)
        if not dry_run:
            finished += _finish_unfinished(artifacts, data, reservations, schema, settings)
        emitted_ids = _emitted_ids(artifacts, reservations, settings)
        joined = join.load_and_join(predictions, artifacts, settings)
        rows = maturity.mature(
            joined.rows, time.time() if now is None else now, settings.label_window, default
        )
        matured = rows[rows[maturity.STATE] != LabelState.PENDING.value]
        fresh = matured[~matured[ID_COLUMN].isin(emitted_ids)] if emitted_ids else matured
        fresh = _trainable(fresh, schema)
        counts = (len(matured), len(matured) - len(fresh), len(fresh))
        if len(fresh) < settings.feedback_min_rows or dry_run:
            why = "a dry run: nothing written" if dry_run else _waiting(len(fresh), settings)
            return EmitResult(None, tuple(finished), *counts, why)
        seq = max(reservations, default=0) + 1
        emission = _reserve(artifacts, seq, fresh, schema, by)
        if emission is None:
            continue  # another emitter took this number: read its rows and start again
        _finish(artifacts, data, emission, schema, settings)
        note = f"emitted {emission.rows} rows as {emission.file}"
        log.info(note, extra={"fields": {"emission": emission.reservation, "file": emission.file}})
        return EmitResult(emission, tuple(finished), *counts, note)
    raise RetryLater(
        f"other emitters took the next emission number {settings.cas_max_attempts} times "
        "(CAS_MAX_ATTEMPTS); emit again"
    )


def _trainable(rows: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The rows the current schema can train on: every feature served (a row logged under an
    earlier schema may lack one, or hold another type) and a label of its classes. The others are
    left out of every emission and said in the log, never written as a file validation would
    quarantine whole."""
    keep = pd.Series(True, index=rows.index)
    for feature in schema.features:
        column = FEATURE_PREFIX + feature.name
        if column not in rows.columns:
            keep &= False
        elif feature.type == "category":
            text = rows[column].astype(str)
            keep &= rows[column].notna() & ~text.isin(["", "nan"])
        else:
            keep &= np.isfinite(pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64))
    if schema.label.task != "regression":
        keep &= rows[maturity.OUTCOME].astype(str).isin([str(c) for c in schema.label.classes])
    left_out = int((~keep).sum())
    if left_out:
        log.warning(
            f"{left_out} matured rows were served under another schema (a feature missing, or a "
            "label outside its classes): they are left out of feedback training"
        )
    return rows[keep]


def _waiting(fresh: int, settings: Settings) -> str:
    if fresh == 0:
        return "no matured row that was not emitted before"
    return f"{fresh} matured rows not emitted before wait for FEEDBACK_MIN_ROWS={settings.feedback_min_rows}"


def _reservations(artifacts: Bucket) -> dict[int, str]:
    """Every reservation by its number (objects not named ``<digits>.npz`` are not ours)."""
    out: dict[int, str] = {}
    for info in artifacts.list(EMITTED_PREFIX):
        path = PurePosixPath(info.name)
        if path.suffix == ".npz" and path.stem.isdigit() and info.name == reservation_name(int(path.stem)):
            out[int(path.stem)] = info.name
    return out


def _emitted_ids(artifacts: Bucket, reservations: dict[int, str], settings: Settings) -> set[str]:
    """The ids every reservation holds."""
    ids: set[str] = set()
    for seq in sorted(reservations):
        columns, _ = read_reservation(artifacts, seq, settings)
        ids.update(str(i) for i in columns[ID_COLUMN])
    return ids


def read_reservation(
    artifacts: Bucket, seq: int, settings: Settings
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One reservation's columns and meta; ``EmissionError`` when it is not one (``NotFound`` if gone)."""
    name = reservation_name(seq)
    data = artifacts.read(name)
    try:
        columns, meta = read_npz(data, settings.max_table_bytes, "MAX_TABLE_BYTES")
    except (ZipTooLarge, *NPZ_READ_ERRORS) as exc:
        raise EmissionError(
            f"emission {name!r} cannot be read ({type(exc).__name__}: {exc}): which rows it emitted is "
            "unknown, so nothing more is emitted until it is repaired or removed"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != EMISSION_FORMAT or ID_COLUMN not in columns:
        raise EmissionError(f"emission {name!r} is not a {EMISSION_FORMAT} object")
    return columns, meta


def _reserve(artifacts: Bucket, seq: int, rows: pd.DataFrame, schema: Schema, by: str) -> Emission | None:
    """Write reservation ``seq`` with ``rows``; None when another emitter holds that number."""
    ordered = rows.sort_values(["time", ID_COLUMN], kind="stable")
    ids = [str(i) for i in ordered[ID_COLUMN]]
    times = ordered["time"].to_numpy(dtype=np.float64)
    objects = sorted({str(o) for o in ordered["object"]})
    states = ordered[maturity.STATE].value_counts()
    meta = {
        "format": EMISSION_FORMAT,
        "seq": seq,
        "reservation": reservation_name(seq),
        "record": record_name(seq),
        "file": file_name(seq, ids),
        "rows": len(ids),
        "labelled": int(states.get(LabelState.LABELLED.value, 0)),
        "defaulted": int(states.get(LabelState.DEFAULTED.value, 0)),
        "window": {"first": _iso(float(times.min())), "last": _iso(float(times.max()))},
        "window_seconds": {"first": float(times.min()), "last": float(times.max())},
        "log_object_count": len(objects),
        "log_objects": objects[:LISTED],
        "label": schema.label.name,
        "task": schema.label.task,
        "created_at": _iso(time.time()),
        "by": by,
    }
    columns: dict[str, np.ndarray] = {
        ID_COLUMN: _text(ids),
        "time": times,
        "state": _text([str(s) for s in ordered[maturity.STATE]]),
        "label": _labels(ordered[maturity.OUTCOME], schema),
    }
    for feature in schema.features:
        served = ordered[FEATURE_PREFIX + feature.name]
        columns[FEATURE_PREFIX + feature.name] = (
            _text([str(v) for v in served])
            if feature.type == "category"
            else served.to_numpy(dtype=np.float64)
        )
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {"meta": np.asarray(json.dumps(meta)), **columns}
    np.savez_compressed(buffer, **arrays)
    try:
        artifacts.write(
            reservation_name(seq), buffer.getvalue(), content_type="application/x-npz", if_generation_match=0
        )
    except PreconditionFailed:
        return None
    return Emission(seq, reservation_name(seq), record_name(seq), str(meta["file"]), meta)


def _labels(outcomes: pd.Series, schema: Schema) -> np.ndarray:
    """The rows' labels: text for classes (as the log and the stored labels hold them), float64
    for regression."""
    if schema.label.task == "regression":
        return outcomes.to_numpy(dtype=np.float64)
    return _text([str(v) for v in outcomes])


def _text(values: list[str]) -> np.ndarray:
    """Fixed-width unicode, readable without pickle (an empty column is ``<U1``)."""
    return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="<U1")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _finish_unfinished(
    artifacts: Bucket, data: Bucket, reservations: dict[int, str], schema: Schema, settings: Settings
) -> list[Emission]:
    """Finish every reservation that has no record yet (its emitter crashed, or is at work)."""
    recorded = {info.name for info in artifacts.list(EMITTED_PREFIX) if info.name.endswith(".json")}
    finished = []
    for seq in sorted(reservations):
        if record_name(seq) in recorded:
            continue
        _, meta = read_reservation(artifacts, seq, settings)
        emission = Emission(seq, reservation_name(seq), record_name(seq), str(meta["file"]), meta)
        _finish(artifacts, data, emission, schema, settings)
        log.warning(f"finished emission {emission.reservation} left unfinished: {emission.file}")
        finished.append(emission)
    return finished


def _finish(artifacts: Bucket, data: Bucket, emission: Emission, schema: Schema, settings: Settings) -> None:
    """Write the data file of ``emission`` (unless written), then its record (unless written)."""
    columns, _ = read_reservation(artifacts, emission.seq, settings)
    body = parquet_bytes(columns, schema)
    # Written already: before a crash, or by another emitter finishing it at the same moment.
    with contextlib.suppress(PreconditionFailed):
        data.write(
            emission.file,
            body,
            content_type="application/vnd.apache.parquet",
            if_generation_match=0,
            metadata={RESERVATION_METADATA: emission.reservation},
        )
    try:
        generation: int | None = data.stat(emission.file).generation
    except NotFound:
        generation = None  # trained and quarantined, or deleted, before this record was written
    record = {**emission.meta, "data_bucket": data.name, "file_generation": generation}
    body_json = json.dumps(record, indent=2, allow_nan=False) + "\n"
    with contextlib.suppress(PreconditionFailed):  # recorded by another emitter finishing it now
        artifacts.write(
            emission.record, body_json.encode(), content_type="application/json", if_generation_match=0
        )


def parquet_bytes(columns: dict[str, np.ndarray], schema: Schema) -> bytes:
    """The data file of a reservation: ``id``, the schema's features as served (typed as the
    schema types them) and its label column (a schema class, or a number)."""
    frame: dict[str, Any] = {ID_COLUMN: pd.Series(columns[ID_COLUMN].tolist(), dtype=object)}
    for feature in schema.features:
        served = columns.get(FEATURE_PREFIX + feature.name)
        if served is None:
            raise EmissionError(
                f"an emission holds no feature {feature.name!r}: it was reserved under another "
                "schema; remove it (feedback/emitted/) to emit again"
            )
        if feature.type == "category":
            frame[feature.name] = pd.Series(served.tolist(), dtype=object)
        elif feature.type == "integer":
            frame[feature.name] = np.rint(served).astype(np.int64)
        else:
            frame[feature.name] = served.astype(np.float64)
    labels = columns["label"]
    if schema.label.task == "regression":
        frame[schema.label.name] = labels.astype(np.float64)
    else:
        by_text = {str(c): c for c in schema.label.classes}
        unknown = sorted({str(v) for v in labels.tolist()} - set(by_text))
        if unknown:
            raise EmissionError(
                f"an emission holds labels {unknown[:5]} outside the schema's classes: it was reserved "
                "under another schema; remove it (feedback/emitted/) to emit again"
            )
        frame[schema.label.name] = pd.Series([by_text[str(v)] for v in labels.tolist()])
    buffer = io.BytesIO()
    pd.DataFrame(frame).to_parquet(buffer, index=False)
    return buffer.getvalue()


def origin(artifacts: Bucket, object_name: str, settings: Settings) -> dict[str, Any] | None:
    """The lineage fields of a data file the loop wrote (``source``, ``emission``, ``window``,
    ``rows``), or None: not under ``incoming/feedback/``, or no reservation names it (a file put
    there by hand trains as an ordinary file)."""
    if not object_name.startswith(FEEDBACK_INCOMING_PREFIX):
        return None
    stem = PurePosixPath(object_name).name.split("-", 1)[0]
    if not stem.isdigit():
        return None
    try:
        _, meta = read_reservation(artifacts, int(stem), settings)
    except (NotFound, EmissionError) as exc:
        log.warning(f"{object_name!r} is under {FEEDBACK_INCOMING_PREFIX} but no emission names it: {exc}")
        return None
    if meta.get("file") != object_name:
        return None
    return {
        "source": FEEDBACK_SOURCE,
        "emission": reservation_name(int(stem)),
        "window": meta.get("window"),
        "emitted_rows": meta.get("rows"),
    }


def attach_origin(artifacts: Bucket, new_file: DataFile, settings: Settings) -> DataFile:
    """``new_file`` with its loop origin (``origin``) when the loop wrote it."""
    found = origin(artifacts, new_file.name, settings)
    return dataclasses.replace(new_file, origin=found) if found is not None else new_file
