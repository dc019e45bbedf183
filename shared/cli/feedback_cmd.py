"""``prodml feedback emit``: matured joined rows back into training, now (docs/feedback.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shared.config import get_settings
from shared.display import printable


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml feedback emit``."""
    parser = subparsers.add_parser(
        "feedback",
        help="the feedback loop's actions: emit matured joined rows back into training",
        description="Actions of the feedback loop (the live report is `prodml live`).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    emit = actions.add_parser(
        "emit",
        help="write the matured joined rows never emitted before as a data file into incoming/feedback/",
        description=(
            "Join the prediction log with the labels now and write every matured row (labelled, or "
            "LABEL_DEFAULT past LABEL_WINDOW) that no earlier emission holds as one data file "
            "incoming/feedback/<seq>-<hash>.parquet of the data bucket (features as served, the "
            "label, an id column), recorded under feedback/emitted/: it trains as any data file "
            "does, and its lineage says it came from the loop and which prediction window it covers. "
            "Nothing while fewer than FEEDBACK_MIN_ROWS such rows wait. The train function does the "
            "same after each labels file when FEEDBACK_TRAINING is on; this command emits whatever "
            "that setting says. An emission left unfinished (a crash) is finished first."
        ),
    )
    emit.add_argument("--dry-run", action="store_true", help="say what would be emitted; write nothing")
    emit.add_argument("--json", action="store_true", help="print the result as JSON")
    emit.set_defaults(func=run_emit)


def run_emit(args: argparse.Namespace) -> int:
    """Emit (or, with ``--dry-run``, count) and print what happened."""
    from shared.feedback.emission import emit
    from shared.storage import artifacts_bucket, data_bucket, predictions_bucket

    settings = get_settings()
    result = emit(
        settings,
        data=data_bucket(settings),
        artifacts=artifacts_bucket(settings),
        predictions=predictions_bucket(settings),
        dry_run=args.dry_run,
        by="prodml feedback emit",
    )
    body = result.to_dict()
    print(json.dumps(body, indent=2) if args.json else render(body))
    return 0


def render(result: dict[str, Any]) -> str:
    """The result as lines; names from data escaped for the terminal."""
    lines = [
        f"matured rows: {result['matured']} ({result['emitted_before']} emitted before, "
        f"{result['new_rows']} not yet)"
    ]
    for done in result["finished"]:
        lines.append(f"finished an emission left unfinished: {printable(done['file'])} ({done['rows']} rows)")
    emitted = result["emitted"]
    if emitted is not None:
        window = emitted["window"]
        lines.append(
            f"emitted {emitted['rows']} rows ({emitted['labelled']} labelled, {emitted['defaulted']} "
            f"defaulted), served {window['first']} to {window['last']}, as {printable(emitted['file'])}"
        )
    else:
        lines.append(printable(result["note"]))
    return "\n".join(lines)
