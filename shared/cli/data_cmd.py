"""``prodml data synth``: write the synthetic ad-conversion dataset (see ``shared.local.synth``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.cli.pipeline_cmd import register_validate
from shared.local.synth_keys import KEY_CARDINALITY


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml data`` and its ``synth`` subcommand."""
    data = subparsers.add_parser("data", help="make example data", description="Make example data.")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = commands.add_parser(
        "synth",
        help="write a seeded synthetic ad-conversion dataset by day",
        description=(
            "Write day-NN.csv files of ad impressions (country, device, hour, ad_category, placement, "
            f"user_segment: {KEY_CARDINALITY:,} keys; bid; converted), optionally a drifted day, a corrupt "
            "file and Zipf-distributed request traffic (traffic.jsonl). The same seed writes the same files."
        ),
    )
    synth.add_argument("--out", type=Path, default=Path(".local/synth"), help="folder (default .local/synth)")
    synth.add_argument("--days", type=int, default=7, help="day files to write (default 7)")
    synth.add_argument("--rows-per-day", type=int, default=3000, help="rows per day file (default 3000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--drift-day", type=int, default=None, help="make this day's inputs drift")
    synth.add_argument("--corrupt", action="store_true", help="also write corrupt.csv (for quarantine)")
    synth.add_argument("--traffic", type=int, default=0, help="request instances in traffic.jsonl")
    synth.add_argument("--json", action="store_true", help="print JSON instead of a table")
    synth.set_defaults(func=run_synth)
    register_validate(commands)  # prodml data validate: bulk validation (shared/pipelines)


def run_synth(args: argparse.Namespace) -> int:
    """Write the files and list them."""
    from shared.local.synth import synthesize

    try:
        result = synthesize(
            args.out,
            days=args.days,
            rows_per_day=args.rows_per_day,
            seed=args.seed,
            drift_day=args.drift_day,
            corrupt=args.corrupt,
            traffic=args.traffic,
        )
    except ValueError as exc:
        print(f"prodml data synth: {exc}", file=sys.stderr)
        return 2
    kinds = {p: "day" for p in result.day_files}
    if result.drift_file is not None:
        kinds[result.drift_file] = "day (drifted)"
    if result.corrupt_file is not None:
        kinds[result.corrupt_file] = "corrupt"
    if result.traffic_file is not None:
        kinds[result.traffic_file] = "traffic (instances)"
    rows = [{"file": str(p), "kind": kinds[p], "rows": result.rows[p.name]} for p in result.files]
    if args.json:
        print(json.dumps({"out": str(result.out), "files": rows}, indent=2))
        return 0
    width = max(len(str(p)) for p in result.files)
    print(f"{'file':<{width}}  {'kind':<19}  rows")
    for r in rows:
        print(f"{r['file']:<{width}}  {r['kind']:<19}  {r['rows']}")
    return 0
