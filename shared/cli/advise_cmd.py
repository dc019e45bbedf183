"""``prodml advise``: cardinality, peakedness, table cost, and the serving mode that fits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import Settings, get_settings
from shared.contracts import TableStrategy

if TYPE_CHECKING:
    from shared.pipelines.decide import Decision
    from shared.tables.advisor import Advice

DEFAULT_PNG = Path(".local/advise-coverage.png")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml advise``."""
    parser = subparsers.add_parser(
        "advise",
        help="recommend static, dynamic or hybrid serving, with the numbers and a plot",
        description=(
            "Read the schema, the current model and the traffic counts; measure the model's "
            "throughput and latency; recommend a serving mode (SERVING_MODE) and, for hybrid, K. "
            "Writes the coverage curve as a PNG."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--png", type=Path, default=DEFAULT_PNG, help=f"coverage plot (default {DEFAULT_PNG})"
    )
    parser.set_defaults(func=run_advise)


def run_advise(args: argparse.Namespace) -> int:
    """Advise, write the plot, print the report."""
    from shared.storage import artifacts_bucket
    from shared.tables.advisor import advise
    from shared.tables.advisor_plot import plot_coverage

    settings = get_settings()
    advice = advise(artifacts_bucket(settings), settings)
    png = plot_coverage(advice, args.png)
    path = table_build_path(advice, settings)
    if args.json:
        print(json.dumps({**advice.to_dict(), "png": str(png), "table_build_path": path.to_dict()}, indent=2))
    else:
        print(render(advice, png))
        print(f"{'table build':<18} {path.line()}")
    return 0


def table_build_path(advice: Advice, settings: Settings) -> Decision:
    """Where a build of the advised table (else every key) would run and why (shared.pipelines)."""
    from shared.pipelines.decide import decide

    rows = advice.k or advice.cardinality
    rate = (advice.model or {}).get("rows_per_second")
    strategy = TableStrategy.FULL if rows == advice.cardinality else TableStrategy.TOP_K
    return decide(rows, float(rate) if rate else None, settings, strategy=strategy)


def _num(value: float | None, fmt: str = ",.0f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def render(advice: Advice, png: Path) -> str:
    """The report: the recommendation in words, then the numbers behind it."""
    top = advice.top_share
    model = advice.model or {}
    full, rec = advice.full_table, advice.recommended_table
    rows = [
        ("recommendation", advice.recommendation + (f" (K={advice.k:,})" if advice.k else "")),
        ("expected hit rate", _num(advice.expected_hit_rate, ".1%")),
        ("key space", f"{advice.cardinality:,} keys (TABLE_MAX_ROWS={advice.table_max_rows:,})"),
        (
            "keys seen",
            f"{advice.distinct_keys_seen:,} in {advice.requests:,} requests "
            f"({advice.invalid_requests:,} with invalid keys)",
        ),
        (
            "top 1% / 10% keys",
            f"{_num(top.get('1%'), '.1%')} / {_num(top.get('10%'), '.1%')} of requests (of seen keys)",
        ),
        ("full table", f"{_num(full['bytes'])} bytes, build {_num(full['build_seconds'], ',.1f')} s"),
        (
            "recommended table",
            f"{_num(rec['rows'])} rows, {_num(rec['bytes'])} bytes, "
            f"build {_num(rec['build_seconds'], ',.1f')} s",
        ),
        (
            "model",
            f"{model.get('version', '- (none yet)')}: {_num(model.get('rows_per_second'))} rows/s "
            f"batch, {_num(model.get('latency_ms'), '.2f')} ms per single instance",
        ),
        ("plot", str(png)),
    ]
    lines = [f"{name:<18} {value}" for name, value in rows]
    return "\n".join([*lines, "", advice.reason])
