"""``prodml pipeline``: the scale-out pipelines (docs/scale-out.md).

- ``prodml pipeline table``: build the table where ``shared.pipelines.decide`` says (or where
  ``--runner`` says): in this process, a DirectRunner pipeline, or a Dataflow job;
- ``prodml pipeline validate OBJECT...``: validate data files in bulk (names or prefixes ending in
  ``/`` of the data bucket), quarantining the bad ones as the train function would;
- ``prodml pipeline join``: the prediction log joined with the labels, and the live report, past
  JOIN_MAX_ROWS;
- ``prodml pipeline decide``: which path a table build of the current model would take, and why;
- ``prodml pipeline template --image IMAGE``: the Flex Template spec for ``DATAFLOW_TEMPLATE``.

``--dry-run`` (Dataflow) prints the launch request instead of sending it. ``register_validate``
and ``add_runner_argument`` let ``prodml data validate`` and ``prodml table build --runner`` reuse
these commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.config import get_settings
from shared.contracts import (
    CURRENT_MODEL,
    RUNNER_AUTO,
    BuildPath,
    BuildStatus,
    LaunchStatus,
    Pipeline,
    Runner,
    StorageBackend,
    TableStrategy,
    ValidationStatus,
    words,
)


def add_runner_argument(
    parser: argparse.ArgumentParser, *, allow_function: bool = True, default: str | None = RUNNER_AUTO
) -> None:
    """``--runner`` (and ``--dry-run``) on a command that can run as a pipeline.

    ``allow_function=False``: only the pipeline runners (default: by ``STORAGE_BACKEND``).
    """
    choices = (RUNNER_AUTO, *words(BuildPath)) if allow_function else words(Runner)
    default = default if allow_function else None
    parser.add_argument(
        "--runner",
        choices=choices,
        default=default,
        help=(
            "where it runs: auto (decided by size, see docs/scale-out.md), function (this process), "
            "direct (a local Beam DirectRunner) or dataflow (a Dataflow job)"
            if allow_function
            else "direct (a local Beam DirectRunner, default with local buckets) or dataflow (a Dataflow job)"
        ),
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="dataflow: print the launch request, send nothing"
    )


def register_validate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` subcommand to a command group (``prodml pipeline``, ``prodml data``)."""
    validate = commands.add_parser(
        "validate",
        help="validate many data files in parallel; quarantine the bad ones",
        description=(
            "Check objects of the data bucket against schema.json with the train function's own checks, in "
            "a Beam pipeline. A bad file goes to quarantine/ with the reason the train function would give; "
            "good files stay for `prodml train`. Prints every object's outcome and writes a report with the "
            "reference statistics of the accepted rows to pipelines/validate/<run id>.json."
        ),
    )
    validate.add_argument("objects", nargs="+", help="object names, or prefixes ending in / (e.g. backfill/)")
    add_runner_argument(validate, allow_function=False)
    validate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    validate.set_defaults(func=run_validate)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml pipeline`` and its subcommands."""
    group = subparsers.add_parser(
        "pipeline",
        help="scale-out: table build, bulk validation and the feedback join as Beam pipelines",
        description=(
            "Run the table build, bulk validation and the feedback join as Apache Beam pipelines "
            "(docs/scale-out.md)."
        ),
    )
    commands = group.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)

    table = commands.add_parser(
        "table",
        help="build the table in this process or as a pipeline, whichever fits",
        description=(
            "Build the table of the current model where it fits: in this process when the key space is "
            "within TABLE_MAX_ROWS and its measured scoring time within TABLE_FUNCTION_BUDGET_SECONDS, else "
            "as a Beam pipeline (DirectRunner with local buckets, Dataflow with gcs). Says which and why."
        ),
    )
    table.add_argument(
        "--strategy",
        choices=words(TableStrategy),
        default=TableStrategy.AUTO,
        help="which keys (default auto)",
    )
    table.add_argument("--k", type=int, default=None, help="keys of a top_k table (default TABLE_TOP_K)")
    table.add_argument("--force", action="store_true", help="rebuild even if this model's table is current")
    add_runner_argument(table)
    table.add_argument("--json", action="store_true", help="print JSON instead of a table")
    table.set_defaults(func=run_table)

    register_validate(commands)

    join = commands.add_parser(
        "join",
        help="join the prediction log with the labels as a pipeline (past JOIN_MAX_ROWS)",
        description=(
            "Join every prediction log object with every stored labels file in a Beam pipeline, with the "
            "in-function join's rules, and compute the live report of `prodml live` from all of it (no "
            "JOIN_MAX_ROWS). Writes the report to pipelines/join/<run id>.json and feedback/live.json, "
            "and the joined rows to pipelines/join/<run id>/rows-<shard>.parquet (docs/feedback.md)."
        ),
    )
    add_runner_argument(join, allow_function=False)
    join.add_argument(
        "--shards", type=int, default=None, help="shards the ids are spread over (default: by stored size)"
    )
    join.add_argument("--json", action="store_true", help="print the report as JSON")
    join.set_defaults(func=run_join)

    decide = commands.add_parser(
        "decide",
        help="which path a table build of the current model would take, and why",
        description="Measure the current model's scoring rate and say where its table build would run.",
    )
    decide.add_argument(
        "--strategy",
        choices=words(TableStrategy),
        default=TableStrategy.AUTO,
        help="which keys (default auto)",
    )
    decide.add_argument("--k", type=int, default=None, help="keys of a top_k table (default TABLE_TOP_K)")
    decide.add_argument("--json", action="store_true", help="print JSON instead of a line")
    decide.set_defaults(func=run_decide)

    template = commands.add_parser(
        "template",
        help="print the Flex Template spec of the pipelines' image",
        description="Render the Dataflow Flex Template spec (upload it where DATAFLOW_TEMPLATE points).",
    )
    template.add_argument("--image", required=True, help="the pipelines' container image (infra/dataflow)")
    template.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")
    template.set_defaults(func=run_template)


def run_table(args: argparse.Namespace) -> int:
    """Build where it fits; print the result and the path taken."""
    from shared.pipelines.launch import build_table_routed
    from shared.storage import artifacts_bucket
    from shared.tables.plan import parse_build_request

    settings = get_settings()
    body: dict[str, Any] = {"strategy": args.strategy, "force": args.force}
    if args.k is not None:
        body["k"] = args.k
    request = parse_build_request(body, max(settings.table_max_rows, settings.pipeline_max_rows))
    routed = build_table_routed(
        artifacts_bucket(settings), settings, request, runner=args.runner, dry_run=args.dry_run
    )
    out = routed.to_dict()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(
            _render_fields(
                out, ("status", "strategy", "model_version", "table", "rows", "build_seconds", "message")
            )
        )
        if routed.decision is not None:
            print(f"{'path':<14} {routed.decision.line()}")
        if routed.launch:
            print(json.dumps(routed.launch, indent=2))
    if out.get("status") == BuildStatus.NOTHING_TO_BUILD:
        print(f"prodml pipeline table: {out.get('message')}", file=sys.stderr)
        return 1
    return 0


def run_validate(args: argparse.Namespace) -> int:
    """Validate the objects; print each one's outcome."""
    from shared.pipelines.launch import start

    settings = get_settings()
    runner = args.runner or (
        Runner.DATAFLOW if settings.storage_backend == StorageBackend.GCS else Runner.DIRECT
    )
    report = start(
        settings, runner, Pipeline.VALIDATE, {"objects": ",".join(args.objects)}, dry_run=args.dry_run
    )
    if args.json or report.get("status") in tuple(LaunchStatus):
        print(json.dumps(report, indent=2, default=str))
        return 0
    outcomes = report.get("outcomes", [])
    width = max([len("object"), *(len(o["object"]) for o in outcomes)])
    print(f"{'object':<{width}}  {'status':<11}  reason")
    for o in outcomes:
        reason = f"{o['rule']}: {o['message']}" if o.get("rule") else f"{o.get('rows', '-')} rows"
        print(f"{o['object']:<{width}}  {o['status']:<11}  {reason}")
    print(
        ", ".join(f"{report.get(status, 0)} {status}" for status in ValidationStatus)
        + f"; report {report.get('report')}"
    )
    return 0


