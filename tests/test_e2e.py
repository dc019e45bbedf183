"""End to end, as a user does it: `prodml up`, `cp` a data file into the incoming folder, a new model
version is trained by the real train function and served by the real predict function over HTTP;
`prodml replay` sends what landed while the stack was down.

Everything is real: the `prodml` commands in subprocesses, functions-framework processes on free
loopback ports, files in a temp folder. Small data keeps it quick.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.local.processes import free_port
from shared.local.synth import synthesize
from shared.local.synth_keys import KEY
from shared.storage.local import LocalBucket
from shared.training.ledger import is_processed
from shared.training.registry import list_cards, read_current

PRODML = str(Path(sys.executable).with_name("prodml"))
WAIT = 180.0  # generous: the machine is shared; tests never assert a timing


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `prodml` command as a user would."""
    return subprocess.run([PRODML, *args], env=env, capture_output=True, text=True, timeout=300)


def wait_until(check: Any, what: str) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Synthetic days, a reviewed schema, a first model by `prodml train`, and `prodml up`
    running; day 3 was dropped before the stack started (for replay)."""
    base = tmp_path_factory.mktemp("e2e")
    state = base / "state"
    env = {
        **os.environ,
        "LOCAL_BUCKETS_ROOT": str(state / "buckets"),
        "LOCAL_DEADLETTER_DIR": str(state / "deadletter"),
        "PREDICT_PORT": str(free_port()),
        "TRAIN_PORT": str(free_port()),
        "BUILD_TABLE_PORT": str(free_port()),
        "BUILD_TABLE_EVENT_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "SERVING_MODE": "dynamic",
        "RELOAD_SECONDS": "0.5",
        "ROUTER_QUIET_SECONDS": "0.3",
        "LOG_FORMAT": "json",
        # Fault injection: while this file exists, the train worker SIGKILLs itself mid-work.
        "TRAIN_CRASH_FILE": str(base / "crash-now"),
    }
    days = synthesize(base / "synth", days=3, rows_per_day=800, seed=1).day_files
    inferred = run(
        env, "schema", "infer", str(days[0]), "--label", "converted", "--key", ",".join(KEY), "--upload"
    )
    assert inferred.returncode == 0, inferred.stderr
    trained = run(env, "train", str(days[0]))
    assert trained.returncode == 0, trained.stderr
    artifacts = LocalBucket(state / "buckets", "prodml-artifacts")
    first = read_current(artifacts)
    assert first is not None
    drop = state / "buckets" / "prodml-data" / "incoming"
    subprocess.run(["cp", str(days[2]), str(drop / "late.csv")], check=True)  # lands while the stack is down

    log = open(base / "up.log", "w")  # noqa: SIM115 - closed below
    command = [PRODML, "up", "--state", str(state), "--only", "predict,train"]  # no table builds here
    up = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
    )
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if line.startswith("Ctrl-C to stop."):
                break
        else:
            pytest.fail(f"prodml up did not start: {(base / 'up.log').read_text()[-3000:]}")
        yield {
            "env": env,
            "days": days,
            "drop": drop,
            "artifacts": artifacts,
            "first_version": first.version,
            "predict": f"http://127.0.0.1:{env['PREDICT_PORT']}",
            "crash_file": base / "crash-now",
            "deadletter": state / "deadletter",
        }
        started = json.loads((state / "up.json").read_text())["functions"]
        up.send_signal(signal.SIGINT)  # Ctrl-C
        up.communicate(timeout=60)
        assert up.returncode == 0
        for function in started.values():  # every function's process group is gone
            with pytest.raises(ProcessLookupError):
                os.killpg(function["pid"], 0)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()


def test_a_copied_file_trains_a_new_version_that_predict_serves(stack: dict[str, Any]) -> None:
    subprocess.run(["cp", str(stack["days"][1]), str(stack["drop"] / "day-02.csv")], check=True)

    def new_version() -> str | None:
        current = read_current(stack["artifacts"])
        return current.version if current and current.version != stack["first_version"] else None

    version = wait_until(new_version, "a model trained on the copied file")
    current = read_current(stack["artifacts"])
    assert current is not None
    assert "incoming/day-02.csv" in json.dumps(current.lineage)

    instance = {"country": "us", "device": "mobile", "hour": 20, "ad_category": "travel", "placement": "feed",
                "user_segment": "loyal", "bid": 1.5}  # fmt: skip

    def served() -> dict[str, Any] | None:
        answer = requests.post(stack["predict"], json={"instances": [instance]}, timeout=30)
        body = answer.json()
        return body if answer.status_code == 200 and body.get("model_version") == version else None

    body = wait_until(served, f"predict to serve version {version}")
    [prediction] = body["predictions"]
    assert prediction["source"] == "model"
    assert 0.0 < prediction["score"] < 1.0


def test_a_train_worker_killed_mid_work_is_finished_by_the_routers_redelivery(
    stack: dict[str, Any],
) -> None:
    """kill -9 of the train instance while it holds a file's claim (default TRAIN_CLAIM_SECONDS,
    900 s): the router's retries, seconds later, must take the dead holder's claim over and
    finish the file, not be turned away until the event is dead-lettered."""
    stack["crash_file"].touch()
    subprocess.run(["cp", str(stack["days"][1]), str(stack["drop"] / "crashed.csv")], check=True)
    data = LocalBucket(stack["artifacts"].folder.parent, "prodml-data")

    def processed() -> bool:
        info = data.stat("incoming/crashed.csv")
        return is_processed(stack["artifacts"], "prodml-data", info.name, info.generation)

    def settled() -> bool:
        return processed() or any(stack["deadletter"].glob("*.json"))

    wait_until(settled, "the crashed file to be finished or dead-lettered")
    assert not stack["crash_file"].exists()  # the worker did die mid-work
    assert not list(stack["deadletter"].glob("*.json")), "the crashed holder's event was dead-lettered"
    assert processed()
    cards = [
        c for c in list_cards(stack["artifacts"]) if (c.event or {}).get("name") == "incoming/crashed.csv"
    ]
    assert len(cards) == 1, cards  # the version the dead worker wrote, finished by the redelivery
    current = read_current(stack["artifacts"])
    assert current is not None
    assert [r["name"] for r in current.lineage].count("incoming/crashed.csv") <= 1


def test_replay_sends_what_landed_while_the_stack_was_down(stack: dict[str, Any]) -> None:
    data = LocalBucket(Path(stack["env"]["LOCAL_BUCKETS_ROOT"]), "prodml-data")
    late = data.stat("incoming/late.csv")
    assert not is_processed(stack["artifacts"], "prodml-data", late.name, late.generation)

    replayed = run(stack["env"], "replay", "--json")
    assert replayed.returncode == 0, replayed.stderr
    outcomes = {o["name"]: o for o in json.loads(replayed.stdout)}
    assert outcomes["incoming/late.csv"]["outcome"] == "delivered"
    assert outcomes["incoming/late.csv"]["function"] == "train"
    assert outcomes["incoming/late.csv"]["generation"] == late.generation
    assert all(o["outcome"] == "skipped: processed" for n, o in outcomes.items() if n != "incoming/late.csv")
    assert is_processed(stack["artifacts"], "prodml-data", late.name, late.generation)

    again = json.loads(run(stack["env"], "replay", "--json").stdout)
    assert {o["outcome"] for o in again} == {"skipped: processed"}


def test_replay_without_the_stack_says_to_start_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOCAL_BUCKETS_ROOT": str(tmp_path / "buckets"), "TRAIN_PORT": str(port)}
    result = run(env, "replay")
    assert result.returncode == 1
    assert f"function train does not answer at http://127.0.0.1:{port}" in result.stderr
    assert "prodml up" in result.stderr


def _replay_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run(env, "replay", "--json", *args)
    assert result.stdout, result.stderr
    return result.returncode, {o["name"]: o for o in json.loads(result.stdout)}


def test_replay_in_process_runs_the_trainer_without_the_stack(tmp_path: Path) -> None:
    """A file left in incoming/ (no schema yet) is trained by `prodml replay --in-process` once the
    schema is there; no function process, no router (nothing listens on TRAIN_PORT)."""
    from conftest import drop_file, train_env, training_rows, training_schema

    from shared.schema import save_schema

    root = tmp_path / "buckets"
    env = train_env(root, TRAIN_PORT=str(free_port()), LOG_FORMAT="text")
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    info = drop_file(data, "incoming/early.csv", training_rows(200, 1))

    code, outcomes = _replay_json(env, "--in-process")
    assert code == 1  # still not done: a script sees it
    assert outcomes["incoming/early.csv"]["outcome"] == "no_schema"
    assert "schema.json" in outcomes["incoming/early.csv"]["error"]

    save_schema(artifacts, training_schema("binary"))
    code, outcomes = _replay_json(env, "--in-process")
    assert code == 0
    assert outcomes["incoming/early.csv"]["outcome"] == "promoted"
    assert is_processed(artifacts, "prodml-data", info.name, info.generation)
    assert read_current(artifacts) is not None

    code, outcomes = _replay_json(env, "--in-process")
    assert (code, outcomes["incoming/early.csv"]["outcome"]) == (0, "skipped: processed")


def test_replay_on_cloud_storage_runs_in_process_by_itself(tmp_path: Path, gcs_client: Any) -> None:
    """STORAGE_BACKEND=gcs: no local stack exists to send events to; replay trains in process."""
    import uuid

    from conftest import drop_file, training_rows, training_schema

    from shared.schema import save_schema
    from shared.storage.gcs import GCSBucket

    suffix = uuid.uuid4().hex[:8]
    data = GCSBucket(gcs_client, gcs_client.create_bucket(f"data-{suffix}").name)
    artifacts = GCSBucket(gcs_client, gcs_client.create_bucket(f"artifacts-{suffix}").name)
    save_schema(artifacts, training_schema("binary"))
    info = drop_file(data, "incoming/late.csv", training_rows(200, 2))
    env = {
        **os.environ,
        "STORAGE_BACKEND": "gcs",
        "DATA_BUCKET": data.name,
        "ARTIFACTS_BUCKET": artifacts.name,
        "GOOGLE_CLOUD_PROJECT": "test",
        "LOG_FORMAT": "text",
    }

    code, outcomes = _replay_json(env)
    assert code == 0, outcomes
    assert outcomes["incoming/late.csv"]["outcome"] == "promoted"
    assert is_processed(artifacts, data.name, info.name, info.generation)
