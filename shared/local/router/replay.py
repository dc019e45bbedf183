"""Replay: fire the events of data files again, for those the train function has not finished.

After an outage (the stack was down when files landed), a schema fix, or a dead-lettered event,
``replay`` lists the data bucket under a prefix, skips every object version with a "processed"
marker (``ledger.is_processed``) unless asked for all, and delivers the rest through the same
router delivery code as a dropped file (retries, dead letters). It needs the stack running and
says so plainly when the function does not answer.

Without the stack (``--in-process``, and always on Cloud Storage), ``prodml replay`` runs the
train function's code here instead: ``shared.training.replay.replay_in_process``. Both end with
every file still without an outcome, and why (``shared.training.replay.with_unfinished``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from shared.config import Settings
from shared.contracts import INCOMING_PREFIX, ReplayStatus, StorageBackend
from shared.errors import ConfigError
from shared.local.router import Route, Router, routes_from_declaration
from shared.storage import artifacts_bucket, data_bucket
from shared.training.ledger import is_processed
from shared.training.replay import ReplayOutcome, with_unfinished


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
    prefix: str = INCOMING_PREFIX,
    include_processed: bool = False,
    urls: Mapping[str, str] | None = None,
) -> list[ReplayOutcome]:
    """Deliver the event of each data file version under ``prefix`` not yet processed; wait for
    every delivery to end and return the outcome of each object (and each skip)."""
    if settings.storage_backend != StorageBackend.LOCAL:
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
                outcomes.append(ReplayOutcome(info.name, info.generation, ReplayStatus.SKIPPED_PROCESSED))
                continue
            pending.append((info, router.fire(info, again=True)))
        for info, futures in pending:
            for future in futures:
                result = future.result()
                outcomes.append(
                    ReplayOutcome(
                        info.name,
                        info.generation,
                        ReplayStatus.DELIVERED if result.ok else ReplayStatus.DEAD_LETTERED,
                        result.delivery.function,
                        result.attempts,
                        result.error,
                    )
                )
    finally:
        router.stop()
    return with_unfinished(outcomes, data, artifacts, prefix)
