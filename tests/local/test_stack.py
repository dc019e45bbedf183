"""``prodml up``: every declared function answers, dropped files fire, the scheduler calls, and
Ctrl-C (or SIGTERM) stops every process it started.

Runs ``prodml up`` as a user would, in a subprocess, over a declaration of tiny test functions
(so it does not depend on the real ones; tests/test_e2e.py runs the real stack).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.errors import ConfigError
from shared.local.functions import load_declaration
from shared.local.processes import free_port
from shared.local.stack import LocalStack, stack_environment

PRODML = str(Path(sys.executable).with_name("prodml"))

HTTP_FUNCTION = """
import json
import os

import functions_framework


@functions_framework.http
def answer(request):
    body = request.get_json(silent=True)
    with open(os.environ["CALLS_FILE"], "a") as f:
        f.write(json.dumps({"body": body}) + "\\n")
    return {"ok": True, "pid": os.getpid(), "greeting": os.environ.get("GREETING")}
"""

EVENT_FUNCTION = """
import json
import os

import functions_framework


@functions_framework.cloud_event
def on_object(event):
    with open(os.environ["EVENTS_FILE"], "a") as f:
        f.write(json.dumps({"subject": event["subject"], "source": event["source"]}) + "\\n")
"""


def write_declaration(folder: Path) -> Path:
    """A declaration like infra/functions.json, of test functions: an HTTP function called by a
    schedule, and an event function subscribed to the data bucket."""
    (folder / "http_fn").mkdir()
    (folder / "http_fn" / "main.py").write_text(textwrap.dedent(HTTP_FUNCTION))
    (folder / "event_fn").mkdir()
    (folder / "event_fn" / "main.py").write_text(textwrap.dedent(EVENT_FUNCTION))
    declaration = {
        "functions": {
            "web": {
                "source": str(folder / "http_fn"),
                "entry_point": "answer",
                "signature": "http",
                "port_setting": "PREDICT_PORT",
            },
            "ingest": {
                "source": str(folder / "event_fn"),
                "entry_point": "on_object",
                "signature": "cloudevent",
                "port_setting": "TRAIN_PORT",
            },
        },
        "triggers": [
            {
                "function": "ingest",
                "bucket": "data",
                "event_type": "google.cloud.storage.object.v1.finalized",
                "retry": True,
            }
        ],
        "schedules": [
            {
                "function": "web",
                "interval_setting": "SCHEDULE_SECONDS",
                "cron": "* * * * *",
                "body": {"go": 1},
            }
        ],
    }
    path = folder / "functions.json"
    path.write_text(json.dumps(declaration))
    return path


def process_gone(pid: int) -> bool:
    """Whether no process (and no process group) with this id is left."""
    try:
        os.killpg(pid, 0)
        return False
    except ProcessLookupError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def up(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``prodml up`` running over the test declaration; stopped (and checked stopped) by the test."""
    declaration = write_declaration(tmp_path)
    state = tmp_path / "state"
    ports = {"PREDICT_PORT": free_port(), "TRAIN_PORT": free_port()}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "SCHEDULE_SECONDS": "1",
        "ROUTER_QUIET_SECONDS": "0.3",
        "CALLS_FILE": str(tmp_path / "calls.jsonl"),
        "EVENTS_FILE": str(tmp_path / "events.jsonl"),
        "LOG_FORMAT": "json",
    }
    command = [PRODML, "up", "--state", str(state), "--declaration", str(declaration)]
    stderr = open(tmp_path / "up.err", "w")  # noqa: SIM115 - closed below; a file never fills up
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C to stop."):
                break
        else:
            pytest.fail(f"prodml up did not start: {''.join(lines)} {(tmp_path / 'up.err').read_text()}")
        yield {"process": process, "state": state, "tmp": tmp_path, "ports": ports, "banner": "".join(lines)}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # only if the test failed before stopping it
            process.wait()
        stderr.close()