def run_join(args: argparse.Namespace) -> int:
    """Run the join pipeline; print its live report (as ``prodml live`` does) and where it went."""
    from shared.cli.live_cmd import render
    from shared.pipelines.launch import start

    settings = get_settings()
    runner = args.runner or (
        Runner.DATAFLOW if settings.storage_backend == StorageBackend.GCS else Runner.DIRECT
    )
    parameters = {} if args.shards is None else {"shards": str(args.shards)}
    report = start(settings, runner, Pipeline.JOIN, parameters, dry_run=args.dry_run)
    if args.json or report.get("status") in tuple(LaunchStatus):
        print(json.dumps(report, indent=2, default=str))
        return 0
    rows = report["joined_rows"]
    print(render(report))
    print(f"\nreport {report['report']}; joined rows {rows['prefix']} ", end="")
    print(f"({rows['rows']} rows, {rows['parts']} parts)")
    return 0


def run_decide(args: argparse.Namespace) -> int:
    """Print where a table build of the current model would run, and why."""
    from shared.compiled.current import load_current
    from shared.errors import ModelNotReady, NotFound
    from shared.pipelines.decide import decide_for_model
    from shared.storage import artifacts_bucket

    settings = get_settings()
    try:
        bundle = load_current(artifacts_bucket(settings), settings).scorer
    except (NotFound, ModelNotReady) as exc:
        print(f"prodml pipeline decide: no usable {CURRENT_MODEL}: {exc}", file=sys.stderr)
        return 1
    decision = decide_for_model(bundle, settings, strategy=args.strategy, k=args.k)
    print(json.dumps(decision.to_dict(), indent=2) if args.json else decision.line())
    return 0


def run_template(args: argparse.Namespace) -> int:
    """Print (or write) the Flex Template spec."""
    from shared.pipelines.options import template_spec

    text = json.dumps(template_spec(args.image), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


def _render_fields(values: dict[str, Any], names: tuple[str, ...]) -> str:
    return "\n".join(f"{name:<14} {'-' if values.get(name) is None else values.get(name)}" for name in names)
