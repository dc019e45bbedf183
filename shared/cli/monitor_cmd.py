"""``prodml monitor``: per incoming file, the live model's quality on it, input drift, quarantine."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from shared.config import Settings, get_settings
from shared.contracts import MonitoringDecision
from shared.display import printable, render_table

if TYPE_CHECKING:
    from shared.storage import Bucket

LIVE_HINT = "quality on served traffic (labels joined to the prediction log), per version: `prodml live`"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml monitor``."""
    parser = subparsers.add_parser(
        "monitor",
        help="per file: live model quality, input drift (PSI), outcome, quarantine",
        description=(
            "List, oldest first, every incoming file the train function looked at: the live model's "
            "quality on it before training (test-then-train), the largest input drift (population "
            "stability index) and the drifted features, and the outcome; quarantined files with "
            "their rule; the warnings of label leakage (a feature that alone predicts the label) "
            "and of the feedback-loop share (rows whose id this system served); then every file "
            "in incoming/ with no outcome yet, and why. The quality on the traffic each version "
            "actually served (labels joined to the prediction log) is `prodml live`'s."
        ),
    )
    parser.add_argument("--limit", type=int, default=0, help="show only the last N files (default all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_monitor)


def collect(
    settings: Settings | None = None, *, data: Bucket | None = None, artifacts: Bucket | None = None
) -> list[dict[str, Any]]:
    """Monitoring records and quarantine records, merged per file generation, oldest first, then
    the files waiting in ``incoming/`` with no outcome, and why (``unprocessed_files``).

    ``data`` and ``artifacts`` default to the settings' buckets; the dashboard passes its cached
    views, so its monitoring page and ``prodml monitor --json`` are one computation."""
    from shared.data.monitoring import list_records, unprocessed_files
    from shared.data.quarantine import list_quarantine
    from shared.storage import artifacts_bucket, data_bucket

    settings = settings or get_settings()
    data = data if data is not None else data_bucket(settings)
    artifacts = artifacts if artifacts is not None else artifacts_bucket(settings)
    rows: dict[tuple[str, int | None], dict[str, Any]] = {}
    for record in list_records(artifacts):
        rows[(str(record.get("object")), int(record.get("generation", 0)))] = dict(record)
    for reason in list_quarantine(data):
        key = (str(reason.get("object")), int(reason.get("generation", 0)))
        row = rows.setdefault(
            key, {"object": key[0], "generation": key[1], "time": reason.get("quarantined_at")}
        )
        row["decision"] = MonitoringDecision.QUARANTINED
        row["quarantine"] = {k: reason.get(k) for k in ("rule", "message", "quarantined_as")}
    waiting = []
    for row in unprocessed_files(data, artifacts):
        recorded = rows.get((row["object"], row["generation"]))
        if recorded is not None:
            recorded["reason"] = row["reason"]  # an error: its record stays the row, with why
        else:
            waiting.append(row)
    return sorted(rows.values(), key=lambda r: (str(r.get("time") or ""), r["object"])) + waiting


def run_monitor(args: argparse.Namespace) -> int:
    """Print the merged records."""
    rows = collect()
    if args.limit > 0:
        rows = rows[-args.limit :]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no files monitored yet (records appear as the train function sees incoming files)")
    else:
        print(render(rows))
    print(LIVE_HINT)
    return 0


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _quarantine_message(row: dict[str, Any]) -> Any:
    return (row.get("quarantine") or {}).get("message") or row.get("message")


def _file(row: dict[str, Any]) -> str:
    return str(row["object"]) if row.get("generation") is None else f"{row['object']}@{row['generation']}"


def render(rows: list[dict[str, Any]]) -> str:
    """One line per file, then the quarantine reasons; control characters of names and messages
    escaped (``shared.display``)."""
    from shared.data.monitoring import PRIMARY_METRIC

    header = ("time", "file", "model", "primary", "acc/auc", "max psi", "drifted", "outcome")
    table = [header]
    for row in rows:
        metrics = row.get("metrics") or {}
        primary = next((name for name, _ in PRIMARY_METRIC.values() if name in metrics), None)
        psi = row.get("psi") or {}
        top = max(psi.values()) if psi else None
        quality = (
            f"{_fmt(metrics.get('accuracy'))}/{_fmt(metrics.get('roc_auc'))}"
            if "accuracy" in metrics
            else "-"
        )
        outcome = row.get("decision") or "-"
        rule = (row.get("quarantine") or {}).get("rule") or row.get("rule")
        quarantined = outcome == MonitoringDecision.QUARANTINED
        if quarantined and rule:
            outcome = f"{MonitoringDecision.QUARANTINED} ({rule})"
        training = row.get("training") or {}
        if training.get("outcome") and not quarantined:
            # The trainer adds what became of the file after the test-then-train numbers.
            outcome += f", {training['outcome']}" + (
                f" {training['version']}" if training.get("version") else ""
            )
        table.append(
            (
                str(row.get("time") or "-")[:19].replace("T", " "),
                _file(row),
                str(row.get("model_version") or "-"),
                f"{primary}={_fmt(metrics.get(primary))}" if primary else "-",
                quality,
                _fmt(top),
                ",".join(row.get("drifted") or []) or "-",
                outcome,
            )
        )
    lines = [render_table(table)]
    reasons = [
        f"  {printable(r['object'])}: {printable(_quarantine_message(r))}"
        for r in rows
        if r.get("decision") == MonitoringDecision.QUARANTINED
    ]
    if reasons:
        lines += ["", "quarantined:", *reasons]
    warned = [
        f"  {printable(_file(r))}: {printable(warning)}" for r in rows for warning in r.get("warnings") or []
    ]
    if warned:
        lines += ["", "warnings (label leakage, feedback-loop share):", *warned]
    waiting = [f"  {printable(r['object'])}: {printable(r['reason'])}" for r in rows if r.get("reason")]
    if waiting:
        lines += ["", "no outcome yet (`prodml replay` runs them again once the cause is fixed):", *waiting]
    return "\n".join(lines)
