"""Entry point of every pipeline, in the Beam environment: ``python -m shared.pipelines.run``.

The same file is the Flex Template's ``FLEX_TEMPLATE_PYTHON_PY_FILE`` (infra/dataflow/Dockerfile)
and the DirectRunner subprocess that ``shared.pipelines.launch`` starts. Its own arguments are
the template's parameters (``shared.pipelines.options.TEMPLATE_PARAMETERS``); every other
argument is a Beam option (``--runner``, ``--temp_location``, ...). It prints one line of JSON,
the result, on stdout; logs go to stderr.

    python -m shared.pipelines.run --pipeline=table --settings_json='{...}' --strategy=full \\
        --runner=DirectRunner --temp_location=/tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence

from shared.config import Settings, load_settings
from shared.contracts import Pipeline, StorageBackend, TableStrategy, words
from shared.errors import ProdMLError
from shared.logs import setup_logging


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The pipeline's own arguments, and the rest (Beam's options)."""
    parser = argparse.ArgumentParser(prog="python -m shared.pipelines.run", description=__doc__)
    parser.add_argument("--pipeline", choices=words(Pipeline), required=True)
    parser.add_argument("--settings_json", default="{}", help="JSON object of prodml environment variables")
    parser.add_argument("--run_id", default="", help="names the run's temporary files (default: random)")
    parser.add_argument("--strategy", default=TableStrategy.AUTO.value, choices=words(TableStrategy))
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--force", default="false", choices=("true", "false"))
    parser.add_argument(
        "--objects", default="", help="comma-separated object names or prefixes (ending in /)"
    )
    parser.add_argument("--shards", type=int, default=None, help="join: shards of ids (default: by size)")
    return parser.parse_known_args(list(argv))


def settings_from(raw_json: str) -> Settings:
    """Settings from the launcher's ``--settings_json`` over this process's environment."""
    try:
        given = json.loads(raw_json)
    except ValueError as exc:
        raise SystemExit(f"--settings_json is not JSON: {exc}") from None
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise SystemExit(f"--settings_json must be a JSON object of strings, got {raw_json[:200]!r}")
    return load_settings({**os.environ, **given})


def temp_location(beam_argv: list[str], settings: Settings) -> tuple[str, bool]:
    """Where the run's temporary files go, and whether this process made (and must remove) it.

    The ``--temp_location`` Beam was given; else, with Cloud Storage, ``DATAFLOW_TEMP_LOCATION``
    (workers on other machines must reach it); else a new local folder (DirectRunner).
    """
    for arg in beam_argv:
        if arg.startswith("--temp_location="):
            return arg.split("=", 1)[1], False
    if settings.storage_backend == StorageBackend.GCS and settings.dataflow_temp_location.startswith("gs://"):
        return settings.dataflow_temp_location, False
    return tempfile.mkdtemp(prefix="prodml-pipeline-"), True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen pipeline; print its result as JSON; exit 1 with a one-line reason on error."""
    args, beam_argv = parse_args(sys.argv[1:] if argv is None else argv)
    settings = settings_from(args.settings_json)
    setup_logging(settings.log_format, settings.log_level, stream=sys.stderr)
    run_id = args.run_id or uuid.uuid4().hex[:12]
    temp, made_temp = temp_location(beam_argv, settings)
    if not any(a.startswith("--temp_location=") for a in beam_argv):
        beam_argv.append(f"--temp_location={temp}")
    try:
        if args.pipeline == Pipeline.TABLE:
            from shared.pipelines import table_pipeline
            from shared.tables.plan import BuildRequest

            request = BuildRequest(strategy=args.strategy, k=args.k, force=args.force == "true")
            result = table_pipeline.run(settings, request, beam_argv, run_id=run_id, temp_dir=temp)
        elif args.pipeline == Pipeline.JOIN:
            from shared.pipelines import join_pipeline

            result = join_pipeline.run(settings, beam_argv, run_id=run_id, temp_dir=temp, shards=args.shards)
        else:
            from shared.pipelines import validate_pipeline

            objects = [o.strip() for o in args.objects.split(",") if o.strip()]
            result = validate_pipeline.run(settings, objects, beam_argv, run_id=run_id, temp_dir=temp)
    except ProdMLError as exc:
        print(f"pipeline {args.pipeline}: {exc}", file=sys.stderr)
        return 1
    finally:
        if made_temp:
            shutil.rmtree(temp, ignore_errors=True)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
