"""The local stack (``prodml up``): every declared function, the file-drop router, the scheduler.

Each function of ``infra/functions.json`` runs as a real functions-framework process on 127.0.0.1
at its declared port (``PREDICT_PORT``, ``TRAIN_PORT``, ...), logging to ``<state>/logs/<name>.log``.
The router turns files dropped into the bucket folders into the CloudEvents Eventarc would send;
the scheduler POSTs each declared schedule's body to its function every interval, as Cloud
Scheduler would. A supervisor starts again a function whose process ended (crashed, or killed
with ``kill -9``), as the platform replaces a dead instance; the router's retries redeliver the
events it was handling. ``stop`` ends all of it: the supervisor, the functions' whole process
groups, the router's threads, the scheduler; nothing is left running.

While it runs, ``<state>/up.json`` names every process (pid and process group) and URL, so tools
and tests can find the stack and check that nothing outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import requests

from shared.config import Settings, load_settings
from shared.errors import ConfigError
from shared.local.functions import Declaration, FunctionSpec, ScheduleSpec, load_declaration
from shared.local.processes import HOST, FunctionProcess, port_in_use
from shared.local.router import Router, routes_from_declaration
from shared.logs import get_logger

log = get_logger(__name__)

STATE_FILE = "up.json"

# Defaults of the local stack where they differ from the cloud's. Predict checks the model's
# generation every RELOAD_SECONDS: a stat of a local file costs nothing, while on GCS each check
# is a billed operation per instance, so the cloud keeps 10 s and a laptop gets 1 s freshness.
LOCAL_DEFAULTS: dict[str, str] = {"RELOAD_SECONDS": "1"}

SUPERVISE_SECONDS = 0.5  # how often the supervisor looks for function processes that ended


def stack_environment(state_dir: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the stack's processes: ``base`` (default ``os.environ``), with the
    buckets, dead letters (and logs) under ``state_dir`` when given, paths made absolute so
    every process agrees whatever its working folder, and ``LOCAL_DEFAULTS`` where unset."""
    env = dict(os.environ if base is None else base)
    for name, value in LOCAL_DEFAULTS.items():
        if not env.get(name, "").strip():
            env[name] = value
    if state_dir is not None:
        env["LOCAL_BUCKETS_ROOT"] = str(state_dir / "buckets")
        env["LOCAL_DEADLETTER_DIR"] = str(state_dir / "deadletter")
    settings = load_settings(env)
    env["LOCAL_BUCKETS_ROOT"] = str(settings.local_buckets_root.resolve())
    env["LOCAL_DEADLETTER_DIR"] = str(settings.local_deadletter_dir.resolve())
    return env


class Scheduler:
    """POSTs a schedule's JSON body to a function every interval (the first call after one interval)."""

    def __init__(self, function: str, url: str, body: Mapping[str, object], interval: float) -> None:
        self.function = function
        self.url = url
        self.body = dict(body)
        self.interval = interval
        self.calls: list[tuple[float, int | None, str]] = []  # (time, status, short answer or error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scheduler-{function}", daemon=True)

    def start(self) -> Scheduler:
        """Start the loop."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop (a call in progress is abandoned, as the stack is going down)."""
        self._stop.set()
        self._thread.join(timeout=2)

    def call(self) -> tuple[int | None, str]:
        """One call now; returns (HTTP status or None, answer or error)."""
        try:
            response = requests.post(self.url, json=self.body, timeout=max(60.0, self.interval))
            outcome: tuple[int | None, str] = (response.status_code, response.text[:300])
        except requests.RequestException as exc:
            outcome = (None, f"{type(exc).__name__}: {exc}")
        self.calls.append((time.time(), *outcome))
        level = log.info if outcome[0] is not None and 200 <= outcome[0] < 300 else log.warning
        level(
            "scheduler called",
            extra={"fields": {"function": self.function, "status": outcome[0], "answer": outcome[1][:200]}},
        )
        return outcome

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.call()


