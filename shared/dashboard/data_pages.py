"""The monitoring page (test-then-train quality and drift over time) and the quarantine page."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.contracts import MonitoringDecision
from shared.dashboard import common
from shared.dashboard.common import empty, section
from shared.dashboard.formatting import number
from shared.dashboard.html import Child, Markup, document, element
from shared.dashboard.sources import Sources, read_at
from shared.dashboard.svg import Series, line_chart

QUALITY_METRICS = ("log_loss", "roc_auc", "accuracy", "mae", "rmse")
SAMPLE_CHARS = 2000  # of a quarantine record's samples shown (each value is already cut at 200)


def max_psi(row: Mapping[str, Any]) -> float | None:
    """The largest PSI of a monitoring row, or None."""
    psi = row.get("psi") or {}
    values = [float(v) for v in psi.values() if isinstance(v, int | float)]
    return max(values) if values else None


def outcome(row: Mapping[str, Any]) -> str:
    """What became of the file: its decision, its rule if quarantined, its training outcome."""
    decision = str(row.get("decision") or "-")
    rule = (row.get("quarantine") or {}).get("rule") or row.get("rule")
    if decision == MonitoringDecision.QUARANTINED and rule:
        return f"{decision} ({rule})"
    training = row.get("training") or {}
    if training.get("outcome"):
        decision += f", {training['outcome']}" + (
            f" {training['version']}" if training.get("version") else ""
        )
    return decision


MONITOR_HEADER = (
    "time",
    "file",
    "generation",
    "model",
    *QUALITY_METRICS,
    "max psi",
    "drifted",
    "outcome",
    "notes",
)


def monitor_row(row: Mapping[str, Any]) -> list[Child]:
    """One row of ``prodml monitor --json`` as a table row."""
    metrics = row.get("metrics") or {}
    notes = [
        *(str(w) for w in row.get("warnings") or []),
        *([str(row["reason"])] if row.get("reason") else []),
    ]
    return [
        str(row.get("time") or "-"),
        str(row.get("object")),
        number(row.get("generation")),
        str(row.get("model_version") or "-"),
        *(number(metrics.get(m)) for m in QUALITY_METRICS),
        number(max_psi(row)),
        ", ".join(str(f) for f in row.get("drifted") or []) or "-",
        outcome(row),
        element("ul", None, [element("li", None, n) for n in notes]) if notes else "",
    ]


def _charts(rows: Sequence[Mapping[str, Any]]) -> list[Child]:
    scored = [r for r in rows if r.get("metrics") or r.get("psi")]
    if not scored:
        return [empty("no file was scored yet: quality appears once a model exists and a new file lands")]
    labels = [str(r.get("time") or "-")[:19] for r in scored]
    present = [m for m in QUALITY_METRICS if any(m in (r.get("metrics") or {}) for r in scored)]
    quality = [Series(m, [(r.get("metrics") or {}).get(m) for r in scored]) for m in present]
    return [
        line_chart("test-then-train quality per file", labels, quality, "file (time order)", "metric"),
        line_chart(
            "largest input drift (PSI) per file",
            labels,
            [Series("max psi", [max_psi(r) for r in scored])],
            "file (time order)",
            "PSI",
        ),
    ]


def monitoring(sources: Sources, page_number: int) -> Markup:
    """Charts over every record, then the records newest first, paged."""
    rows = sources.monitoring()
    body: list[Child] = []
    if not rows:
        body.append(empty("no files monitored yet: records appear as the train function sees incoming files"))
    else:
        body.append(section("over time", *_charts(rows)))
        newest, page = common.paginate(list(reversed(rows)), page_number)
        shown = [monitor_row(r) for r in newest]
        listed = common.paged_table(common.MONITORING, page, MONITOR_HEADER, shown, "no files on this page")
        body.append(section("files, newest first", *listed))
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("monitoring", common.NAV, common.MONITORING, *body)


QUARANTINE_HEADER = (
    "quarantined at",
    "file",
    "generation",
    "rule",
    "message",
    "kept as",
    "columns",
    "samples",
)


def quarantine_row(record: Mapping[str, Any]) -> list[Child]:
    """One reason record as a table row, its sample values as JSON text."""
    details = record.get("details") or {}
    samples = json.dumps(details.get("samples"), ensure_ascii=False, default=str)[:SAMPLE_CHARS]
    return [
        str(record.get("quarantined_at") or "-"),
        str(record.get("object")),
        number(record.get("generation")),
        str(record.get("rule") or "-"),
        str(record.get("message") or ""),
        str(record.get("quarantined_as") or "-"),
        ", ".join(str(c) for c in details.get("columns") or []) or "-",
        element("pre", None, samples),
    ]


def quarantine(sources: Sources, page_number: int) -> Markup:
    """Every quarantined file with its rule, message and samples, newest first, paged."""
    records = sources.quarantine()
    if not records:
        body: list[Child] = [empty("nothing quarantined: every file so far passed validation")]
    else:
        newest, page = common.paginate(list(reversed(records)), page_number)
        rows = [quarantine_row(r) for r in newest]
        body = common.paged_table(common.QUARANTINE, page, QUARANTINE_HEADER, rows, "no files on this page")
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("quarantine", common.NAV, common.QUARANTINE, *body)


__all__ = ["monitoring", "quarantine"]
