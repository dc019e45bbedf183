"""The soak: the local stack under load and faults together (``make soak``, ``python -m bench.soak``).

For ``SOAK_SECONDS`` (default 180) the real local stack (every function as a functions-framework
process, the file-drop router, the scheduler, the supervisor) runs, starting with a schema and no
model, while at once:

- several clients send Zipf traffic to predict, each recording the ``model_version`` of every
  answer in order (a connection cut by a kill is retried, as a client library does, and counted);
- data files are copied into ``incoming/`` at a steady rate, every ``bad_every``-th one bad (junk
  values, a missing label column, bytes that are no table, an empty file);
- some file events are delivered again, while the first delivery may still be running or later;
- a function process (train most often, predict, build_table_event) is killed with SIGKILL at
  random moments, and the stack's supervisor starts it again.

Then the files settle (the router's retries redeliver what a kill interrupted; files still without
an outcome after ``settle_seconds`` are replayed once, as ``prodml replay`` would) and the soak
checks and prints the invariants:

- requests failed: 0 (a 503 is allowed only for requests sent before the first model answered);
- files lost (no outcome): 0; every good file has its "done" marker and, when its model was
  promoted, is counted exactly once in the current model's lineage; every bad file is quarantined
  with a reason;
- one promotion per promoted file; served versions only move forward for each client, in the
  order of the swap records (no rollback happens here);
- the current model loads, is the last one promoted, and the current table (if any) loads.

The exit status is 1 when an invariant fails. Everything binds 127.0.0.1, every loop is bounded
by the duration or a timeout, and everything the soak started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from shared.contracts import INCOMING_PREFIX, EventOutcome, LogFormat, ServingMode
from shared.data import monitoring
from shared.data.quarantine import list_quarantine
from shared.errors import NotFound, ProdMLError
from shared.local.processes import free_port
from shared.local.stack import LocalStack, stack_environment
from shared.local.synth import LABEL, corrupt_frame, day_frame, synth_schema, traffic_instances
from shared.logs import setup_logging
from shared.schema import save_schema
from shared.storage.base import ObjectInfo
from shared.storage.local import LocalBucket
from shared.tables.format import load_current_table
from shared.training import ledger, registry
from shared.training.ledger import file_key

DEFAULT_SECONDS = 180.0
ANSWER_WITHIN = 60.0  # a client retries a cut connection this long (a kill, a restart) before failing
BAD_KINDS = ("junk-values", "no-label", "not-a-table", "empty")
# The outcomes a good file may end in (shared.training.on_event.handle_event), and the bad file's one.
GOOD_OUTCOMES = frozenset({EventOutcome.PROMOTED, EventOutcome.REJECTED, EventOutcome.ALREADY_TRAINED})
IN_LINEAGE = frozenset({EventOutcome.PROMOTED, EventOutcome.ALREADY_TRAINED})
# Who gets killed: train most often (its events must survive it), and the others.
VICTIMS = ("train", "train", "predict", "build_table_event")


@dataclass(frozen=True)
class SoakConfig:
    """How long and how hard the soak pushes."""

    seconds: float = DEFAULT_SECONDS
    clients: int = 4
    drop_every: float = 3.0  # seconds between two dropped files
    bad_every: int = 5  # every n-th file is bad
    duplicate_share: float = 0.3  # files whose event is delivered once more
    kill_every: float = 10.0  # mean seconds between two kills
    rows_per_file: int = 1500
    settle_seconds: float = 300.0
    seed: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SoakConfig:
        """The defaults, with ``SOAK_SECONDS`` from the environment."""
        env = os.environ if env is None else env
        raw = env.get("SOAK_SECONDS", "").strip()
        return cls(seconds=float(raw)) if raw else cls()


@dataclass(frozen=True)
class DroppedFile:
    """One data file of the soak: where it came from, what it should come to."""

    name: str  # object name under incoming/
    source: Path
    kind: str  # "good" or one of BAD_KINDS

    @property
    def good(self) -> bool:
        """Whether the file is valid data (it must be trained, not quarantined)."""
        return self.kind == "good"


def plan_files(config: SoakConfig, folder: Path) -> list[DroppedFile]:
    """Write the files the soak drops (enough for its duration) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    count = int(config.seconds / config.drop_every) + 1
    planned = []
    for i in range(1, count + 1):
        kind = BAD_KINDS[(i // config.bad_every) % len(BAD_KINDS)] if i % config.bad_every == 0 else "good"
        path = folder / f"{i:04d}-{kind}.csv"
        _write_file(path, kind, config, i)
        planned.append(DroppedFile(f"{INCOMING_PREFIX}{path.name}", path, kind))
    return planned


def _write_file(path: Path, kind: str, config: SoakConfig, day: int) -> None:
    rows = config.rows_per_file
    if kind == "good":
        day_frame(config.seed, day, rows).to_csv(path, index=False)
    elif kind == "junk-values":
        corrupt_frame(config.seed + day, rows).to_csv(path, index=False)
    elif kind == "no-label":
        day_frame(config.seed, day, rows).drop(columns=[LABEL]).to_csv(path, index=False)
    elif kind == "not-a-table":
        path.write_bytes(random.Random(day).randbytes(4096))
    else:
        path.write_bytes(b"")


# --- traffic -------------------------------------------------------------------------------------


@dataclass
class ClientLog:
    """What one client saw, in order."""

    versions: list[str] = field(default_factory=list)  # model_version of each 200, in order
    counts: Counter[str] = field(default_factory=Counter)
    unavailable_sent_at: list[float] = field(default_factory=list)  # 503s: when their request left
    first_ok_at: float | None = None
    failures: list[str] = field(default_factory=list)


class TrafficClient(threading.Thread):
    """Sends batches of Zipf-distributed instances to predict until stopped."""

    def __init__(
        self, url: str, instances: list[dict[str, object]], seed: int, stop: threading.Event
    ) -> None:
        super().__init__(name=f"soak-client-{seed}", daemon=True)
        self.url = url
        self.instances = instances
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.log = ClientLog()

    def run(self) -> None:
        """Ask, record, pause a little; until the soak stops."""
        with requests.Session() as session:
            while not self.stop_event.is_set():
                self._ask(session, self.rng.sample(self.instances, self.rng.randint(1, 16)))
                self.stop_event.wait(self.rng.uniform(0.01, 0.05))

    def _ask(self, session: requests.Session, batch: list[dict[str, object]]) -> None:
        body = json.dumps({"instances": batch})
        deadline = time.monotonic() + ANSWER_WITHIN
        interrupted = False
        while True:
            sent_at = time.time()
            try:
                answer = session.post(
                    self.url, data=body, headers={"Content-Type": "application/json"}, timeout=30
                )
                break
            except requests.RequestException as exc:  # a killed instance: retried, as a client would
                interrupted = True
                if time.monotonic() > deadline:
                    self._fail(f"no answer within {ANSWER_WITHIN:g} s: {type(exc).__name__}")
                    return
                time.sleep(0.1)
        self.log.counts["sent"] += 1
        if interrupted:
            self.log.counts["cut by a kill, answered on retry"] += 1
        self._record(answer, len(batch), sent_at)

    def _record(self, answer: requests.Response, asked: int, sent_at: float) -> None:
        if answer.status_code == 503:
            self.log.unavailable_sent_at.append(sent_at)
            return
        if answer.status_code != 200:
            self._fail(f"HTTP {answer.status_code}: {answer.text[:200]}")
            return
        body = answer.json()
        predictions = body.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != asked or not body.get("model_version"):
            self._fail(f"malformed answer to {asked} instances: {answer.text[:200]}")
            return
        self.log.counts["ok"] += 1
        self.log.first_ok_at = self.log.first_ok_at or time.time()
        self.log.versions.append(str(body["model_version"]))

    def _fail(self, why: str) -> None:
        self.log.counts["sent"] += 1
        self.log.counts["failed"] += 1
        if len(self.log.failures) < 20:
            self.log.failures.append(why)


# --- faults --------------------------------------------------------------------------------------


class Killer(threading.Thread):
    """SIGKILLs a function's whole process group at random moments (the supervisor restarts it)."""

    def __init__(self, stack: LocalStack, mean_seconds: float, seed: int, stop: threading.Event) -> None:
        super().__init__(name="soak-killer", daemon=True)
        self.stack = stack
        self.mean = mean_seconds
        self.rng = random.Random(seed)
        self.stop_event = stop
        self.kills: Counter[str] = Counter()

    def run(self) -> None:
        """Wait a random while, kill one live function, again; until stopped."""
        while not self.stop_event.wait(self.rng.uniform(0.5 * self.mean, 1.5 * self.mean)):
            victim = self.rng.choice([v for v in VICTIMS if v in self.stack.processes])
            process = self.stack.processes[victim]
            if process.process is None or process.exited() is not None:
                continue  # still being started again
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGKILL)
                self.kills[victim] += 1


class Dropper(threading.Thread):
    """Copies the planned files into incoming/ at a steady rate; fires some events once more."""

    def __init__(
        self, stack: LocalStack, files: list[DroppedFile], config: SoakConfig, stop: threading.Event
    ) -> None:
        super().__init__(name="soak-dropper", daemon=True)
        self.stack = stack
        self.files = files
        self.config = config
        self.rng = random.Random(config.seed + 1)
        self.stop_event = stop
        self.data = LocalBucket(stack.settings.local_buckets_root, stack.settings.data_bucket)
        self.dropped: list[tuple[DroppedFile, ObjectInfo]] = []
        self.duplicates = 0
        self._again: list[tuple[float, ObjectInfo]] = []

    def run(self) -> None:
        """Drop one file every ``drop_every`` seconds while the soak runs; deliver duplicates."""
        started = time.monotonic()
        for index, planned in enumerate(self.files):
            due = started + index * self.config.drop_every
            while time.monotonic() < due:
                self._fire_due_duplicates()
                if self.stop_event.wait(min(0.1, max(0.0, due - time.monotonic()))):
                    return
            if self.stop_event.is_set():
                return
            self._drop(planned)
        while self._again and not self.stop_event.wait(0.1):
            self._fire_due_duplicates()

    def _drop(self, planned: DroppedFile) -> None:
        target = self.stack.drop_folder / planned.name.removeprefix(INCOMING_PREFIX)
        shutil.copyfile(planned.source, target)  # what `cp` does: the router waits for it to settle
        info = self.data.stat(planned.name)  # the finished file's generation
        self.dropped.append((planned, info))
        if self.rng.random() < self.config.duplicate_share:
            # Soon after the router's own delivery (maybe while it runs) or a few seconds later.
            self._again.append((time.monotonic() + self.rng.uniform(0.3, 4.0), info))

    def _fire_due_duplicates(self) -> None:
        now = time.monotonic()
        due = [item for item in self._again if item[0] <= now]
        self._again = [item for item in self._again if item[0] > now]
        for _, info in due:
            if self.stack.router is not None:
                self.stack.router.fire(info, again=True)  # the same object version, a new event id
                self.duplicates += 1


# --- the outcome of every file ------------------------------------------------------------------


@dataclass
class FileOutcomes:
    """What became of the dropped files."""

    outcome: dict[str, str] = field(default_factory=dict)  # file key -> marker outcome ("" = none)
    reason: dict[str, str] = field(default_factory=dict)  # file key -> quarantine rule
    errors: dict[str, str] = field(default_factory=dict)  # file key -> recorded error message

    def missing(self, dropped: list[tuple[DroppedFile, ObjectInfo]]) -> list[tuple[DroppedFile, ObjectInfo]]:
        """The dropped files with no outcome yet."""
        return [(f, i) for f, i in dropped if not self.outcome.get(_key(i))]


def _key(info: ObjectInfo) -> str:
    return file_key(info.bucket, info.name, info.generation)


def collect_outcomes(
    artifacts: LocalBucket, data: LocalBucket, dropped: list[tuple[DroppedFile, ObjectInfo]]
) -> FileOutcomes:
    """Read each dropped file's marker, quarantine reason and error record."""
    found = FileOutcomes()
    reasons = {(r.get("object"), r.get("generation")): str(r.get("rule")) for r in list_quarantine(data)}
    for _, info in dropped:
        key = _key(info)
        marker = ledger.read_processed(artifacts, info.bucket, info.name, info.generation)
        found.outcome[key] = str(marker.get("outcome", "")) if marker else ""
        if (info.name, info.generation) in reasons:
            found.reason[key] = reasons[(info.name, info.generation)]
        record = _monitoring_record(artifacts, info)
        if record.get("decision") == "error":
            found.errors[key] = str(record.get("message", ""))
    return found


def _monitoring_record(artifacts: LocalBucket, info: ObjectInfo) -> dict[str, Any]:
    try:
        record = json.loads(artifacts.read(monitoring.record_name(info.name, info.generation)))
    except (NotFound, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# --- the run ------------------------------------------------------------------------------------


@dataclass
class SoakReport:
    """The figures of one soak and the invariants that failed (none: it passed)."""

    config: SoakConfig
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every invariant held."""
        return not self.failures


def soak_environment(state: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stack's environment: free loopback ports, quick reloads and retries, hybrid serving."""
    env = stack_environment(state, base)
    env.update(
        {
            "PREDICT_PORT": str(free_port()),
            "TRAIN_PORT": str(free_port()),
            "BUILD_TABLE_PORT": str(free_port()),
            "BUILD_TABLE_EVENT_PORT": str(free_port()),
            "DASHBOARD_PORT": str(free_port()),
            "SERVING_MODE": ServingMode.HYBRID,
            "RELOAD_SECONDS": "0.5",
            "ROUTER_QUIET_SECONDS": "0.3",
            # A killed train instance takes a few seconds to come back: enough attempts to outlast it.
            "ROUTER_MAX_ATTEMPTS": "12",
            "ROUTER_BACKOFF_SECONDS": "0.5",
            "SCHEDULE_SECONDS": "20",
            "TRAFFIC_FLUSH_SECONDS": "5",
            "TRAINING_WINDOW_ROWS": "30000",
            "LOG_FORMAT": LogFormat.JSON,
        }
    )
    return env


def run_soak(config: SoakConfig, state: Path, base_env: Mapping[str, str] | None = None) -> SoakReport:
    """Run the soak with its stack under ``state`` (emptied first); return its report."""
    shutil.rmtree(state, ignore_errors=True)
    (state / "logs").mkdir(parents=True)
    files = plan_files(config, state / "files")
    stack = LocalStack(state_dir=state, env=soak_environment(state, base_env))
    artifacts = LocalBucket(stack.settings.local_buckets_root, stack.settings.artifacts_bucket)
    save_schema(artifacts, synth_schema())
    stop_load, stop_faults = threading.Event(), threading.Event()
    with open(state / "logs" / "soak.log", "a") as log_file, stack:
        setup_logging(
            LogFormat.JSON, "info", stream=log_file
        )  # the router's logs: not the summary's terminal
        clients = [
            TrafficClient(stack.urls["predict"], traffic_instances(config.seed + n, 500), n, stop_load)
            for n in range(config.clients)
        ]
        killer = Killer(stack, config.kill_every, config.seed + 2, stop_faults)
        dropper = Dropper(stack, files, config, stop_faults)
        started = time.monotonic()
        for thread in (*clients, killer, dropper):
            thread.start()
        stop_faults.wait(config.seconds)
        stop_faults.set()
        killer.join()
        dropper.join()
        loaded_seconds = time.monotonic() - started
        data = LocalBucket(stack.settings.local_buckets_root, stack.settings.data_bucket)
        outcomes, replayed, settle = _settle(stack, artifacts, data, dropper.dropped, config.settle_seconds)
        stop_load.set()
        for client in clients:
            client.join(timeout=ANSWER_WITHIN + 35)
        restarts = dict(stack.restarts)
    report = SoakReport(config)
    report.figures.update(
        {"seconds under load": round(loaded_seconds, 1), "seconds to settle": round(settle, 1)}
    )
    _check_requests(report, [c.log for c in clients])
    _check_files(report, dropper, outcomes, replayed)
    _check_models(report, artifacts, dropper.dropped, outcomes, [c.log for c in clients])
    report.figures["kills"] = dict(killer.kills)
    report.figures["restarts by the supervisor"] = restarts
    return report


def _settle(
    stack: LocalStack,
    artifacts: LocalBucket,
    data: LocalBucket,
    dropped: list[tuple[DroppedFile, ObjectInfo]],
    timeout: float,
) -> tuple[FileOutcomes, int, float]:
    """Wait until every dropped file has an outcome; replay what still has none, once, as
    ``prodml replay`` would. Returns the outcomes, how many were replayed, and the seconds spent."""
    started = time.monotonic()
    outcomes = _wait_for_outcomes(stack, artifacts, data, dropped, started + timeout)
    left = outcomes.missing(dropped)
    if left and stack.router is not None:
        for _, info in left:
            stack.router.fire(info, again=True)
        outcomes = _wait_for_outcomes(stack, artifacts, data, dropped, time.monotonic() + timeout / 2)
    return outcomes, len(left), time.monotonic() - started


def _wait_for_outcomes(
    stack: LocalStack,
    artifacts: LocalBucket,
    data: LocalBucket,
    dropped: list[tuple[DroppedFile, ObjectInfo]],
    deadline: float,
) -> FileOutcomes:
    while True:
        outcomes = collect_outcomes(artifacts, data, dropped)
        idle = stack.router is None or (
            not stack.router.watcher.settling and not stack.router.deliverer.pending
        )
        if (idle and not outcomes.missing(dropped)) or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.5)


# --- the checks ---------------------------------------------------------------------------------


def _check_requests(report: SoakReport, logs: list[ClientLog]) -> None:
    counts: Counter[str] = Counter()
    for log in logs:
        counts.update(log.counts)
    oks = [log.first_ok_at for log in logs if log.first_ok_at is not None]
    first_ok = min(oks) if oks else float("inf")
    early = sum(1 for log in logs for sent in log.unavailable_sent_at if sent < first_ok)
    late = sum(1 for log in logs for sent in log.unavailable_sent_at if sent >= first_ok)
    failed = counts["failed"] + late
    report.figures.update(
        {
            "requests sent": counts["sent"],
            "requests answered 200": counts["ok"],
            "requests 503 before the first model": early,
            "requests cut by a kill, answered on retry": counts["cut by a kill, answered on retry"],
            "requests failed": failed,
        }
    )
    if failed:
        details = [why for log in logs for why in log.failures][:5]
        report.failures.append(f"{failed} requests failed ({late} were 503 after a model served): {details}")
    if not counts["ok"]:
        report.failures.append("no request was answered by a model")


def check_forward(report: SoakReport, logs: list[ClientLog], promoted_in_order: list[str]) -> None:
    """Each client's served versions never go back in promotion order (the order of the swap
    records, exact even where two version ids fall in the same second)."""
    rank = {version: n for n, version in enumerate(promoted_in_order)}
    forward = True
    for n, log in enumerate(logs):
        unknown = sorted(set(log.versions) - set(rank))
        if unknown:
            report.failures.append(f"client {n} was served versions never promoted: {unknown[:3]}")
        ranks = [rank.get(v, -1) for v in log.versions]
        back = [
            (log.versions[i], log.versions[i + 1]) for i in range(len(ranks) - 1) if ranks[i + 1] < ranks[i]
        ]
        if back:
            forward = False
            report.failures.append(f"client {n} was served an older version after a newer one: {back[:3]}")
    report.figures["served versions only move forward"] = forward


def _check_files(report: SoakReport, dropper: Dropper, outcomes: FileOutcomes, replayed: int) -> None:
    good = [(f, i) for f, i in dropper.dropped if f.good]
    bad = [(f, i) for f, i in dropper.dropped if not f.good]
    lost = outcomes.missing(dropper.dropped)
    unquarantined = [
        f.name
        for f, i in bad
        if outcomes.outcome.get(_key(i)) != EventOutcome.QUARANTINED or _key(i) not in outcomes.reason
    ]
    wrong = [
        f"{f.name}: {outcomes.outcome[_key(i)]}"
        for f, i in good
        if outcomes.outcome.get(_key(i)) and outcomes.outcome[_key(i)] not in GOOD_OUTCOMES
    ]
    report.figures.update(
        {
            "files dropped": len(dropper.dropped),
            "good files": len(good),
            "bad files": len(bad),
            "duplicate deliveries fired": dropper.duplicates,
            "files replayed after the settle wait": replayed,
            "bad files quarantined with a reason": len(bad) - len(unquarantined),
            "files lost": len(lost),
            "files with a recorded error": len(outcomes.errors),
            "outcomes": dict(Counter(o or "none" for o in outcomes.outcome.values())),
        }
    )
    if lost:
        report.failures.append(f"{len(lost)} files have no outcome: {[f.name for f, _ in lost][:5]}")
    if unquarantined:
        report.failures.append(f"bad files not quarantined with a reason: {unquarantined[:5]}")
    if wrong:
        report.failures.append(f"good files with an unexpected outcome: {wrong[:5]}")
    if outcomes.errors:
        report.failures.append(f"files that ended in an error: {list(outcomes.errors.items())[:3]}")


def _check_models(
    report: SoakReport,
    artifacts: LocalBucket,
    dropped: list[tuple[DroppedFile, ObjectInfo]],
    outcomes: FileOutcomes,
    logs: list[ClientLog],
) -> None:
    events = registry.list_events(artifacts)
    promotions = [e for e in events if e.get("kind") == "promote"]
    report.figures["versions promoted"] = len(promotions)
    check_forward(report, logs, [e["version"] for e in promotions])
    try:
        current = registry.read_current(artifacts)
    except ProdMLError as exc:
        report.failures.append(f"the current model does not load: {exc}")
        return
    if current is None:
        report.failures.append("no model was promoted")
        return
    counted = Counter(file_key(r["bucket"], r["name"], r["generation"]) for r in current.lineage)
    check_exactly_once(report, dropped, outcomes, counted, promotions)
    if promotions and current.version != promotions[-1]["version"]:
        report.failures.append(
            f"current model {current.version} is not the last promoted {promotions[-1]['version']}"
        )
    last_served = {log.versions[-1] for log in logs if log.versions}
    report.figures["current model"] = current.version
    report.figures["last versions served"] = sorted(last_served)
    _check_table(report, artifacts, {e["version"] for e in promotions})


def check_exactly_once(
    report: SoakReport,
    dropped: list[tuple[DroppedFile, ObjectInfo]],
    outcomes: FileOutcomes,
    counted: Counter[str],
    promotions: list[dict[str, Any]],
) -> None:
    keys = {_key(i): f for f, i in dropped}
    twice = [k for k, n in counted.items() if n > 1]
    missing = [
        k for k, f in keys.items() if f.good and outcomes.outcome.get(k) in IN_LINEAGE and not counted[k]
    ]
    stray = [k for k, f in keys.items() if counted[k] and outcomes.outcome.get(k) not in IN_LINEAGE]
    promoted_files = sum(1 for k in keys if outcomes.outcome.get(k) == EventOutcome.PROMOTED)
    report.figures["good files counted once in the current lineage"] = sum(
        1 for k, f in keys.items() if f.good and counted[k] == 1
    )
    if twice:
        report.failures.append(f"files counted more than once in the current model's lineage: {twice[:5]}")
    if missing:
        report.failures.append(f"trained files missing from the current model's lineage: {missing[:5]}")
    if stray:
        report.failures.append(f"files in the lineage whose outcome says otherwise: {stray[:5]}")
    if len(promotions) != promoted_files:
        report.failures.append(
            f"{len(promotions)} promotions for {promoted_files} files whose outcome is 'promoted'"
        )


def _check_table(report: SoakReport, artifacts: LocalBucket, promoted: set[str]) -> None:
    try:
        table = load_current_table(artifacts)
    except ProdMLError as exc:
        report.failures.append(f"the current table does not load: {exc}")
        return
    report.figures["current table"] = f"{table.version} ({len(table.codes)} keys)" if table else "none"
    if table is not None and table.model_version not in promoted:
        report.failures.append(f"the current table was built from {table.model_version}, never promoted")


# --- the command --------------------------------------------------------------------------------


def render(report: SoakReport) -> str:
    """The summary table, then PASS or the failed invariants."""
    width = max(len(name) for name in report.figures)
    lines = [f"soak of {report.config.seconds:g} s, {report.config.clients} clients"]
    lines += [f"  {name:<{width}}  {value}" for name, value in report.figures.items()]
    if report.ok:
        lines.append("PASS: every invariant held")
    else:
        lines += ["FAIL:"] + [f"  - {failure}" for failure in report.failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.soak [--state DIR] [--json]``; exit 1 when an invariant fails."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state", type=Path, default=None, help="where the stack lives (default: a temp folder)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    config = SoakConfig.from_env()
    with tempfile.TemporaryDirectory(prefix="prodml-soak-") as temp:
        state = args.state.resolve() if args.state else Path(temp) / "state"
        print(f"soak: {config.seconds:g} s, stack under {state}", file=sys.stderr, flush=True)
        report = run_soak(config, state)
    if args.json:
        print(json.dumps({"figures": report.figures, "failures": report.failures}, indent=2, default=str))
    else:
        print(render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