@dataclass
class LocalStack:
    """The functions, router and scheduler of one local deployment. Use as a context manager."""

    state_dir: Path = Path(".local")
    env: dict[str, str] | None = None  # default: stack_environment(state_dir)
    declaration: Declaration = field(default_factory=load_declaration)
    functions: list[str] | None = None  # names to run (default: every declared function)
    scheduler: bool = True
    processes: dict[str, FunctionProcess] = field(default_factory=dict, init=False)
    router: Router | None = field(default=None, init=False)
    schedulers: list[Scheduler] = field(default_factory=list, init=False)
    restarts: dict[str, int] = field(default_factory=dict, init=False)  # by the supervisor, per function

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        if self.env is None:
            self.env = stack_environment(self.state_dir)
        self.settings: Settings = load_settings(self.env)
        names = self.functions if self.functions is not None else list(self.declaration.functions)
        unknown = sorted(set(names) - set(self.declaration.functions))
        if unknown:
            declared = sorted(self.declaration.functions)
            raise ConfigError(f"unknown function(s) {unknown}: declared are {declared}")
        self.specs: list[FunctionSpec] = [self.declaration.functions[name] for name in names]
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        # Held by the supervisor's rounds and by ``reconfigure``: a function stopped on purpose to
        # start again must not look like a crash to the supervisor, which would start it as well.
        self._supervising = threading.Lock()

    # --- where things are ----------------------------------------------------------------------

    @property
    def urls(self) -> dict[str, str]:
        """Base URL of each function."""
        return {spec.name: f"http://{HOST}:{spec.port(self.settings)}" for spec in self.specs}

    @property
    def logs_dir(self) -> Path:
        """Where each function's log goes."""
        return self.state_dir / "logs"

    @property
    def drop_folder(self) -> Path:
        """The folder to drop data files into (the data bucket's ``incoming/``)."""
        return self.settings.local_buckets_root / self.settings.data_bucket / "incoming"

    @property
    def state_file(self) -> Path:
        """The file naming the running stack's processes."""
        return self.state_dir / STATE_FILE

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalStack:
        """Start every function (in parallel), then the router and scheduler. On any failure,
        whatever was started is stopped again and the error names the cause."""
        self._check_ports()
        self.drop_folder.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            main = spec.source / "main.py"
            if not main.is_file():
                raise ConfigError(f"function {spec.name}: {main} is missing")
            self.processes[spec.name] = FunctionProcess(
                spec, spec.port(self.settings), self.env, self.logs_dir / f"{spec.name}.log"
            )
        try:
            with ThreadPoolExecutor(max_workers=len(self.processes) or 1) as pool:
                for future in [pool.submit(p.start, timeout) for p in self.processes.values()]:
                    future.result()
            urls = self.urls
            # Only to the functions running here: a trigger of one left out has nobody to deliver to.
            routes = [
                r
                for r in routes_from_declaration(self.settings, self.declaration, urls)
                if r.function in urls
            ]
            self.router = Router(routes, self.settings)
            self.router.start()
            if self.scheduler:
                for schedule in self.declaration.schedules:
                    if schedule.function in urls:
                        self.schedulers.append(self._scheduler(schedule, urls[schedule.function]).start())
            self._write_state()
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()
        except RuntimeError as exc:  # a function exited on start or never listened
            self.stop()
            raise ConfigError(f"the local stack did not start: {exc}") from None
        except BaseException:
            self.stop()
            raise
        log.info("local stack up", extra={"fields": {"urls": self.urls}})
        return self

    def _supervise(self) -> None:
        """Start again every function whose process ended, until the stack stops."""
        while not self._stopping.wait(SUPERVISE_SECONDS):
            with self._supervising:
                for name, process in self.processes.items():
                    status = process.exited()
                    if status is not None and not self._stopping.is_set():
                        self._restart(name, process, status)

    def reconfigure(self, name: str, settings: Mapping[str, str], timeout: float = 60.0) -> FunctionProcess:
        """Start function ``name`` again with ``settings`` over its environment, as redeploying one
        function with changed settings does; the others run on, untouched. ``up.json`` names the
        new process. Call it while the function is idle: an event it is handling is cut short, and
        only the router's retries deliver it again."""
        process = self.processes.get(name)
        if process is None:
            raise ConfigError(f"function {name} does not run in this stack: {sorted(self.processes)}")
        with self._supervising:
            process.stop()
            process.env.update(settings)
            try:
                process.start(timeout, spawned=lambda _: self._write_state())
            except RuntimeError as exc:  # the supervisor's next round starts it again
                raise ConfigError(
                    f"function {name} did not start again with {dict(settings)}: {exc}"
                ) from None
        fields = {"function": name, "settings": dict(settings)}
        log.info(f"function {name} started again with new settings", extra={"fields": fields})
        return process

    def _restart(self, name: str, process: FunctionProcess, status: int) -> None:
        """Start ``name`` again. The restart is counted and ``up.json`` names the new process as
        soon as it exists, before the wait for it to listen: it can answer at the port before
        that wait notices (the wait polls; under load it lags), and a tool or test that got an
        answer from it must find it in ``up.json``, not the dead one. Each count is one process
        started: one that dies before it listens is started (and counted) again next round."""
        fields = {"function": name, "exit_status": status, "restarts": self.restarts.get(name, 0)}
        log.warning(f"function {name} ended (status {status}); starting it again", extra={"fields": fields})

        def spawned(_: FunctionProcess) -> None:
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._write_state()

        try:
            process.restart(spawned=spawned)
        except RuntimeError as exc:  # it did not come up: the next round tries again
            log.error(f"function {name} did not start again: {exc}", extra={"fields": fields})

    def _scheduler(self, schedule: ScheduleSpec, url: str) -> Scheduler:
        interval = float(getattr(self.settings, schedule.interval_setting.lower()))
        return Scheduler(schedule.function, url, schedule.body, interval)

    def _check_ports(self) -> None:
        """Refuse to start when a port is taken, naming the setting that moves it."""
        for spec in self.specs:
            port = spec.port(self.settings)
            if port_in_use(port):
                raise ConfigError(
                    f"port {port} of function {spec.name} is in use (another `prodml up`?): "
                    f"stop it or set {spec.port_setting} to a free port"
                )

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "functions": {
                name: {"url": p.url, "pid": p.process.pid if p.process else None, "log": str(p.log_path)}
                for name, p in self.processes.items()
            },
            "drop_folder": str(self.drop_folder),
            "buckets_root": str(self.settings.local_buckets_root),
            "deadletter_dir": str(self.settings.local_deadletter_dir),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temp, self.state_file)

    def stop(self) -> None:
        """Stop everything this stack started: supervisor, scheduler, watcher, functions, then
        deliveries (an event in flight fails fast once its function is gone, and is dead-lettered)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for scheduler in self.schedulers:
            scheduler.stop()
        self.schedulers.clear()
        if self.router is not None:
            self.router.watcher.stop()
        with ThreadPoolExecutor(max_workers=len(self.processes) or 1) as pool:
            list(pool.map(lambda p: p.stop(), self.processes.values()))
        if self.router is not None:
            self.router.deliverer.close()
            self.router = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
