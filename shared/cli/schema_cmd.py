"""``prodml schema infer FILE``: a first ``schema.json`` from a data file, for review."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.config import get_settings
from shared.contracts import LABEL_NAMES, SCHEMA_BLOB
from shared.errors import ValidationFailed
from shared.schema import save_schema


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml schema`` and its ``infer`` subcommand."""
    schema = subparsers.add_parser(
        "schema", help="the dataset contract (schema.json)", description="The dataset contract."
    )
    commands = schema.add_subparsers(dest="schema_command", metavar="COMMAND", required=True)
    infer = commands.add_parser(
        "infer",
        help="infer schema.json from a CSV, JSON Lines or Parquet file",
        description=(
            "Infer features (category domains, integer and float ranges), the label (classes or "
            "regression) and the table key from a data file. Prints the schema JSON for review; "
            "--output writes it to a file, --upload to the artifacts bucket (ARTIFACTS_BUCKET)."
        ),
    )
    infer.add_argument("file", type=Path, metavar="FILE", help="a .csv, .jsonl/.json or .parquet file")
    infer.add_argument(
        "--label", help=f"label column (default: one named {'/'.join(LABEL_NAMES)}, else the last column)"
    )
    infer.add_argument(
        "--key",
        help="comma-separated key features, '' for none (default: every category and integer feature)",
    )
    infer.add_argument(
        "--max-categories",
        type=int,
        default=1000,
        help="leave out text columns with more distinct values (identifiers; default 1000)",
    )
    where = infer.add_mutually_exclusive_group()
    where.add_argument("--output", type=Path, help="write the schema JSON to this file")
    where.add_argument("--upload", action="store_true", help=f"write {SCHEMA_BLOB} to the artifacts bucket")
    infer.add_argument("--json", action="store_true", help="with --output/--upload: print where, as JSON")
    infer.set_defaults(func=run_infer)


def run_infer(args: argparse.Namespace) -> int:
    """Read the file, infer, then print, write or upload the schema."""
    settings = get_settings()
    if not args.file.is_file():
        print(f"prodml schema infer: no such file {str(args.file)!r}", file=sys.stderr)
        return 1
    from shared.data.files import read_frame
    from shared.data.schema_infer import default_label, infer_schema
    from shared.storage import artifacts_bucket

    try:
        frame = read_frame(args.file, args.file.name, settings.max_rows)
    except ValidationFailed as exc:
        print(f"prodml schema infer: {exc.rule}: {exc.message}", file=sys.stderr)
        return 1
    label = args.label or default_label([str(c) for c in frame.columns])
    key = None if args.key is None else [k.strip() for k in args.key.split(",") if k.strip()]
    schema = infer_schema(frame, label, key=key, max_categories=args.max_categories)
    if args.output is None and not args.upload:
        sys.stdout.write(schema.to_json())
        return 0
    if args.output is not None:
        args.output.write_text(schema.to_json())
        where: dict[str, object] = {"file": str(args.output)}
    else:
        bucket = artifacts_bucket(settings)
        where = {"bucket": bucket.name, "name": SCHEMA_BLOB, "generation": save_schema(bucket, schema)}
    summary = {
        **where,
        "rows": len(frame),
        "features": len(schema.features),
        "label": schema.label.name,
        "task": schema.label.task,
        "key": list(schema.key),
        "key_cardinality": schema.key_cardinality,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, value in summary.items():
            print(f"{name:<16} {value}")
        print("review it: domains, ranges, the label's classes and the key (the table holds every key)")
    return 0
