"""``prodml table build``: build the static prediction table of the current model now."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from shared.cli.pipeline_cmd import add_runner_argument
from shared.cli.pipeline_cmd import run_table as run_routed_table
from shared.config import get_settings
from shared.contracts import BuildStatus, TableStrategy, words

if TYPE_CHECKING:
    from shared.tables.result import BuildResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml table`` and its ``build`` subcommand."""
    table = subparsers.add_parser(
        "table", help="the static prediction table", description="The static prediction table."
    )
    commands = table.add_subparsers(dest="table_command", metavar="COMMAND", required=True)
    build = commands.add_parser(
        "build",
        help="build the table of the current model now",
        description=(
            "Score keys with models/current.skops and switch tables/current.json to the new table. "
            "auto: every key when the key space fits TABLE_MAX_ROWS, else the K most requested keys "
            "in traffic/. The same model generation is not built twice unless --force."
        ),
    )
    build.add_argument(
        "--strategy",
        choices=words(TableStrategy),
        default=TableStrategy.AUTO,
        help="which keys (default auto)",
    )
    build.add_argument("--k", type=int, default=None, help="keys of a top_k table (default TABLE_TOP_K)")
    build.add_argument("--force", action="store_true", help="rebuild even if this model's table is current")
    build.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # Scale-out (docs/scale-out.md): --runner auto|function|direct|dataflow routes the build.
    add_runner_argument(build, default=None)
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Build, print the summary; exit 1 with a one-line reason when nothing could be built."""
    if args.runner is not None:  # where to build is decided (or forced): see shared.pipelines
        return run_routed_table(args)
    from shared.storage import artifacts_bucket
    from shared.tables.build import build_table
    from shared.tables.plan import parse_build_request

    settings = get_settings()
    body = {"strategy": args.strategy, "force": args.force}
    if args.k is not None:
        body["k"] = args.k
    request = parse_build_request(body, settings.table_max_rows)
    result = build_table(artifacts_bucket(settings), settings, request)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render(result))
    if result.status == BuildStatus.NOTHING_TO_BUILD:
        print(f"prodml table build: {result.message}", file=sys.stderr)
        return 1
    return 0


def render(result: BuildResult) -> str:
    """The summary as aligned ``field  value`` lines."""
    hit = result.expected_hit_rate
    rows = [
        ("status", result.status),
        ("strategy", result.strategy or "-"),
        ("model", f"{result.model_version} (generation {result.model_generation})"),
        ("table", result.table or "-"),
        ("rows", f"{result.rows:,}"),
        ("build seconds", "-" if result.build_seconds is None else f"{result.build_seconds:.2f}"),
        ("rows per second", "-" if result.rows_per_second is None else f"{result.rows_per_second:,.0f}"),
        ("expected hit rate", "- (no traffic)" if hit is None else f"{hit:.1%}"),
        ("pointer switched", "yes" if result.pointer_switched else "no"),
        ("message", result.message),
    ]
    return "\n".join(f"{name:<18} {value}" for name, value in rows)
