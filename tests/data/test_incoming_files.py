"""Files dropped into incoming/, end to end: every one ends with an outcome a user can see.

Long names GCS takes reach the train function through the file-drop router, are processed and
show in ``prodml monitor``; a bad one is quarantined with its reason. A file that cannot fire
(a line feed in its name) or cannot finish (no schema, a quarantine that cannot be written) is
listed by ``prodml replay`` and ``prodml monitor`` with why. A real train function process, a
real router watching real folders, real ``cp``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import train_env, training_rows, training_schema

from shared.cli import main
from shared.config import get_settings, load_settings
from shared.data.quarantine import list_quarantine
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.local.router import Route, Router
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.storage.names import MAX_NAME_BYTES
from shared.training import ledger

pytestmark = pytest.mark.slow

DATA = "prodml-data"
NAME_240 = "incoming/" + "d" * 227 + ".csv"  # 240 bytes: fits a file name, its derived names do not
NAME_CJK = "incoming/" + "売上データ" * 16 + ".csv"  # 80 CJK characters, 244 bytes
NAME_1024 = "incoming/" + "g" * 1011 + ".csv"  # GCS's longest; only an upload can make it locally
NAME_BAD = "incoming/" + "b" * 296 + ".csv"  # a bad file, named longer than a file name may be


@dataclass
class World:
    data: LocalBucket
    artifacts: LocalBucket
    env: dict[str, str]
    router: Router
    process: FunctionProcess
    tmp: Path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A train function process and a router delivering the data bucket's files to it."""
    root = tmp_path / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, training_schema())
    env = train_env(root, LOCAL_DEADLETTER_DIR=str(tmp_path / "deadletter"), ROUTER_QUIET_SECONDS="0.3")
    spec = load_declaration().functions["train"]
    process = FunctionProcess(spec, free_port(), env, log_path=tmp_path / "train.log").start()
    router = Router([Route("prodml-data", "train", process.url)], load_settings(env))
    try:
        router.start()
        yield World(LocalBucket(root, "prodml-data"), artifacts, env, router, process, tmp_path)
    finally:
        router.stop()
        process.stop()


def copy_in(world: World, name: str, body: bytes) -> None:
    """Write ``body`` to a file of that base name elsewhere, then ``cp`` it into the bucket folder."""
    source = world.tmp / name.rpartition("/")[2]
    source.write_bytes(body)
    subprocess.run(["cp", str(source), str(world.data.folder / name)], check=True)


