"""Delivering events to functions the way Eventarc does: at least once, with bounded retries.

A ``Deliverer`` keeps a fixed number of worker threads (``ROUTER_MAX_IN_FLIGHT``: how many events
are in flight at once, as a function's instance limit bounds it in the cloud). Each delivery is a
POST of the CloudEvent's headers and body. Any non-2xx answer or connection error is retried
after an exponential backoff with full jitter (a random wait in ``[0, base * 2**(attempt-1)]``,
capped), carrying the same ``ce-id`` every time, up to ``ROUTER_MAX_ATTEMPTS``. A waiting retry
holds no worker, so one failing function cannot starve the others. When the attempts run out the
event goes to a dead-letter record in ``LOCAL_DEADLETTER_DIR``: a JSON file with the headers, the
body, the last error and the attempt times, enough to inspect it and send it again by hand.

The module stays whole at about 320 lines: ``Deliverer``'s queue, workers and retries share one
lock and one state per event.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from shared.logs import get_logger

log = get_logger(__name__)

MAX_BACKOFF_SECONDS = 60.0  # Eventarc's push retries back off up to minutes; locally a minute is plenty
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Delivery:
    """One event for one function: where it goes and what is sent."""

    function: str
    url: str
    headers: dict[str, str]
    body: bytes
    max_attempts: int

    @property
    def event_id(self) -> str:
        """The CloudEvent id (the same on every retry)."""
        return self.headers.get("ce-id", "")

    @property
    def subject(self) -> str:
        """The CloudEvent subject (``objects/<name>``), for logs."""
        return self.headers.get("ce-subject", "")


@dataclass
class DeliveryResult:
    """How a delivery ended: accepted (2xx) or dead-lettered, after how many attempts."""

    delivery: Delivery
    ok: bool
    attempts: int
    status: int | None  # HTTP status of the last attempt, None when it never connected
    error: str | None  # the last error, None when accepted
    first_attempt_at: float  # epoch seconds
    last_attempt_at: float
    finished_at: float
    deadletter_path: Path | None = None


@dataclass
class _State:
    delivery: Delivery
    future: Future[DeliveryResult]
    attempts: int = 0
    status: int | None = None
    error: str | None = None
    first_attempt_at: float = 0.0
    last_attempt_at: float = 0.0
    timer: threading.Timer | None = field(default=None, repr=False)


class Deliverer:
    """Worker threads POSTing events with retries, backoff and dead-lettering."""

    def __init__(
        self,
        *,
        deadletter_dir: Path,
        max_in_flight: int = 4,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 600.0,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.deadletter_dir = Path(deadletter_dir)
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._queue: queue.Queue[_State | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # id() of states not yet finished
        self._states: dict[int, _State] = {}
        self._closed = False
        self._local = threading.local()
        # Daemon threads: a function that hangs must not keep the interpreter alive at exit.
        self._workers = [
            threading.Thread(target=self._work, name=f"router-delivery-{i}", daemon=True)
            for i in range(max_in_flight)
        ]
        for worker in self._workers:
            worker.start()

    # --- public ------------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> Future[DeliveryResult]:
        """Queue ``delivery``; the future resolves when it is accepted or dead-lettered."""
        future: Future[DeliveryResult] = Future()
        state = _State(delivery, future)
        with self._lock:
            if self._closed:
                raise RuntimeError("the deliverer is closed")
            self._pending.add(id(state))
            self._states[id(state)] = state
        self._queue.put(state)
        return future

    @property
    def pending(self) -> int:
        """Deliveries not finished yet (queued, in flight or waiting to retry)."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is pending; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop: no new deliveries, waiting retries are dead-lettered, workers end.

        Attempts in flight finish on their own (stop the functions first and they fail fast);
        whatever is not done within ``timeout`` is dead-lettered as "router stopped", so nothing
        is dropped without a record (``prodml replay`` sends it again).
        """
        with self._lock:
            self._closed = True
            waiting = [s for s in self._states.values() if s.timer is not None]
        for state in waiting:
            assert state.timer is not None
            state.timer.cancel()
            self._give_up(state, "router stopped while the retry was waiting")
        for _ in self._workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftover = list(self._states.values())
        for state in leftover:
            self._give_up(state, "router stopped before the delivery finished")

    # --- internals ---------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _work(self) -> None:
        while True:
            state = self._queue.get()
            if state is None:
                return
            with self._lock:
                if id(state) not in self._pending:
                    continue  # given up while queued
                closed = self._closed
            if closed:
                self._give_up(state, "router stopped before the delivery was attempted")
                continue
            self._attempt(state)

    def _attempt(self, state: _State) -> None:
        delivery = state.delivery
        state.attempts += 1
        state.last_attempt_at = time.time()
        state.first_attempt_at = state.first_attempt_at or state.last_attempt_at
        try:
            response = self._session().post(
                delivery.url, headers=delivery.headers, data=delivery.body, timeout=self.timeout_seconds
            )
            state.status = response.status_code
            if 200 <= response.status_code < 300:
                self._finish(state, ok=True)
                return
            state.error = f"HTTP {response.status_code}: {response.text[:500]}"
        except Exception as exc:  # connection errors and anything else: a worker must outlive any delivery
            state.status = None
            state.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "delivery failed",
            extra={
                "fields": {
                    "function": delivery.function,
                    "subject": delivery.subject,
                    "event_id": delivery.event_id,
                    "attempt": state.attempts,
                    "error": state.error,
                }
            },
        )
        if state.attempts >= delivery.max_attempts:
            self._give_up(state, state.error or "failed")
            return
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (state.attempts - 1))
        delay = random.uniform(0.0, ceiling)  # full jitter: retries of many events spread out
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                state.timer = threading.Timer(delay, self._requeue, args=(state,))
                state.timer.daemon = True
                state.timer.start()
        if closed:
            self._give_up(state, "router stopped before the retry")

    def _requeue(self, state: _State) -> None:
        with self._lock:
            state.timer = None
        self._queue.put(state)

    def _finish(self, state: _State, *, ok: bool, deadletter_path: Path | None = None) -> None:
        with self._lock:
            if id(state) not in self._pending:
                return
            self._pending.discard(id(state))
            self._states.pop(id(state), None)
        result = DeliveryResult(
            delivery=state.delivery,
            ok=ok,
            attempts=state.attempts,
            status=state.status,
            error=None if ok else state.error,
            first_attempt_at=state.first_attempt_at,
            last_attempt_at=state.last_attempt_at,
            finished_at=time.time(),
            deadletter_path=deadletter_path,
        )
        state.future.set_result(result)

    def _give_up(self, state: _State, reason: str) -> None:
        with self._lock:
            if id(state) not in self._pending:
                return
        state.error = state.error or reason
        path = write_deadletter(self.deadletter_dir, state, reason)
        log.error(
            "event dead-lettered",
            extra={
                "fields": {
                    "function": state.delivery.function,
                    "subject": state.delivery.subject,
                    "event_id": state.delivery.event_id,
                    "attempts": state.attempts,
                    "error": state.error,
                    "record": str(path),
                }
            },
        )
        self._finish(state, ok=False, deadletter_path=path)


def _iso(epoch: float) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


def write_deadletter(folder: Path, state: _State, reason: str) -> Path:
    """Write the dead-letter record of ``state`` atomically; return its path."""
    delivery = state.delivery
    try:
        body: object = json.loads(delivery.body)
    except ValueError:
        body = delivery.body.decode("utf-8", errors="replace")
    record = {
        "function": delivery.function,
        "url": delivery.url,
        "headers": delivery.headers,
        "body": body,
        "attempts": state.attempts,
        "max_attempts": delivery.max_attempts,
        "last_status": state.status,
        "last_error": state.error,
        "reason": reason,
        "first_attempt_at": _iso(state.first_attempt_at),
        "last_attempt_at": _iso(state.last_attempt_at),
        "dead_lettered_at": _iso(time.time()),
    }
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    event_id = _SAFE_ID.sub("_", delivery.event_id)[:80] or "no-id"
    path = folder / f"{stamp}-{delivery.function}-{event_id}.json"
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return path
