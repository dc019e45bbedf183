"""``prodml train``, ``prodml models`` and ``prodml rollback``: static training and the registry.

Argument parsing and printing only: static training is ``shared.training.static``, the registry
``shared.training.registry``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared.config import Settings, get_settings
from shared.errors import ModelNotReady, NotFound, PreconditionFailed, ProdMLError
from shared.storage import Bucket, artifacts_bucket


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml train``, ``prodml models`` and ``prodml rollback``."""
    train = subparsers.add_parser(
        "train",
        help="static training: train on local files, write a version, promote it",
        description=(
            "Validate FILEs against schema.json, upload them to incoming/ of the data bucket, train a "
            "fresh model on them (the first model, or a full retrain by hand), compare it with the "
            "current model on the same held-out rows, write a version and promote it."
        ),
    )
    train.add_argument("files", nargs="+", type=Path, metavar="FILE", help=".csv, .jsonl or .parquet files")
    train.add_argument(
        "--gate",
        action="store_true",
        help="promote only if not worse than the current model (as the function)",
    )
    train.add_argument("--json", action="store_true", help="print JSON instead of text")
    train.set_defaults(func=run_train)

    models = subparsers.add_parser(
        "models",
        help="the registry: versions, data, metrics, decision, which is current",
        description="List every model version, oldest first; '*' marks the current model.",
    )
    models.add_argument("--limit", type=int, default=0, help="show only the last N versions (default all)")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(func=run_models)

    rollback = subparsers.add_parser(
        "rollback",
        help="make an earlier version current (default: the one promoted before the current one)",
        description=(
            "Overwrite models/current.skops with VERSION's model (compare-and-swap) and record it. "
            "Without VERSION, the version promoted before the current one; rolling back again goes "
            "further back."
        ),
    )
    rollback.add_argument("version", nargs="?", default=None, metavar="VERSION", help="see `prodml models`")
    rollback.add_argument("--json", action="store_true", help="print JSON instead of text")
    rollback.set_defaults(func=run_rollback)


# --- train -------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace) -> int:
    """Train, print what happened; exit 1 when ``--gate`` rejected the model."""
    from shared.training.static import train_files

    done = train_files(list(args.files), get_settings(), gate=args.gate)
    summary: dict[str, Any] = {
        "version": done.card.version,
        "promoted": done.promoted,
        "reason": done.reason,
        "files": done.files,
        "training_rows": done.card.training_rows,
        "metrics": done.card.metrics,
        "decision": done.card.status,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        metrics = summary["metrics"]
        primary = metrics["primary"]
        mine = (metrics.get("challenger") or {}).get(primary)
        theirs = (metrics.get("champion") or {}).get(primary)
        print(f"version   {summary['version']}  ({summary['decision']})")
        print(f"data      {len(summary['files'])} files, {summary['training_rows']} training rows")
        print(f"{primary:<9} {_fmt(mine)} (current model: {_fmt(theirs)})")
        print(f"decision  {summary['reason']}")
    return 0 if summary["promoted"] else 1


# --- models ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def list_models(settings: Settings, artifacts: Bucket | None = None) -> dict[str, Any]:
    """Every version with what ``prodml models`` shows, and the current version (``artifacts``:
    the bucket to read, default the settings' artifacts bucket; the dashboard passes its cached
    view, so its versions page and ``prodml models --json`` are one computation)."""
    from shared.training import registry

    artifacts = artifacts if artifacts is not None else artifacts_bucket(settings)
    try:
        current = registry.read_current(artifacts, settings.model_trusted_types)
        current_version = current.version if current is not None else None
    except ModelNotReady:
        current_version = None
    rows = []
    for card in registry.list_cards(artifacts):
        metrics = card.metrics
        primary = metrics.get("primary")
        rows.append(
            {
                "version": card.version,
                "created": card.created or None,
                "current": card.version == current_version,
                "by": card.by or None,
                "strategy": card.strategy or None,
                "fallback_reason": card.fallback_reason,
                "parent": card.parent,
                "files": len(card.lineage),
                "training_rows": card.training_rows,
                "primary_metric": primary,
                "challenger": (metrics.get("challenger") or {}).get(primary),
                "champion": (metrics.get("champion") or {}).get(primary),
                "decision": card.status,
                "reason": card.decision.reason if card.decision is not None else None,
                # its ONNX form: "verified" (served compiled), "differs", "unconvertible", ...
                "compiled": card.compiled.status if card.compiled is not None else None,
                "compiled_max_abs_difference": card.compiled.max_abs_difference if card.compiled else None,
                "compiled_reason": card.compiled.reason if card.compiled is not None else None,
            }
        )
    return {"current": current_version, "versions": rows}


def run_models(args: argparse.Namespace) -> int:
    """Print the registry."""
    listing = list_models(get_settings())
    if args.limit > 0:
        listing["versions"] = listing["versions"][-args.limit :]
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    if not listing["versions"]:
        print("no model versions yet: train one with `prodml train FILE...`")
        return 0
    header = (
        "",
        "version",
        "created",
        "strategy",
        "files",
        "rows",
        "metric",
        "value",
        "champion",
        "decision",
        "compiled",
    )
    table = [header]
    for row in listing["versions"]:
        table.append(
            (
                "*" if row["current"] else "",
                row["version"],
                str(row["created"] or "-")[:19].replace("T", " "),
                str(row["strategy"] or "-"),
                str(row["files"]),
                str(row["training_rows"] or "-"),
                str(row["primary_metric"] or "-"),
                _fmt(row["challenger"]),
                _fmt(row["champion"]),
                str(row["decision"] or "-"),
                str(row["compiled"] or "-"),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(f"current: {listing['current'] or '(none)'}")
    return 0


# --- rollback ----------------------------------------------------------------------------------


def run_rollback(args: argparse.Namespace) -> int:
    """Roll back and say from which version to which."""
    from shared.training import registry

    settings = get_settings()
    try:
        done = registry.rollback(artifacts_bucket(settings), args.version, settings.model_trusted_types)
    except PreconditionFailed:
        raise ProdMLError(
            "the current model changed while rolling back; run `prodml rollback` again"
        ) from None
    except NotFound as exc:
        raise ProdMLError(str(exc)) from None
    if args.json:
        print(json.dumps({"previous": done.previous, "current": done.version, "generation": done.generation}))
    else:
        print(f"rolled back: current model is now {done.version} (was {done.previous})")
    return 0
