"""``prodml up``: run the local stack until Ctrl-C (see ``shared.local.stack``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from shared.local.functions import DECLARATION, load_declaration

if TYPE_CHECKING:
    from shared.local.stack import LocalStack


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml up``."""
    up = subparsers.add_parser(
        "up",
        help="run the functions, the file-drop router and the scheduler locally",
        description=(
            "Start every function of infra/functions.json as a functions-framework process on 127.0.0.1, "
            "the file-drop router (files dropped into the bucket folders fire the functions) and the "
            "scheduler (build_table every SCHEDULE_SECONDS). Runs until Ctrl-C, then stops everything."
        ),
    )
    up.add_argument(
        "--state",
        type=Path,
        default=None,
        help="folder for buckets, logs and dead letters (default: LOCAL_BUCKETS_ROOT, .local/logs, "
        "LOCAL_DEADLETTER_DIR)",
    )
    up.add_argument("--no-scheduler", action="store_true", help="do not call build_table periodically")
    up.add_argument(
        "--only",
        default=None,
        metavar="NAMES",
        help="comma-separated functions to run (default: all); triggers of the others are not routed",
    )
    up.add_argument("--declaration", type=Path, default=DECLARATION, help="the functions declaration to run")
    up.add_argument("--json", action="store_true", help="print the URLs and folders as one JSON line")
    up.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    """Start the stack, print where everything is, wait for SIGINT or SIGTERM, stop it."""
    from shared.local.stack import LocalStack

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Installed before starting, so a Ctrl-C during start-up still stops what was started.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(
        state_dir=args.state if args.state is not None else Path(".local"),
        env=None if args.state is not None else _env_without_state(),
        declaration=load_declaration(args.declaration),
        scheduler=not args.no_scheduler,
        functions=[name.strip() for name in args.only.split(",") if name.strip()] if args.only else None,
    )
    try:
        stack.start()
        _announce(stack, args.json)
        while not stopping.wait(0.5):
            pass
        print("stopping ...", flush=True)
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped: no process left running", flush=True)
    return 0


def _env_without_state() -> dict[str, str]:
    """The environment with its own bucket and dead-letter settings, paths made absolute."""
    from shared.local.stack import stack_environment

    return stack_environment(None, os.environ)


def _announce(stack: LocalStack, as_json: bool) -> None:
    urls = stack.urls
    intervals = [f"{s.function} every {s.interval:g} s" for s in stack.schedulers]
    if as_json:
        info = {
            "urls": urls,
            "drop_folder": str(stack.drop_folder),
            "buckets_root": str(stack.settings.local_buckets_root),
            "deadletter_dir": str(stack.settings.local_deadletter_dir),
            "logs_dir": str(stack.logs_dir),
            "schedules": intervals,
        }
        print(json.dumps(info), flush=True)
        return
    width = max(len(name) for name in urls)
    print(f"{'function':<{width}}  url")
    for name, url in urls.items():
        print(f"{name:<{width}}  {url}")
    print(f"drop data files into:  {stack.drop_folder}/")
    print(f"buckets:               {stack.settings.local_buckets_root}/")
    print(f"function logs:         {stack.logs_dir}/")
    print(f"dead letters:          {stack.settings.local_deadletter_dir}/")
    print(f"scheduler:             {', '.join(intervals) or 'off'}")
    print("Ctrl-C to stop.", flush=True)