def wait_for(path: Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` once it has some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [json.loads(line) for line in path.read_text().splitlines()]
        time.sleep(0.1)
    pytest.fail(f"nothing was written to {path} within {timeout} s")


def test_up_runs_everything_and_sigterm_stops_every_process(up: dict[str, Any]) -> None:
    state_file = up["state"] / "up.json"
    started = json.loads(state_file.read_text())
    web = started["functions"]["web"]
    # the banner says where everything is
    drop = up["state"] / "buckets" / "prodml-data" / "incoming"
    assert f"drop data files into:  {drop}/" in up["banner"]
    assert web["url"] in up["banner"] and started["functions"]["ingest"]["url"] in up["banner"]
    # the HTTP function answers at its declared port, the scheduler calls it with the declared body
    assert web["url"] == f"http://127.0.0.1:{up['ports']['PREDICT_PORT']}"
    assert requests.post(web["url"], json={"hello": 1}, timeout=10).json()["ok"] is True
    calls = wait_for(up["tmp"] / "calls.jsonl")
    deadline = time.monotonic() + 30
    while {"go": 1} not in [c["body"] for c in calls] and time.monotonic() < deadline:
        time.sleep(0.2)
        calls = wait_for(up["tmp"] / "calls.jsonl")
    assert {"go": 1} in [c["body"] for c in calls]
    # a file copied into the drop folder fires the subscribed function
    source = up["tmp"] / "day.csv"
    source.write_text("a,b\n1,2\n")
    subprocess.run(["cp", str(source), str(drop / "day.csv")], check=True)
    [event] = wait_for(up["tmp"] / "events.jsonl")
    assert event == {
        "subject": "objects/incoming/day.csv",
        "source": "//storage.googleapis.com/projects/_/buckets/prodml-data",
    }
    assert (up["state"] / "logs" / "web.log").exists() and (up["state"] / "logs" / "ingest.log").exists()

    process: subprocess.Popen[str] = up["process"]
    process.send_signal(signal.SIGTERM)  # what a process manager sends; Ctrl-C: tests/test_e2e.py
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "stopped: no process left running" in out
    pids = [process.pid, web["pid"], started["functions"]["ingest"]["pid"]]
    assert all(process_gone(pid) for pid in pids)
    assert not state_file.exists()


def test_up_refuses_a_port_in_use_naming_the_setting(tmp_path: Path) -> None:
    declaration = load_declaration(write_declaration(tmp_path))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        env = {**os.environ, "PREDICT_PORT": str(busy), "TRAIN_PORT": str(free_port())}
        stack = LocalStack(state_dir=tmp_path / "state", env=stack_environment(tmp_path / "state", env),
                           declaration=declaration)  # fmt: skip
        with pytest.raises(ConfigError) as refused:
            stack.start()
    assert f"port {busy} of function web is in use" in str(refused.value)
    assert "set PREDICT_PORT to a free port" in str(refused.value)
    assert stack.processes == {}  # nothing was started


def test_the_local_stack_reloads_every_second_unless_told_otherwise(tmp_path: Path) -> None:
    assert stack_environment(tmp_path, base={})["RELOAD_SECONDS"] == "1"
    assert stack_environment(tmp_path, base={"RELOAD_SECONDS": ""})["RELOAD_SECONDS"] == "1"
    assert stack_environment(tmp_path, base={"RELOAD_SECONDS": "7"})["RELOAD_SECONDS"] == "7"


def server_time_wait_sockets(port: int) -> int:
    """How many TCP sockets on 127.0.0.1:``port`` are in TIME-WAIT (what ``ss -tan`` shows)."""
    listed = subprocess.run(
        ["ss", "-tanH", "state", "time-wait", "( sport = :" + str(port) + " )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(f"127.0.0.1:{port} " in line + " " for line in listed.splitlines())


def request_closed_by_server(port: int) -> bytes:
    """One HTTP/1.0 request over a real connection, read until the server closes it: the server
    closes first, so the TIME-WAIT socket is on the server's port (as after real traffic)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST / HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_a_port_freed_by_a_stopped_stack_is_free_at_once_and_a_listener_is_not(tmp_path: Path) -> None:
    declaration = load_declaration(write_declaration(tmp_path))
    port = free_port()
    env = {**os.environ, "PREDICT_PORT": str(port), "TRAIN_PORT": str(free_port())}
    env["CALLS_FILE"] = str(tmp_path / "calls.jsonl")
    first = LocalStack(state_dir=tmp_path / "first", env=stack_environment(tmp_path / "first", env),
                       declaration=declaration, functions=["web"], scheduler=False)  # fmt: skip
    with first:
        for _ in range(3):
            assert b'"ok":true' in request_closed_by_server(port)
    assert server_time_wait_sockets(port) > 0  # what a restart right after Ctrl-C meets

    again = LocalStack(state_dir=tmp_path / "again", env=stack_environment(tmp_path / "again", env),
                       declaration=declaration, functions=["web"], scheduler=False)  # fmt: skip
    with again:  # starts at once: TIME-WAIT sockets are no listener
        assert requests.post(again.urls["web"], json={}, timeout=10).json()["ok"] is True
        # the stack's own listener (SO_REUSEADDR, as every server sets it) is still "in use"
        third = LocalStack(state_dir=tmp_path / "third", env=stack_environment(tmp_path / "third", env),
                           declaration=declaration, functions=["web"], scheduler=False)  # fmt: skip
        with pytest.raises(ConfigError, match=f"port {port} of function web is in use"):
            third.start()
        assert third.processes == {}


@pytest.mark.slow
def test_a_function_killed_with_sigkill_is_started_again(tmp_path: Path) -> None:
    """As the platform replaces a dead instance: the supervisor restarts it on the same port."""
    declaration = load_declaration(write_declaration(tmp_path))
    env = {
        **os.environ,
        "PREDICT_PORT": str(free_port()),
        "TRAIN_PORT": str(free_port()),
        "CALLS_FILE": str(tmp_path / "calls.jsonl"),
        "EVENTS_FILE": str(tmp_path / "events.jsonl"),
    }
    state = tmp_path / "state"
    stack = LocalStack(state_dir=state, env=stack_environment(state, env), declaration=declaration,
                       scheduler=False)  # fmt: skip
    with stack:
        url = stack.urls["web"]
        first = requests.post(url, json={}, timeout=10).json()["pid"]
        killed = stack.processes["web"].process
        assert killed is not None
        os.killpg(killed.pid, signal.SIGKILL)  # the whole instance, as the platform loses it

        deadline = time.monotonic() + 60
        while True:
            try:
                answer = requests.post(url, json={}, timeout=10).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the killed function was not started again"
                time.sleep(0.1)
        assert answer["ok"] is True and answer["pid"] != first
        restarted = json.loads(stack.state_file.read_text())["functions"]["web"]["pid"]
        assert restarted != killed.pid and restarted == stack.processes["web"].process.pid
        assert stack.restarts == {"web": 1}  # the others were left alone
    deadline = time.monotonic() + 30  # killed workers are reaped by init, a moment later
    while not (process_gone(killed.pid) and process_gone(restarted)):
        assert time.monotonic() < deadline, "a process of the killed or the restarted function is left"
        time.sleep(0.1)


@pytest.mark.slow
def test_reconfigure_starts_one_function_again_with_new_settings_and_leaves_the_others(
    tmp_path: Path,
) -> None:
    """As redeploying one function with a changed setting: the demo's shadow chapter runs the
    train function under PROMOTION_POLICY=shadow this way, the other functions untouched."""
    declaration = load_declaration(write_declaration(tmp_path))
    env = {
        **os.environ,
        "PREDICT_PORT": str(free_port()),
        "TRAIN_PORT": str(free_port()),
        "CALLS_FILE": str(tmp_path / "calls.jsonl"),
        "EVENTS_FILE": str(tmp_path / "events.jsonl"),
    }
    env.pop("GREETING", None)
    state = tmp_path / "state"
    stack = LocalStack(state_dir=state, env=stack_environment(state, env), declaration=declaration,
                       scheduler=False)  # fmt: skip
    with stack:
        url = stack.urls["web"]
        before = requests.post(url, json={}, timeout=10).json()
        first, other = stack.processes["web"].process, stack.processes["ingest"].process
        assert before["greeting"] is None and first is not None and other is not None

        stack.reconfigure("web", {"GREETING": "hello"})

        after = requests.post(url, json={}, timeout=10).json()  # it listens again when this returns
        assert after["greeting"] == "hello" and after["pid"] != before["pid"]
        started = stack.processes["web"].process
        assert started is not None and started.pid != first.pid
        named = json.loads(stack.state_file.read_text())["functions"]
        assert named["web"]["pid"] == started.pid and named["ingest"]["pid"] == other.pid
        assert stack.processes["ingest"].process is other and other.poll() is None  # left running
        assert stack.restarts == {}  # a reconfiguration is no crash the supervisor answered
        assert first.poll() is not None  # the old process was stopped, not left beside the new
        with pytest.raises(ConfigError, match="function nope does not run in this stack"):
            stack.reconfigure("nope", {})
    deadline = time.monotonic() + 30  # workers are reaped by init, a moment after their master
    while not all(process_gone(pid) for pid in (first.pid, before["pid"], started.pid, after["pid"])):
        assert time.monotonic() < deadline, "a process of the reconfigured function is left"
        time.sleep(0.1)
