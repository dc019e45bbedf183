"""``prodml replay``: fire events again for data files not yet processed.

See ``shared.local.router.replay`` (through the stack) and ``shared.training.replay`` (in process).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from shared.config import get_settings
from shared.contracts import INCOMING_PREFIX, ReplayStatus, StorageBackend
from shared.display import printable, render_table

if TYPE_CHECKING:
    from shared.training.replay import ReplayOutcome


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml replay``."""
    parser = subparsers.add_parser(
        "replay",
        help="fire events again for data files not yet processed",
        description=(
            "For each file in the data bucket under PREFIX that the train function has not finished "
            "(no registry/processed marker), send the storage event again through the local router's "
            "delivery (retries, dead letters); that needs the local stack running (`prodml up`). "
            "With --in-process (always with STORAGE_BACKEND=gcs), run the train function's own code "
            "here instead, one file after the other: no stack needed. Ends with every file still not "
            "done and why (no schema, an error, a name no object can have)."
        ),
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the trainer in this process instead of sending events (the default on gcs)",
    )
    parser.add_argument(
        "--prefix", default=INCOMING_PREFIX, help=f"object name prefix (default {INCOMING_PREFIX})"
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="also files already processed (the function skips those it has a marker for)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    """Replay and list what happened; exit 1 if any file is still not done (failed, no schema, ...)."""
    from shared.local.router.replay import replay
    from shared.training.replay import UNFINISHED, replay_in_process

    settings = get_settings()
    if args.in_process or settings.storage_backend == StorageBackend.GCS:
        outcomes = replay_in_process(settings, prefix=args.prefix, include_processed=args.all)
    else:
        outcomes = replay(settings, prefix=args.prefix, include_processed=args.all)
    failed = [o for o in outcomes if o.outcome in UNFINISHED]
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes], indent=2))
    elif not outcomes:
        print(f"no data files under {args.prefix!r}")
    else:
        table: list[Sequence[object]] = [("file", "generation", "outcome", "attempts", "by")]
        table += [(o.name, _generation(o), o.outcome, o.attempts, o.function or "-") for o in outcomes]
        print(render_table(table))
        skipped = sum(o.outcome == ReplayStatus.SKIPPED_PROCESSED for o in outcomes)
        done = len(outcomes) - len(failed) - skipped
        print(f"{done} done, {len(failed)} not done, {skipped} skipped (already processed)")
        for o in failed:
            where = printable(o.name) if o.generation is None else f"{printable(o.name)}@{o.generation}"
            print(f"not done: {where}: {o.outcome}: {printable(o.error)}")
    return 1 if failed else 0


def _generation(outcome: ReplayOutcome) -> str:
    return "-" if outcome.generation is None else str(outcome.generation)
