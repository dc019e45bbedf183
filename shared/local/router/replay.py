"""Replay: fire the events of data files again, for those the train function has not finished.

After an outage (the stack was down when files landed), a schema fix, or a dead-lettered event,
``replay`` lists the data bucket under a prefix, skips every object version with a "processed"
marker (``ledger.is_processed``) unless asked for all, and delivers the rest through the same
router delivery code as a dropped file (retries, dead letters). It needs the stack running and
says so plainly when the function does not answer.

``replay_in_process`` needs no stack: it runs, in this process, the very code the train function
runs (``on_event.handle_event``) for each such object. That is how files left in ``incoming/`` on
GCP (no schema yet, a model that would not load) are run again after the fix: Eventarc has
answered their events already and will not send them again. With ``STORAGE_BACKEND=gcs`` it is
the only way, and ``prodml replay`` takes it on its own.

Both end with every file still without an outcome, and why (``monitoring.unprocessed_files``):
a file the function answered but could not finish (``not processed``: no schema, an error), and
a file no object name reaches, which can never fire (``refused``: a line feed in its name, ...).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.config import Settings
from shared.data import monitoring
from shared.errors import ConfigError, ProdMLError
from shared.events import parse_storage_event, to_cloudevent
from shared.local.router import Route, Router, routes_from_declaration
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


def check_answers(route: Route, timeout: float = 2.0) -> None:
    """Raise ``ConfigError`` when nothing listens at the route's URL."""
    parts = urlsplit(route.url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return
    except OSError:
        raise ConfigError(
            f"function {route.function} does not answer at {route.url}: start the local stack first "
            "(`prodml up` or `make up`), then replay; or run the trainer here: `prodml replay --in-process`"
        ) from None


def replay(
    settings: Settings,
    *,
    prefix: str = "incoming/",
    include_processed: bool = False,
    urls: Mapping[str, str] | None = None,
) -> list[ReplayOutcome]:
    """Deliver the event of each data file version under ``prefix`` not yet processed; wait for
    every delivery to end and return the outcome of each object (and each skip)."""
    if settings.storage_backend != "local":
        raise ConfigError(
            "prodml replay through the router needs the local stack (STORAGE_BACKEND=local); "
            "use replay_in_process (`prodml replay --in-process`) on Cloud Storage"
        )
    data, artifacts = data_bucket(settings), artifacts_bucket(settings)
    routes = [r for r in routes_from_declaration(settings, urls=urls) if r.bucket == data.name]
    if not routes:
        raise ConfigError(
            f"no function is subscribed to the data bucket {data.name!r} in infra/functions.json"
        )
    for route in routes:
        check_answers(route)
    router = Router(routes, settings)  # not started: no watching, only its delivery
    outcomes: list[ReplayOutcome] = []
    pending = []
    try:
        for info in data.list(prefix):
            if not include_processed and is_processed(artifacts, data.name, info.name, info.generation):
                outcomes.append(ReplayOutcome(info.name, info.generation, "skipped: processed"))
                continue
            pending.append((info, router.fire(info, again=True)))
        for info, futures in pending:
            for future in futures:
                result = future.result()
                outcomes.append(
                    ReplayOutcome(
                        info.name,
                        info.generation,
                        "delivered" if result.ok else "dead-lettered",
                        result.delivery.function,
                        result.attempts,
                        result.error,
                    )
                )
    finally:
        router.stop()
    return _with_unfinished(outcomes, data, artifacts, prefix)


NOT_PROCESSED = "not processed"  # delivered and answered, but the function could not finish it
REFUSED = "refused"  # a file no object name reaches: it can never fire

# What leaves a file still to be done: the trainer could not finish it (replay it again after a fix).
UNFINISHED = frozenset({"failed", "dead-lettered", "no_schema", "model_error", NOT_PROCESSED, REFUSED})


def _with_unfinished(
    outcomes: list[ReplayOutcome], data: Bucket, artifacts: Bucket, prefix: str
) -> list[ReplayOutcome]:
    """``outcomes``, a delivered file still without an outcome marked ``not processed`` with
    why, and the files that can never fire added as ``refused``."""
    waiting = {
        (r["object"], r["generation"]): r["reason"]
        for r in monitoring.unprocessed_files(data, artifacts, prefix)
    }
    marked = [
        dataclasses.replace(o, outcome=NOT_PROCESSED, error=waiting[(o.name, o.generation)])
        if o.outcome == "delivered" and (o.name, o.generation) in waiting
        else o
        for o in outcomes
    ]
    refused = [
        ReplayOutcome(name, None, REFUSED, error=why) for (name, gen), why in waiting.items() if gen is None
    ]
    return marked + refused


def replay_in_process(
    settings: Settings, *, prefix: str = "incoming/", include_processed: bool = False
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
            outcomes.append(ReplayOutcome(info.name, info.generation, "failed", "in-process", 1, str(exc)))
            continue
        except Exception as exc:  # a bug must not stop the replay of the other files
            log.exception(f"replay of {info.name!r}@{info.generation} failed")
            error = f"{type(exc).__name__}: {exc}"
            outcomes.append(ReplayOutcome(info.name, info.generation, "failed", "in-process", 1, error))
            continue
        error = outcome.message if outcome.status in UNFINISHED else None
        outcomes.append(ReplayOutcome(info.name, info.generation, outcome.status, "in-process", 1, error))
    refused = _with_unfinished([], data, artifacts, prefix)
    return outcomes + refused
