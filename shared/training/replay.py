"""Replay in process: run the train function's own code here, for each data file it has not finished.

That is how files left in ``incoming/`` on GCP (no schema yet, a model that would not load) are
run again after the fix: Eventarc has answered their events already and will not send them
again. With ``STORAGE_BACKEND=gcs`` it is the only way, and ``prodml replay`` takes it on its own.
``replay_in_process`` needs no stack: it calls ``on_event.handle_event``, so every file goes
through the one promotion path (``shared.training.promotion``). The local router's replay
(``shared.local.router.replay``), which fires the events through the stack instead, shares the
outcomes defined here.

Both end with every file still without an outcome, and why (``monitoring.unprocessed_files``):
a file the function answered but could not finish (``not processed``: no schema, an error), and
a file no object name reaches, which can never fire (``refused``: a line feed in its name, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from shared.config import Settings
from shared.contracts import INCOMING_PREFIX, EventOutcome, ReplayStatus
from shared.data import monitoring
from shared.errors import ProdMLError
from shared.events import parse_storage_event, to_cloudevent
from shared.logs import get_logger
from shared.storage import Bucket, artifacts_bucket, data_bucket
from shared.training import on_event
from shared.training.ledger import is_processed

log = get_logger(__name__)


@dataclass(frozen=True)
class ReplayOutcome:
    """What happened to one object version."""

    name: str  # for a "refused" file, its path in the bucket folder
    generation: int | None  # None for a "refused" file: it is no object
    outcome: str  # "delivered", "dead-lettered", "skipped: processed", "not processed", "refused";
    # in process, the trainer's outcome ("promoted", "quarantined", "no_schema", ...) or "failed"
    function: str | None = None
    attempts: int = 0
    error: str | None = None


# What leaves a file still to be done: the trainer could not finish it (replay it again after a fix).
UNFINISHED = frozenset(
    {
        ReplayStatus.FAILED,
        ReplayStatus.DEAD_LETTERED,
        EventOutcome.NO_SCHEMA,
        EventOutcome.MODEL_ERROR,
        ReplayStatus.NOT_PROCESSED,
        ReplayStatus.REFUSED,
    }
)


def with_unfinished(
    outcomes: list[ReplayOutcome], data: Bucket, artifacts: Bucket, prefix: str
) -> list[ReplayOutcome]:
    """``outcomes``, a delivered file still without an outcome marked ``not processed`` with
    why, and the files that can never fire added as ``refused``."""
    waiting = {
        (r["object"], r["generation"]): r["reason"]
        for r in monitoring.unprocessed_files(data, artifacts, prefix)
    }
    marked = [
        dataclasses.replace(o, outcome=ReplayStatus.NOT_PROCESSED, error=waiting[(o.name, o.generation)])
        if o.outcome == "delivered" and (o.name, o.generation) in waiting
        else o
        for o in outcomes
    ]
    refused = [
        ReplayOutcome(name, None, ReplayStatus.REFUSED, error=why)
        for (name, gen), why in waiting.items()
        if gen is None
    ]
    return marked + refused


def replay_in_process(
    settings: Settings, *, prefix: str = INCOMING_PREFIX, include_processed: bool = False
) -> list[ReplayOutcome]:
    """Run the train function's code (``on_event.handle_event``) here, for each data file version
    under ``prefix`` not yet processed, one after the other; the outcome of each (and each skip).

    A transient fault (an outage, other trainers promoting first) or a bug on one file is
    recorded as ``failed`` with its reason, and the next file is tried: nothing is marked done
    for it, so a later replay runs it again.
    """
    data, artifacts = data_bucket(settings), artifacts_bucket(settings)
    outcomes: list[ReplayOutcome] = []
    for info in list(data.list(prefix)):
        if not include_processed and is_processed(artifacts, data.name, info.name, info.generation):
            outcomes.append(ReplayOutcome(info.name, info.generation, "skipped: processed"))
            continue
        event = parse_storage_event(to_cloudevent(info))
        try:
            outcome = on_event.handle_event(event, settings, data=data, artifacts=artifacts)
        except ProdMLError as exc:
            outcomes.append(
                ReplayOutcome(info.name, info.generation, ReplayStatus.FAILED, "in-process", 1, str(exc))
            )
            continue
        except Exception as exc:  # a bug must not stop the replay of the other files
            log.exception(f"replay of {info.name!r}@{info.generation} failed")
            crash = f"{type(exc).__name__}: {exc}"
            outcomes.append(
                ReplayOutcome(info.name, info.generation, ReplayStatus.FAILED, "in-process", 1, crash)
            )
            continue
        error = outcome.message if outcome.status in UNFINISHED else None
        outcomes.append(ReplayOutcome(info.name, info.generation, outcome.status, "in-process", 1, error))
    refused = with_unfinished([], data, artifacts, prefix)
    return outcomes + refused
