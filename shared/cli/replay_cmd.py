"""``prodml replay``: fire events again for data files not yet processed (see ``shared.router.replay``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from shared.config import get_settings
from shared.router.replay import replay


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prodml replay``."""
    parser = subparsers.add_parser(
        "replay",
        help="fire events again for data files not yet processed",
        description=(
            "For each file in the data bucket under PREFIX that the train function has not finished "
            "(no registry/processed marker), send the storage event again through the local router's "
            "delivery (retries, dead letters). Needs the local stack running (`prodml up`)."
        ),
    )
    parser.add_argument("--prefix", default="incoming/", help="object name prefix (default incoming/)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="also files already processed (the function skips those it has a marker for)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Replay and list what happened; exit 1 if any event was dead-lettered."""
    outcomes = replay(get_settings(), prefix=args.prefix, include_processed=args.all)
    failed = [o for o in outcomes if o.outcome == "dead-lettered"]
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=2))
    elif not outcomes:
        print(f"no data files under {args.prefix!r}")
    else:
        width = max(len(o.name) for o in outcomes)
        print(f"{'file':<{width}}  {'generation':<16}  {'outcome':<18}  attempts  function")
        for o in outcomes:
            function = o.function or "-"
            print(f"{o.name:<{width}}  {o.generation:<16}  {o.outcome:<18}  {o.attempts:<8}  {function}")
        sent = sum(o.outcome == "delivered" for o in outcomes)
        skipped = sum(o.outcome.startswith("skipped") for o in outcomes)
        print(f"{sent} delivered, {len(failed)} dead-lettered, {skipped} skipped (already processed)")
    return 1 if failed else 0
