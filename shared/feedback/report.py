"""The live report: the join, label maturity, live quality and serving skew per model version, as
one JSON document (what ``prodml live --json`` prints; its fields are docs/feedback.md's).

The train function writes it to ``feedback/live.json`` after each labels file, so a dashboard reads
it without recomputing; ``prodml live`` computes it afresh. Its ``shadow`` is the running shadow's
comparison (``prodml shadow status --json``'s ``comparison``) on the same rows, or null; the Beam
join's report has none (``prodml shadow status`` computes it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.compiled.current import named_version
from shared.config import Settings, get_settings
from shared.contracts import CURRENT_MODEL, LIVE_REPORT_BLOB
from shared.errors import NotFound, RegistryError, ShadowError
from shared.feedback import join, live, maturity, skew
from shared.feedback.shadow_compare import compare_rows
from shared.schema import Schema, load_schema
from shared.serving.health import TableFacts, ages_and_warnings
from shared.storage import Bucket, artifacts_bucket, predictions_bucket
from shared.tables.format import read_pointer
from shared.training import registry, shadow

REPORT_FORMAT = "prodml-live/1"


def build_report(
    settings: Settings | None = None,
    *,
    artifacts: Bucket | None = None,
    predictions: Bucket | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Join the log and the labels now and report on every version that served (module doc).

    ``JoinTooLarge`` past JOIN_MAX_ROWS; ``SchemaError`` without a schema; ``LabelDefaultError``
    when LABEL_DEFAULT is not a label of the schema.
    """
    settings = settings or get_settings()
    artifacts = artifacts or artifacts_bucket(settings)
    predictions = predictions or predictions_bucket(settings)
    schema = load_schema(artifacts)
    default = maturity.label_default(schema, settings)
    moment = time.time() if now is None else now
    joined = join.load_and_join(predictions, artifacts, settings)
    rows = maturity.mature(joined.rows, moment, settings.label_window, default)
    versions = [
        version_report(str(version), group, schema, artifacts, settings)
        for version, group in rows.groupby("model_version", sort=True)
    ]
    summary = JoinSummary(joined.counts, joined.unmatched_ids, joined.unreadable)
    ages = serving_ages(artifacts, settings, moment)
    shadow_now = shadow_comparison(artifacts, rows, schema, settings)
    return assemble(schema, settings, moment, summary, live.counts(rows), versions, ages, shadow_now)


def shadow_comparison(
    artifacts: Bucket, rows: Any, schema: Schema, settings: Settings
) -> dict[str, Any] | None:
    """The running shadow's comparison with its champion on the report's matured rows
    (``shared.feedback.shadow_compare``), so the dashboard reads it without a join; None when no
    shadow runs (or its pointer cannot be read: ``prodml shadow status`` says why)."""
    try:
        pointer = shadow.read_pointer(artifacts)
    except ShadowError:
        return None
    if pointer is None or pointer.version is None:
        return None
    since = pointer.started_at()
    return compare_rows(rows, schema, settings, pointer.version, pointer.champion, since).to_dict()


def serving_ages(artifacts: Bucket, settings: Settings, moment: float) -> dict[str, Any]:
    """The current model's and the table's ages at ``moment``, and the warnings ``/health`` would
    show about them (``shared.serving.health``): the model from its blob (when it was swapped in,
    the version its metadata names), the table from its pointer (no table read)."""
    now = datetime.fromtimestamp(moment, UTC)
    try:
        info = artifacts.stat(CURRENT_MODEL)
    except NotFound:
        return {"model": None, "table": None, "warnings": []}
    version = named_version(info)[0] or ""
    model_age = round((now - info.updated).total_seconds(), 3)
    pointer, _ = read_pointer(artifacts)
    facts = (
        TableFacts(str(pointer.get("blob")), str(pointer.get("model_version")), pointer.get("built_at"))
        if pointer is not None
        else None
    )
    table_age, warnings = ages_and_warnings(settings, version, model_age, facts, now)
    table = None
    if facts is not None:
        table = {
            "blob": facts.blob,
            "model_version": facts.model_version,
            "matches_model": facts.model_version == version,
            "age_seconds": table_age,
        }
    return {
        "model": {"version": version or None, "generation": info.generation, "age_seconds": model_age},
        "table": table,
        "warnings": warnings,
    }


@dataclass(frozen=True)
class JoinSummary:
    """What the report says about the join itself: its counts, the first unmatched label ids and
    the first skipped objects (``join.Joined`` without its rows; the Beam join sums its shards')."""

    counts: join.JoinCounts
    unmatched_ids: tuple[str, ...]
    unreadable: tuple[str, ...]


def assemble(
    schema: Schema,
    settings: Settings,
    moment: float,
    summary: JoinSummary,
    totals: dict[str, int],
    versions: list[dict[str, Any]],
    ages: dict[str, Any],
    shadow_now: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report document from its parts: the join's summary, the counts over every version
    (``live.counts``) and each version's ``version_report``, in version order, and the running
    shadow's comparison (``shadow_comparison``; the Beam join gives none). ``build_report`` and the
    Beam join (``shared.pipelines.join_pipeline``) both end here."""
    c = summary.counts
    return {
        "format": REPORT_FORMAT,
        "generated_at": datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z"),
        "task": schema.label.task,
        "label_window_seconds": settings.label_window,
        "label_default": maturity.label_default(schema, settings),
        "log": {
            "objects": c.log_objects,
            "unreadable": c.unreadable_logs,
            "rows": c.logged,
            "duplicate_ids": c.duplicate_predictions,
        },
        "labels": {
            "objects": c.label_objects,
            "unreadable": c.unreadable_labels,
            "rows": c.label_rows,
            "duplicates": c.duplicate_labels,
            "matched": c.matched_labels,
            "unmatched": c.unmatched_labels,
            "unmatched_ids": list(summary.unmatched_ids),
        },
        "unreadable_objects": list(summary.unreadable),
        "totals": totals,
        "versions": versions,
        "ages": ages,  # the serving model's and the table's, as /health gives them
        "shadow": shadow_now,  # the running shadow's comparison on these rows (None: none, or Beam's)
    }


def version_report(
    version: str, rows: Any, schema: Schema, artifacts: Bucket, settings: Settings
) -> dict[str, Any]:
    """One version's live quality and serving skew against its card's reference (``rows``: all the
    matured join rows of that version, in the join's order)."""
    try:
        card = registry.read_card(artifacts, version)
        reference, checks, card_note = card.reference, card.data_checks or {}, None
    except (NotFound, RegistryError) as exc:
        reference, checks, card_note = None, {}, f"no readable card for version {version!r}: {exc}"
    return {
        "version": version,
        **live.version_quality(rows, schema),
        "skew": {**skew.serving_skew(rows, schema, reference, settings), "note": card_note},
        # The row-by-row skew of the file it was trained for, as its card keeps it (no log read).
        "row_skew": checks.get("row_skew"),
    }


def write_report(artifacts: Bucket, report: dict[str, Any]) -> str:
    """Write ``report`` as ``feedback/live.json`` (replaced each time); return the blob name."""
    body = json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"
    artifacts.write(LIVE_REPORT_BLOB, body.encode(), content_type="application/json")
    return LIVE_REPORT_BLOB


def read_report(artifacts: Bucket) -> dict[str, Any] | None:
    """The last written report, or None."""
    try:
        body = json.loads(artifacts.read(LIVE_REPORT_BLOB))
    except (NotFound, ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None
