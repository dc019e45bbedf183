"""``prodml live``: each model version's quality on the traffic it served (docs/feedback.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.config import get_settings
from shared.display import printable, render_table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml live``."""
    parser = subparsers.add_parser(
        "live",
        help="per model version: served, labelled, pending; live metrics by source; serving skew",
        description=(
            "Join the prediction log with the labels files that arrived (labels/), now, and show per "
            "model version what it served, how much is labelled, defaulted (LABEL_DEFAULT past "
            "LABEL_WINDOW) or pending, the task's metrics on the matured rows overall and by source "
            "(table, model), the serving skew of each feature (PSI against the version's training "
            "data), unmatched labels and duplicates. The fields of --json are in docs/feedback.md."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_live)


def run_live(args: argparse.Namespace) -> int:
    """Compute the report and print it."""
    from shared.feedback.report import build_report

    report = build_report(get_settings())
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _quality_row(what: str, quality: dict[str, Any]) -> tuple[str, ...]:
    c, m = quality["counts"], quality.get("metrics") or {}
    primary = "rmse" if "rmse" in m else "log_loss"
    second = "mae" if "mae" in m else "roc_auc"
    calibration = quality.get("calibration") or {}
    observed = calibration.get("observed_rate", calibration.get("mean_observed"))
    cal = (
        f"{_fmt(calibration.get('mean_predicted'))}/{_fmt(observed)}"
        if "mean_predicted" in calibration
        else "-"
    )
    return (
        what,
        *(str(c[k]) for k in ("served", "labelled", "defaulted", "pending")),
        f"{primary}={_fmt(m.get(primary))}" if m else "-",
        f"{second}={_fmt(m.get(second))}" if m else "-",
        _fmt(m.get("accuracy")) if m else "-",
        cal,
    )


def render(report: dict[str, Any]) -> str:
    """The report as tables; every value from data (versions, ids, names) escaped for the terminal."""
    log, labels = report["log"], report["labels"]
    default = report["label_default"]
    lines = [
        f"prediction log: {log['rows']} rows in {log['objects']} objects ({log['unreadable']} unreadable, "
        f"{log['duplicate_ids']} duplicate ids); labels: {labels['rows']} rows in {labels['objects']} files "
        f"({labels['duplicates']} duplicates, {labels['matched']} matched, {labels['unmatched']} unmatched)",
        f"label window {report['label_window_seconds']:g} s, default "
        f"{printable(default) if default is not None else 'none (unlabelled rows stay pending)'}",
    ]
    if labels["unmatched_ids"]:
        lines.append("unmatched ids (first): " + ", ".join(printable(i) for i in labels["unmatched_ids"]))
    lines += _ages_lines(report.get("ages"))
    if not report["versions"]:
        lines += ["", "no predictions logged yet"]
    header = ("", "served", "labelled", "defaulted", "pending", "metric", "metric", "accuracy", "pred/obs")
    for version in report["versions"]:
        table = [header, _quality_row("all", version)]
        table += [_quality_row(f"source {s}", q) for s, q in version["by_source"].items()]
        table += [_quality_row(f"day {d['day']}", d) for d in version["by_day"]]
        lines += ["", f"version {printable(version['version'])}", render_table(table)]
        lines += _skew_lines(version["skew"])
        lines += _row_skew_lines(version.get("row_skew"))
    lines += ["", "per data file (test-then-train): `prodml monitor`"]
    return "\n".join(lines)


def _ages_lines(ages: dict[str, Any] | None) -> list[str]:
    """The serving model's and the table's ages, and any warning about them."""
    if not ages or ages.get("model") is None:
        return ["serving model: none yet"]
    model, table = ages["model"], ages.get("table")
    line = f"serving model {printable(model['version'] or '?')}, {model['age_seconds']:.0f} s old"
    if table is not None:
        age = "" if table["age_seconds"] is None else f", {table['age_seconds']:.0f} s old"
        built = "this model" if table["matches_model"] else f"model {printable(table['model_version'])}"
        line += f"; table built from {built}{age}"
    return [line] + [f"warning: {printable(w['message'])}" for w in ages.get("warnings", [])]


def _skew_lines(skew: dict[str, Any]) -> list[str]:
    if not skew["reference"]:
        return [f"serving skew: no training reference ({printable(skew.get('note') or 'card has none')})"]
    table = [("feature", "psi", "skewed")]
    table += [
        (name, _fmt(f["psi"]), "SKEWED" if f["skewed"] else "-") for name, f in skew["features"].items()
    ]
    return [
        f"serving skew (PSI against the training data, threshold {skew['threshold']:g}):",
        render_table(table),
    ]


def _row_skew_lines(row_skew: dict[str, Any] | None) -> list[str]:
    """The row-by-row skew of the file the version was trained for, when it had one."""
    if not row_skew:
        return []
    mismatched = row_skew.get("mismatched") or []
    shown = ", ".join(
        f"{printable(name)} {row_skew['features'][name]['mismatches']}/{row_skew['rows']}"
        for name in mismatched
    )
    return [f"feature skew row by row (its training file, {row_skew['rows']} served rows): {shown or 'none'}"]
