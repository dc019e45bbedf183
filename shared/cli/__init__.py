"""The ``prodml`` command line (docs/design.md section 7).

Each command lives in its own module of this package, exposing ``register(subparsers)``, which
adds a subparser whose ``func`` takes the parsed arguments and returns an exit code. Add a module
name to ``COMMAND_MODULES`` to add a command.

Building the parser imports every command module, so a command module imports only light modules
at its top (argparse, the standard library, ``shared.config``/``errors``/``storage``/``schema``)
and imports the heavy ones (scikit-learn, pandas, matplotlib, Beam, and every ``shared`` module
that pulls them in) inside the function that runs the command: ``prodml --help`` and ``prodml X
--help`` then start in well under a tenth of a second instead of over a second. Types from heavy
modules are imported under ``typing.TYPE_CHECKING``; values a parser needs while registering
(choices, help text) come from light modules (``shared.contracts``, ``shared.local.synth_keys``).
tests/cli/test_cli.py checks that ``--help`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from shared.config import get_settings
from shared.display import EscapingWriter
from shared.errors import ProdMLError
from shared.logs import setup_logging

COMMAND_MODULES: tuple[str, ...] = (
    "data_cmd",
    "table_cmd",
    "advise_cmd",
    "schema_cmd",
    "monitor_cmd",
    "live_cmd",
    "feedback_cmd",
    "shadow_cmd",
    "train_cmd",
    "pipeline_cmd",
    "up_cmd",
    "replay_cmd",
    "demo_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="prodml",
        description="Train, serve and operate a scikit-learn model on serverless functions.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"shared.cli.{module_name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a ``ProdMLError`` exits 1 with a one-line reason on stderr.

    Everything the command writes goes through ``EscapingWriter``: an object name or a value
    from data never reaches the terminal with its control characters raw.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingWriter(streams[0]), EscapingWriter(streams[1])
    try:
        settings = get_settings()
        setup_logging(settings.log_format, settings.log_level, stream=sys.stderr)
        return int(args.func(args) or 0)
    except ProdMLError as exc:
        print(f"prodml {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout, sys.stderr = streams


if __name__ == "__main__":
    sys.exit(main())