def wait_processed(world: World, names: list[str], timeout: float = 180.0) -> dict[str, int]:
    """The generation of each name once the train function has a "done" marker for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {}
        for name in names:
            generation = ledger.read_processed(world.artifacts, "prodml-data", name, _generation(world, name))
            if generation is not None:
                done[name] = int(generation["generation"])
        if len(done) == len(names):
            return done
        time.sleep(0.2)
    pytest.fail(
        f"not processed within {timeout} s: {sorted(set(names) - set(done))}; {world.process.log_tail()}"
    )


def _generation(world: World, name: str) -> int:
    # A quarantined file has left incoming/: its generation is in its reason record.
    if world.data.exists(name):
        return world.data.stat(name).generation
    reasons = [r for r in list_quarantine(world.data) if r["object"] == name]
    return int(reasons[0]["generation"]) if reasons else 0


def prodml(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """The exit code and output of ``prodml ARGS`` in this world (its train function's port)."""
    for key, value in {**world.env, "TRAIN_PORT": str(world.process.port)}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().out
    finally:
        get_settings.cache_clear()


def monitor(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """What ``prodml monitor`` prints for this world."""
    code, out = prodml(world, monkeypatch, capsys, "monitor", *args)
    assert code == 0
    return out


def test_files_with_long_names_are_processed_shown_and_quarantined_with_their_reason(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (world.data.folder / "incoming").mkdir(parents=True, exist_ok=True)
    good = [NAME_240, NAME_CJK, NAME_1024]
    copy_in(world, NAME_240, training_rows(300, seed=1).to_csv(index=False).encode())
    copy_in(world, NAME_CJK, training_rows(300, seed=2).to_csv(index=False).encode())
    world.data.write(NAME_1024, training_rows(300, seed=3).to_csv(index=False).encode())  # an upload
    world.data.write(NAME_BAD, b"country,hour\nus,3\n")  # no bid, no label

    done = wait_processed(world, [*good, NAME_BAD])

    outcomes = {
        name: ledger.read_processed(world.artifacts, "prodml-data", name, done[name]) for name in done
    }
    assert outcomes[NAME_BAD]["outcome"] == "quarantined"
    for name in good:
        assert outcomes[name]["outcome"] in ("promoted", "rejected"), outcomes[name]
    rows = {row["object"]: row for row in json.loads(monitor(world, monkeypatch, capsys, "--json"))}
    assert set(rows) == {*good, NAME_BAD}
    for name in good:
        assert rows[name]["generation"] == done[name]
        assert rows[name]["decision"] == "accepted"
    assert rows[NAME_BAD]["decision"] == "quarantined"
    assert rows[NAME_BAD]["quarantine"]["rule"]
    text = monitor(world, monkeypatch, capsys)
    for name in [*good, NAME_BAD]:
        assert f"{name}@{done[name]}" in text
    assert f"  {NAME_BAD}: {rows[NAME_BAD]['quarantine']['message']}" in text
    # the bad file left incoming/ and is in quarantine, with its reason, under names GCS takes
    assert not world.data.exists(NAME_BAD)
    copies = [i.name for i in world.data.list("quarantine/")]
    assert len(copies) == 2 and all(len(n.encode()) <= MAX_NAME_BYTES for n in copies)
    for info in world.artifacts.list():
        assert len(info.name.encode()) <= MAX_NAME_BYTES
    assert not os.path.exists(world.tmp / "deadletter") or not list((world.tmp / "deadletter").iterdir())


def test_files_that_cannot_fire_or_finish_are_listed_with_why(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.artifacts.delete("schema.json")  # files landed before the schema
    incoming = world.data.folder / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    (incoming / "day\n2.csv").write_bytes(training_rows(50, seed=4).to_csv(index=False).encode())
    copy_in(world, "incoming/day-3.csv", training_rows(50, seed=5).to_csv(index=False).encode())
    time.sleep(0.3)  # let the filesystem events of the last write arrive
    assert world.router.wait_idle(60)
    day3 = world.data.stat("incoming/day-3.csv").generation

    code, out = prodml(world, monkeypatch, capsys, "replay")  # through the router, to the function

    assert code == 1  # not done
    assert f"not done: incoming/day-3.csv@{day3}: not processed: no schema: " in out
    assert "not done: incoming/day\\n2.csv: refused: name refused: must not contain a line feed" in out
    rows = {row["object"]: row for row in json.loads(monitor(world, monkeypatch, capsys, "--json"))}
    assert rows["incoming/day\n2.csv"]["generation"] is None
    assert rows["incoming/day\n2.csv"]["reason"].startswith("name refused: must not contain a line feed")
    assert rows["incoming/day-3.csv"]["reason"].startswith("no schema: ")
    assert {row["decision"] for row in rows.values()} == {"not processed"}
    text = monitor(world, monkeypatch, capsys)
    assert "  incoming/day\\n2.csv: name refused: must not contain a line feed character" in text
    assert "  incoming/day-3.csv: no schema: " in text


def test_a_bad_file_that_cannot_be_quarantined_is_recorded_as_an_error(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = world.tmp / "outside"
    outside.mkdir()
    (world.data.folder / "quarantine").symlink_to(outside)  # quarantine/ leads out of the bucket
    (world.data.folder / "incoming").mkdir(parents=True, exist_ok=True)
    copy_in(world, "incoming/bad.csv", b"country,hour\nus,3\n")
    generation = world.data.stat("incoming/bad.csv").generation

    deadline = time.monotonic() + 120
    while not (rows := json.loads(monitor(world, monkeypatch, capsys, "--json"))) or "error" not in rows[0]:
        assert time.monotonic() < deadline, world.process.log_tail()
        time.sleep(0.2)

    [row] = rows
    assert (row["object"], row["generation"], row["decision"]) == ("incoming/bad.csv", generation, "error")
    assert row["message"].startswith("QuarantineFailed: cannot quarantine 'incoming/bad.csv' (")
    assert "outside bucket folder" in row["message"]
    assert row["reason"].startswith("error: QuarantineFailed: ")  # and it waits for `prodml replay`
    assert world.data.exists("incoming/bad.csv") and list(outside.iterdir()) == []
    text = monitor(world, monkeypatch, capsys)
    assert (
        f"incoming/bad.csv@{generation}" in text and "  incoming/bad.csv: error: QuarantineFailed: " in text
    )
