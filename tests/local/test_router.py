"""The file-drop router: finished files fire once, as Eventarc's request, with its retries.

Real functions-framework processes on 127.0.0.1 receive the events; real files are written into
real bucket folders. The test functions (written to a temp folder) record what they are handed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings
from shared.events import parse_storage_event
from shared.local.functions import FunctionSpec
from shared.local.processes import FunctionProcess, free_port
from shared.local.router import Route, Router, is_ignored
from shared.storage.local import LocalBucket

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"

# One function module, four behaviours (MODE): record every event; fail the first two deliveries
# of each event id, then process it; always fail; take half a second. It appends one JSON line per delivery to
# RECORD_FILE, with what functions-framework handed it and the size of the file at that moment.
TEST_FUNCTION = """
import fcntl
import json
import os
import time

import functions_framework

from shared.events import parse_storage_event


def _deliveries_of(event_id, lines):
    return [line for line in lines if line["id"] == event_id]


@functions_framework.cloud_event
def handle(event):
    record_file = os.environ["RECORD_FILE"]
    mode = os.environ["MODE"]
    started = time.time()
    if mode == "slow":
        time.sleep(0.5)
    parsed = parse_storage_event(event)
    path = os.path.join(os.environ["LOCAL_BUCKETS_ROOT"], parsed.bucket, parsed.name)
    with open(record_file + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = []
        if os.path.exists(record_file):
            with open(record_file) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        earlier = _deliveries_of(event["id"], lines)
        fail = mode == "always_fail" or (mode == "fail_twice" and len(earlier) < 2)
        processed = not fail and not any(line["processed"] for line in earlier)
        entry = {
            "id": event["id"],
            "attributes": {k: v for k, v in event.get_attributes().items() if k != "data"},
            "data": event.get_data(),
            "bucket": parsed.bucket,
            "name": parsed.name,
            "generation": parsed.generation,
            "size": parsed.size,
            "size_on_disk": os.path.getsize(path) if os.path.exists(path) else None,
            "processed": processed,
            "started": started,
            "ended": time.time(),
        }
        with open(record_file, "a") as f:
            f.write(json.dumps(entry) + "\\n")
    if fail:
        raise RuntimeError("injected failure: " + mode)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Test functions (record, fail_twice, always_fail, slow) sharing one buckets root."""
    base = tmp_path_factory.mktemp("router")
    source = base / "fn"
    source.mkdir()
    (source / "main.py").write_text(textwrap.dedent(TEST_FUNCTION))
    root = base / "buckets"
    processes: dict[str, FunctionProcess] = {}
    try:
        for mode in ("record", "fail_twice", "always_fail", "slow"):
            spec = FunctionSpec(mode, source, "handle", "cloudevent", "TRAIN_PORT")
            env = {**os.environ, "MODE": mode, "RECORD_FILE": str(base / f"{mode}.jsonl")}
            env["LOCAL_BUCKETS_ROOT"] = str(root)
            processes[mode] = FunctionProcess(spec, free_port(), env, base / f"{mode}.log").start()
        yield {"base": base, "root": root, "processes": processes}
    finally:
        for process in processes.values():
            process.stop()


def settings_for(base: Path, root: Path, **extra: str) -> Settings:
    """Router settings: quick retries, test folders."""
    env = {
        "LOCAL_BUCKETS_ROOT": str(root),
        "LOCAL_DEADLETTER_DIR": str(base / "deadletter"),
        "ROUTER_BACKOFF_SECONDS": "0.05",
        "ROUTER_MAX_ATTEMPTS": "5",
        "ROUTER_QUIET_SECONDS": "0.5",
    }
    env.update(extra)
    return load_settings(env)


@pytest.fixture
def make_router(stack: dict[str, Any]) -> Iterator[Callable[..., Router]]:
    """Start a router routing bucket -> test function (by mode); stopped after the test."""
    routers: list[Router] = []

    def make(routes: dict[str, str], **extra: str) -> Router:
        settings = settings_for(stack["base"], stack["root"], **extra)
        router = Router(
            [Route(bucket, mode, stack["processes"][mode].url) for bucket, mode in routes.items()], settings
        )
        routers.append(router.start())
        return router

    yield make
    for router in routers:
        router.stop()


def records(stack: dict[str, Any], mode: str, bucket: str, name: str) -> list[dict[str, Any]]:
    """What the ``mode`` function was handed for object ``name`` of ``bucket``."""
    path = stack["base"] / f"{mode}.jsonl"
    if not path.exists():
        return []
    # the last line may be half-written while we read: only whole lines count
    lines = [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
    return [line for line in lines if (line["bucket"], line["name"]) == (bucket, name)]


def settle(router: Router) -> None:
    """Wait until the router has nothing settling or in flight (generous: a shared machine)."""
    time.sleep(0.3)  # let the filesystem events of the last write arrive
    assert router.wait_idle(60), "router still busy after 60 s"


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("incoming/day-01.csv", False),
        ("models/current.skops", False),
        ("incoming/.day-01.csv.swx", True),
        (".hidden/day.csv", True),
        ("incoming/day.csv~", True),
        ("incoming/day.csv.tmp", True),
        ("incoming/day.csv.part", True),
        ("incoming/day.csv.swp", True),
        ("incoming/day.csv.crdownload", True),
    ],
)
def test_temp_and_hidden_names_are_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(name) is ignored


def test_a_file_written_slowly_fires_once_when_complete(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"slow-bucket": "record"})
    folder = router.folders["slow-bucket"] / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(256 * 1024)
    with open(folder / "big.csv", "wb") as f:
        for _ in range(6):  # pauses shorter than the quiet period, as a slow copy makes
            f.write(chunk)
            f.flush()
            time.sleep(0.15)
    settle(router)
    seen = records(stack, "record", "slow-bucket", "incoming/big.csv")
    info = LocalBucket(stack["root"], "slow-bucket").stat("incoming/big.csv")
    assert len(seen) == 1
    assert seen[0]["size"] == seen[0]["size_on_disk"] == 6 * len(chunk) == info.size
    assert seen[0]["generation"] == info.generation


def test_temp_files_never_fire_and_their_rename_fires_once(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"temp-bucket": "record"})
    folder = router.folders["temp-bucket"] / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "day.csv.part").write_text("a,b\n1,2\n")
    (folder / ".day.csv.swp").write_text("junk")
    (folder / "notes.txt~").write_text("junk")
    settle(router)
    os.rename(folder / "day.csv.part", folder / "day.csv")
    settle(router)
    for name in ("day.csv.part", ".day.csv.swp", "notes.txt~"):
        assert records(stack, "record", "temp-bucket", f"incoming/{name}") == []
    assert len(records(stack, "record", "temp-bucket", "incoming/day.csv")) == 1


def test_cp_fires_once_and_cp_over_it_fires_the_new_generation(
    stack: dict[str, Any], make_router: Callable[..., Router], tmp_path: Path
) -> None:
    router = make_router({"cp-bucket": "record"})
    source = tmp_path / "day.csv"
    source.write_text("a,b\n" + "1,2\n" * 10_000)
    target = router.folders["cp-bucket"] / "incoming"
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", str(source), str(target / "day.csv")], check=True)
    settle(router)
    source.write_text("a,b\n" + "3,4\n" * 20_000)
    subprocess.run(["cp", str(source), str(target / "day.csv")], check=True)
    settle(router)
    seen = records(stack, "record", "cp-bucket", "incoming/day.csv")
    assert [s["size"] for s in seen] == [len("a,b\n") + 4 * 10_000, len("a,b\n") + 4 * 20_000]
    assert seen[0]["generation"] < seen[1]["generation"]
    # the router does not fire the same generation twice, even when asked
    info = LocalBucket(stack["root"], "cp-bucket").stat("incoming/day.csv")
    assert info.generation == seen[1]["generation"]
    assert router.fire(info) == []


def test_an_atomic_store_write_fires_once_with_its_generation(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"store-bucket": "record"})
    bucket = LocalBucket(stack["root"], "store-bucket")
    generation = bucket.write("models/current.skops", b"x" * 5000)
    settle(router)
    seen = records(stack, "record", "store-bucket", "models/current.skops")
    assert [(s["generation"], s["size"]) for s in seen] == [(generation, 5000)]


def test_a_function_failing_twice_gets_the_event_three_times_and_processes_it_once(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"flaky-bucket": "fail_twice"})
    LocalBucket(stack["root"], "flaky-bucket").write("incoming/day.csv", b"a,b\n1,2\n")
    settle(router)
    seen = records(stack, "fail_twice", "flaky-bucket", "incoming/day.csv")
    assert len(seen) == 3
    assert len({s["id"] for s in seen}) == 1  # a redelivery keeps the event id, like Eventarc
    assert [s["processed"] for s in seen] == [False, False, True]
    [result] = [r for r in router.results if r.delivery.subject == "objects/incoming/day.csv"]
    assert result.ok and result.attempts == 3 and result.deadletter_path is None


def test_an_always_failing_function_ends_in_a_dead_letter_and_others_keep_flowing(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router(
        {"broken-bucket": "always_fail", "healthy-bucket": "record"},
        ROUTER_MAX_ATTEMPTS="4",
        ROUTER_BACKOFF_SECONDS="0.3",
    )
    LocalBucket(stack["root"], "broken-bucket").write("incoming/bad.csv", b"a\n1\n")
    time.sleep(1.0)  # the broken event is now retrying
    LocalBucket(stack["root"], "healthy-bucket").write("incoming/good.csv", b"a\n1\n")
    settle(router)
    assert len(records(stack, "record", "healthy-bucket", "incoming/good.csv")) == 1
    attempts = records(stack, "always_fail", "broken-bucket", "incoming/bad.csv")
    assert len(attempts) == 4
    [failed] = [r for r in router.results if r.delivery.subject == "objects/incoming/bad.csv"]
    assert not failed.ok and failed.deadletter_path is not None
    record = json.loads(failed.deadletter_path.read_text())
    assert failed.deadletter_path.parent == stack["base"] / "deadletter"
    assert record["attempts"] == 4 and record["function"] == "always_fail"
    assert record["headers"]["ce-id"] == attempts[0]["id"]
    assert record["body"]["name"] == "incoming/bad.csv"
    assert "HTTP 500" in record["last_error"]
    assert record["first_attempt_at"] <= record["last_attempt_at"]
    # the record holds what is needed to send the event again: it parses as the same event
    resent = parse_storage_event({**ce_attributes(record["headers"]), "data": record["body"]})
    assert resent.name == "incoming/bad.csv"


def test_a_function_that_does_not_answer_is_retried_then_dead_lettered(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, stack["root"], ROUTER_MAX_ATTEMPTS="2")
    router = Router([Route("nobody-bucket", "nobody", f"http://127.0.0.1:{free_port()}")], settings).start()
    try:
        LocalBucket(stack["root"], "nobody-bucket").write("incoming/x.csv", b"a\n")
        settle(router)
    finally:
        router.stop()
    [result] = router.results
    assert not result.ok and result.attempts == 2 and result.status is None
    assert "ConnectionError" in json.loads(result.deadletter_path.read_text())["last_error"]


def test_events_parse_like_the_real_cloud_storage_payload(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"shape-bucket": "record"})
    LocalBucket(stack["root"], "shape-bucket").write("incoming/batch-0001.csv", b"a,b\n1,2\n")
    settle(router)
    [seen] = records(stack, "record", "shape-bucket", "incoming/batch-0001.csv")
    sample = json.loads((PAYLOADS / "storage-finalized-binary.json").read_text())
    sample_attributes = {k[3:] for k in sample["headers"] if k.startswith("ce-")}
    # functions-framework handed the function the same CloudEvent attributes Eventarc sends
    assert set(seen["attributes"]) >= sample_attributes
    assert seen["attributes"]["type"] == sample["headers"]["ce-type"]
    assert seen["attributes"]["source"] == "//storage.googleapis.com/projects/_/buckets/shape-bucket"
    assert seen["attributes"]["subject"] == "objects/incoming/batch-0001.csv"
    # the data is the storage object resource: the sample's fields (but the checksums, which need
    # the bytes), each of the same JSON type (int64 fields as strings)
    expected = {k: type(v) for k, v in sample["body"].items() if k not in ("md5Hash", "crc32c")}
    assert {k: type(v) for k, v in seen["data"].items()} == expected
    # and both parse to the same fields with the same types
    ours = parse_storage_event({**seen["attributes"], "data": seen["data"]})
    theirs = parse_storage_event({**ce_attributes(sample["headers"]), "data": sample["body"]})
    compared = [f.name for f in dataclasses.fields(ours) if f.name != "md5_hash"]
    assert {f: type(getattr(ours, f)) for f in compared} == {f: type(getattr(theirs, f)) for f in compared}
    assert (ours.name, ours.size, ours.event_id) == ("incoming/batch-0001.csv", 8, seen["id"])


def test_stop_leaves_no_delivery_unrecorded(stack: dict[str, Any], tmp_path: Path) -> None:
    settings = settings_for(tmp_path, stack["root"], ROUTER_MAX_ATTEMPTS="50", ROUTER_BACKOFF_SECONDS="5")
    router = Router([Route("stop-bucket", "always_fail", stack["processes"]["always_fail"].url)], settings)
    router.start()
    LocalBucket(stack["root"], "stop-bucket").write("incoming/late.csv", b"a\n")
    deadline = time.monotonic() + 30
    while (
        not records(stack, "always_fail", "stop-bucket", "incoming/late.csv") and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    router.stop()
    [result] = router.results
    assert not result.ok and "router stopped" in json.loads(result.deadletter_path.read_text())["reason"]


def ce_attributes(headers: dict[str, str]) -> dict[str, str]:
    """CloudEvent attributes from binary-mode ``ce-*`` headers."""
    return {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}


def test_events_are_delivered_concurrently_up_to_the_in_flight_limit(
    stack: dict[str, Any], make_router: Callable[..., Router]
) -> None:
    router = make_router({"busy-bucket": "slow"}, ROUTER_MAX_IN_FLIGHT="2")
    bucket = LocalBucket(stack["root"], "busy-bucket")
    names = [f"incoming/part-{i}.csv" for i in range(5)]
    for name in names:
        bucket.write(name, b"a\n1\n")
    settle(router)
    seen = [records(stack, "slow", "busy-bucket", name) for name in names]
    assert all(len(s) == 1 for s in seen)
    spans = [(s[0]["started"], s[0]["ended"]) for s in seen]
    # the most deliveries running at one moment (at some delivery's start)
    most = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert most == 2
