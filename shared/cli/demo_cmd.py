"""``prodml demo``: the whole story on synthetic data (see ``shared.local.demo``)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from shared.errors import DemoError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole story on synthetic data: train, serve, quarantine, roll back, drift, advise",
        description=(
            "From a fresh state folder: synthetic data, schema, a first model, the local stack, day files "
            "dropped one by one (new versions served over HTTP), a corrupt file quarantined, a rollback "
            "and back, a drift warning, the advisor's choice, the table, hybrid serving under Zipf "
            "traffic; then a summary and a report (HTML). Stops the stack at the end or on Ctrl-C."
        ),
    )
    parser.add_argument("--short", action="store_true", help="a smaller, quicker story (for CI)")
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(".local/demo"),
        help="state folder, cleared first (default .local/demo)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; SIGTERM stops it like Ctrl-C (everything started is stopped)."""
    from shared.local.demo import DemoOptions, run_demo

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run_demo(DemoOptions(state=args.state, short=args.short, seed=args.seed))
    except DemoError as exc:
        print(f"prodml demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prodml demo: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
