"""Run a function locally as a real functions-framework process on 127.0.0.1.

Used by ``prodml up`` and by the integration tests, so both run the functions the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from shared.local.functions import FunctionSpec

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether a server could not listen on ``port`` of 127.0.0.1 now (something listens there).

    The probe binds with ``SO_REUSEADDR``, as gunicorn and Werkzeug (functions-framework's
    servers) do: without it, the TIME-WAIT sockets a stopped server leaves behind for about a
    minute would make a free port look taken, though the server itself would bind it at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


class FunctionProcess:
    """One ``functions-framework`` process serving one entry point.

    Use as a context manager, or call ``start`` and ``stop``; ``stop`` ends the whole process
    group, so no gunicorn worker is left behind.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        port: int,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.spec = spec
        self.port = port
        self.env = dict(os.environ if env is None else env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None

    @property
    def url(self) -> str:
        """The base URL of the function."""
        return f"http://{HOST}:{self.port}"

    def start(
        self, timeout: float = 30.0, spawned: Callable[[FunctionProcess], None] | None = None
    ) -> FunctionProcess:
        """Start the process and wait until it accepts connections.

        ``spawned`` is called with this object as soon as the process exists (its pid known),
        before the wait: from then on the process may answer at the port at any moment, so
        whatever must name it by then (the stack's state file) is written there, not after.
        """
        command = [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            self.spec.entry_point,
            "--source",
            str(self.spec.source / "main.py"),
            "--signature-type",
            self.spec.signature,
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        output: int | BinaryIO = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            output = self._log_file
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
        if spawned is not None:
            spawned(self)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"function {self.spec.name} exited with {self.process.returncode} on start; "
                    f"log: {self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"function {self.spec.name} did not listen on {self.url} within {timeout} s")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def exited(self) -> int | None:
        """The exit status once the process has ended (negative: killed by that signal), else None."""
        return None if self.process is None else self.process.poll()

    def restart(
        self, timeout: float = 30.0, spawned: Callable[[FunctionProcess], None] | None = None
    ) -> FunctionProcess:
        """Start the function again after its process ended (crashed, killed); ``spawned`` as
        in ``start``.

        Whatever is left of the old process group is killed first: a gunicorn worker orphaned by
        its dead master would otherwise hold the port.
        """
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.stop()
        return self.start(timeout, spawned)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> FunctionProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
