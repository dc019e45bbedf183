"""What only the local backend has to get right: files users copy in by hand, bookkeeping kept
out of the bucket folder, path escapes, and real processes racing or dying mid-write."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import cas_increment

from shared.errors import InvalidObjectName, PreconditionFailed
from shared.storage.generations import file_identity
from shared.storage.local import META_DIR, STALE_TEMP_SECONDS, TMP_DIR, LocalBucket

# --- bookkeeping stays out of the bucket folder ---------------------------------------------


def test_bucket_folder_holds_only_the_objects(local_bucket: LocalBucket, buckets_root: Path) -> None:
    local_bucket.write("incoming/a.csv", b"1")
    local_bucket.write("schema.json", b"{}")
    local_bucket.write("schema.json", b"{}", if_generation_match=local_bucket.stat("schema.json").generation)
    local_bucket.delete("incoming/a.csv")

    on_disk = sorted(str(p.relative_to(local_bucket.folder)) for p in local_bucket.folder.rglob("*"))

    assert on_disk == ["incoming", "schema.json"]  # an emptied folder stays: users drop files into it
    assert [i.name for i in local_bucket.list()] == ["schema.json"]
    assert sorted(p.name for p in buckets_root.iterdir()) == [META_DIR, TMP_DIR, "test-bucket"]
    assert list((buckets_root / TMP_DIR).iterdir()) == []


def test_a_copied_in_file_gets_a_generation_and_keeps_it(local_bucket: LocalBucket) -> None:
    written = local_bucket.write("incoming/first.csv", b"a")
    (local_bucket.folder / "incoming" / "dropped.csv").write_bytes(b"x,y\n1,2\n")  # a user's cp

    info = local_bucket.stat("incoming/dropped.csv")

    assert info.generation > written
    assert info.size == 8
    assert info.content_type == "text/csv"
    assert local_bucket.stat("incoming/dropped.csv") == info
    assert local_bucket.read_with_info("incoming/dropped.csv") == (b"x,y\n1,2\n", info)
    assert {i.name: i.generation for i in local_bucket.list("incoming/")} == {
        "incoming/first.csv": written,
        "incoming/dropped.csv": info.generation,
    }


def test_a_file_changed_by_hand_gets_a_new_larger_generation(local_bucket: LocalBucket) -> None:
    path = local_bucket.folder / "data.csv"
    path.write_bytes(b"old,1\n")
    before = local_bucket.stat("data.csv")
    time.sleep(0.01)  # a later mtime, as any real edit has

    path.write_bytes(b"new,2\n")  # same size, rewritten in place

    after = next(iter(local_bucket.list()))
    assert after.generation > before.generation
    assert local_bucket.read_with_info("data.csv") == (b"new,2\n", after)


def test_a_change_that_restores_the_mtime_is_still_seen(local_bucket: LocalBucket) -> None:
    path = local_bucket.folder / "data.csv"
    path.write_bytes(b"old,1\n")
    before = local_bucket.stat("data.csv")
    mtime = path.stat().st_mtime_ns

    path.write_bytes(b"new,2\n")
    os.utime(path, ns=(mtime, mtime))  # like `cp -p`: same size, same mtime

    assert local_bucket.stat("data.csv").generation > before.generation


def test_a_file_changed_by_hand_breaks_a_precondition_on_the_old_generation(
    local_bucket: LocalBucket,
) -> None:
    generation = local_bucket.write("models/current.skops", b"champion")
    (local_bucket.folder / "models" / "current.skops").write_bytes(b"edited by hand")

    with pytest.raises(PreconditionFailed):
        local_bucket.write("models/current.skops", b"challenger", if_generation_match=generation)
    assert local_bucket.read("models/current.skops") == b"edited by hand"


def test_generations_are_shared_by_every_handle_on_the_bucket(buckets_root: Path) -> None:
    one = LocalBucket(buckets_root, "shared-bucket")
    two = LocalBucket(buckets_root, "shared-bucket")

    seen = [one.write("x", b"1"), two.write("x", b"2"), one.write("y", b"3"), two.write("x", b"4")]

    assert seen == sorted(seen) and len(set(seen)) == 4
    assert one.stat("x") == two.stat("x")
    assert one.stat("x").generation == seen[-1]


# --- custom metadata: files by hand, databases of older code -------------------------------


def test_a_file_copied_in_or_changed_by_hand_has_no_metadata(local_bucket: LocalBucket) -> None:
    (local_bucket.folder / "dropped.csv").write_bytes(b"x")  # a user's cp: no record at all
    written = local_bucket.write("edited.csv", b"a,b\n", metadata={"prodml-version": "1"})
    (local_bucket.folder / "edited.csv").write_bytes(b"edited\n")  # someone edits the object

    dropped, edited = local_bucket.list()

    assert (dropped.name, dict(dropped.metadata)) == ("dropped.csv", {})
    assert (edited.name, dict(edited.metadata)) == ("edited.csv", {})  # not the written version's
    assert edited.generation > written
    assert local_bucket.read_with_info("edited.csv") == (b"edited\n", edited)


# The schema of generations.sqlite3 as the code before custom metadata made it.
_OLD_SCHEMA = (
    "CREATE TABLE objects (name TEXT PRIMARY KEY, generation INTEGER NOT NULL,"
    " identity TEXT NOT NULL, content_type TEXT NOT NULL)",
    "CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER)",
    "CREATE TABLE components (disk TEXT PRIMARY KEY, component TEXT NOT NULL)",
)
_OLD_PUT = "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)"  # how the old code records a write


def test_a_bucket_database_of_older_code_keeps_working_and_takes_metadata(buckets_root: Path) -> None:
    folder = buckets_root / "test-bucket"
    folder.mkdir(parents=True)
    (folder / "schema.json").write_bytes(b"{}")
    meta = buckets_root / META_DIR / "test-bucket"
    meta.mkdir(parents=True)
    old = sqlite3.connect(meta / "generations.sqlite3")
    for statement in _OLD_SCHEMA:
        old.execute(statement)
    identity = file_identity(os.stat(folder / "schema.json"))
    old.execute(_OLD_PUT, ("schema.json", 1_700_000_000_000_000, identity, "application/json"))
    old.execute("INSERT INTO counter VALUES (1, 1700000000000000)")
    old.commit()
    old.close()

    bucket = LocalBucket(buckets_root, "test-bucket")

    info = bucket.stat("schema.json")
    assert (info.generation, info.content_type, dict(info.metadata)) == (
        1_700_000_000_000_000,
        "application/json",
        {},
    )
    generation = bucket.write(
        "schema.json", b'{"v": 2}', metadata={"prodml-version": "2"}, if_generation_match=info.generation
    )
    assert dict(LocalBucket(buckets_root, "test-bucket").stat("schema.json").metadata) == {
        "prodml-version": "2"
    }

    # A process still running the old code records a write as it always did: it still can, and
    # the metadata of the generation it replaced does not come back with its version.
    (folder / "schema.json").write_bytes(b'{"v": 3}')
    with sqlite3.connect(meta / "generations.sqlite3") as conn:
        conn.execute(
            _OLD_PUT,
            (
                "schema.json",
                generation + 1,
                file_identity(os.stat(folder / "schema.json")),
                "application/json",
            ),
        )
    assert bucket.read_with_info("schema.json") == (b'{"v": 3}', bucket.stat("schema.json"))
    assert (bucket.stat("schema.json").generation, dict(bucket.stat("schema.json").metadata)) == (
        generation + 1,
        {},
    )


# --- names that would escape the folder ----------------------------------------------------

ESCAPES = {
    "parent": ("../x", "'..' path component"),
    "absolute": ("/etc/passwd", "absolute path"),
    "parent inside": ("a/../../b", "'..' path component"),
    "dot": ("./a", "'.' path component"),
    "empty component": ("a//b", "empty path component"),
    "trailing slash": ("a/", "end with '/'"),
}


@pytest.mark.parametrize(("name", "rule"), ESCAPES.values(), ids=ESCAPES.keys())
def test_names_that_leave_the_folder_are_refused(local_bucket: LocalBucket, name: str, rule: str) -> None:
    for call in (
        lambda: local_bucket.write(name, b"x"),
        lambda: local_bucket.read(name),
        lambda: local_bucket.stat(name),
        lambda: local_bucket.delete(name),
    ):
        with pytest.raises(InvalidObjectName, match=rule) as caught:
            call()
        assert repr(name) in str(caught.value)
    assert sorted(local_bucket.folder.parent.rglob("x")) == []


# --- names longer than a file name --------------------------------------------------------


def test_a_long_component_is_a_readable_hashed_file_beside_the_others(buckets_root: Path) -> None:
    bucket = LocalBucket(buckets_root, "test-bucket")
    long_name = "incoming/" + "売上データ" * 20 + ".csv"  # 300 bytes: no file may be named so
    bucket.write(long_name, b"a,b\n1,2\n")

    [on_disk] = (bucket.folder / "incoming").iterdir()
    assert len(on_disk.name.encode()) <= 255
    assert on_disk.name.startswith("売上データ") and on_disk.name.endswith(".csv")  # a person can tell
    assert on_disk.read_bytes() == b"a,b\n1,2\n"
    # another process (a fresh handle: nothing cached) gives the real name back, from the disk path too
    again = LocalBucket(buckets_root, "test-bucket")
    assert [i.name for i in again.list()] == [long_name]
    assert again.object_name(f"incoming/{on_disk.name}") == long_name
    assert again.unreachable() == []


def test_a_name_that_looks_hashed_cannot_take_a_long_names_place(local_bucket: LocalBucket) -> None:
    long_name = "incoming/" + "x" * 300 + ".csv"
    local_bucket.write(long_name, b"long")
    [on_disk] = (local_bucket.folder / "incoming").iterdir()

    lookalike = f"incoming/{on_disk.name}"  # a short name, exactly the long one's file name
    local_bucket.write(lookalike, b"lookalike")

    assert local_bucket.read(long_name) == b"long"
    assert local_bucket.read(lookalike) == b"lookalike"
    assert [i.name for i in local_bucket.list()] == sorted([long_name, lookalike])


def test_files_no_name_reaches_are_not_objects_and_are_told_with_why(
    local_bucket: LocalBucket, tmp_path: Path
) -> None:
    incoming = local_bucket.folder / "incoming"
    incoming.mkdir()
    (incoming / "day\n2.csv").write_bytes(b"x")  # a user's cp: Linux allows a line feed
    (incoming / ("copied" + "~h" + "0" * 40 + ".csv")).write_bytes(b"x")  # no record of it
    (incoming / "out.csv").symlink_to(tmp_path)
    os.mkfifo(incoming / "pipe.csv")
    (incoming / "fine.csv").write_bytes(b"x")

    assert [i.name for i in local_bucket.list()] == ["incoming/fine.csv"]
    found = {u.path: u.reason for u in local_bucket.unreachable("incoming/")}
    assert found == {
        "incoming/day\n2.csv": "name refused: must not contain a line feed character",
        "incoming/copied~h0000000000000000000000000000000000000000.csv": (
            "name refused: a hashed file name the store has no record of (copied in by hand?)"
        ),
        "incoming/out.csv": f"a symlink to {str(tmp_path)!r}, outside the bucket folder",
        "incoming/pipe.csv": "not a regular file",
    }
    assert local_bucket.unreachable("models/") == []


def test_symlinks_pointing_out_are_refused_and_not_listed(local_bucket: LocalBucket, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (local_bucket.folder / "link").symlink_to(outside / "secret")
    (local_bucket.folder / "linkdir").symlink_to(outside)
    local_bucket.write("inside", b"ok")

    for name in ("link", "linkdir/secret", "linkdir/new"):
        with pytest.raises(InvalidObjectName, match="outside bucket folder"):
            local_bucket.read(name)
        with pytest.raises(InvalidObjectName, match="outside bucket folder"):
            local_bucket.write(name, b"overwritten")
    assert list(local_bucket.list("linkdir/")) == []  # a prefix is a filter: nothing matches

    assert [i.name for i in local_bucket.list()] == ["inside"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


def test_an_object_and_a_folder_cannot_share_a_path(local_bucket: LocalBucket) -> None:
    local_bucket.write("a", b"file")

    with pytest.raises(InvalidObjectName, match="'a/b'.*cannot both exist locally"):
        local_bucket.write("a/b", b"x")
    assert local_bucket.read("a") == b"file"


# --- temp files ----------------------------------------------------------------------------


def test_stale_temp_files_are_cleaned_when_a_process_opens_the_root(tmp_path: Path) -> None:
    root = tmp_path / "fresh-root"
    (root / TMP_DIR).mkdir(parents=True)
    stale = root / TMP_DIR / "test-bucket.1.dead.part"
    recent = root / TMP_DIR / "test-bucket.2.live.part"
    stale.write_bytes(b"x")
    recent.write_bytes(b"x")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))

    LocalBucket(root, "test-bucket")

    assert not stale.exists()
    assert recent.exists()  # may belong to a writer still running


# --- concurrency and crashes (real processes) ----------------------------------------------


def _increment(root: str, cycles: int) -> int:
    """Child process: ``cycles`` read-increment-write cycles with compare-and-swap and retry."""
    return cas_increment(LocalBucket(Path(root), "test-bucket"), cycles)


@pytest.mark.slow
def test_eight_processes_incrementing_with_cas_lose_no_update(
    local_bucket: LocalBucket, buckets_root: Path
) -> None:
    start = local_bucket.write("counter", b"0")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the folder

    with ctx.Pool(8) as pool:
        conflicts = pool.starmap(_increment, [(str(buckets_root), 50)] * 8)

    data, info = local_bucket.read_with_info("counter")
    assert data == b"400"
    assert info.generation > start
    assert sum(conflicts) > 0  # they really did race
    assert list((buckets_root / TMP_DIR).iterdir()) == []  # losers cleaned their temp files up


def test_readers_never_see_a_half_written_object(local_bucket: LocalBucket) -> None:
    versions = [bytes([65 + i]) * (512 * 1024) for i in range(4)]
    local_bucket.write("big.bin", versions[0])
    stop = threading.Event()

    def overwrite() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            local_bucket.write("big.bin", versions[i % 4])

    writer = threading.Thread(target=overwrite)
    writer.start()
    try:
        for _ in range(200):
            data, info = local_bucket.read_with_info("big.bin")
            assert data in versions
            assert info.size == len(data)
    finally:
        stop.set()
        writer.join()


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shared.storage.local import LocalBucket

    LocalBucket(Path(sys.argv[1]), "test-bucket").upload("big.bin", Path(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_the_old_object_whole(
    local_bucket: LocalBucket, buckets_root: Path, tmp_path: Path
) -> None:
    old = os.urandom(8 * 1024 * 1024)
    generation = local_bucket.write("big.bin", old)
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)  # the child streams from it, so we decide exactly when it is mid-write
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(buckets_root), str(fifo)])
    try:
        deadline = time.monotonic() + 30
        while True:  # open the writing end once the child has opened the reading end
            try:
                feed = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert child.poll() is None and time.monotonic() < deadline, "writer did not start"
                time.sleep(0.01)
        os.set_blocking(feed, True)
        chunk = b"N" * (1024 * 1024)
        temps: list[Path] = []
        while not any(t.stat().st_size >= 4 * len(chunk) for t in temps):
            assert time.monotonic() < deadline, "writer made no progress"
            os.write(feed, chunk)
            temps = list((buckets_root / TMP_DIR).iterdir())
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        os.close(feed)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == -signal.SIGKILL
    data, info = local_bucket.read_with_info("big.bin")
    assert data == old
    assert info.generation == generation
    assert [(i.name, i.size) for i in local_bucket.list()] == [("big.bin", len(old))]
    assert local_bucket.write("big.bin", b"next", if_generation_match=generation) > generation


_KILLED_AFTER_RENAME = textwrap.dedent(
    """
    import os
    import signal
    import sys
    from pathlib import Path
    from shared.storage.local import LocalBucket

    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)  # the new content is in place, its record not yet committed
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die
    LocalBucket(Path(sys.argv[1]), "test-bucket").write(
        "models/current.skops", b"challenger", metadata={"prodml-version": "challenger"}
    )
    """
)


def test_a_writer_killed_between_rename_and_record_never_pairs_content_and_metadata_of_two_versions(
    local_bucket: LocalBucket, buckets_root: Path
) -> None:
    champion = local_bucket.write(
        "models/current.skops", b"champion", metadata={"prodml-version": "champion"}
    )

    child = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_RENAME, str(buckets_root)], timeout=60, check=False
    )

    assert child.returncode == -signal.SIGKILL
    data, info = local_bucket.read_with_info("models/current.skops")
    # The file holds the challenger's bytes, the store no record of them: a new version, which
    # carries no metadata, least of all the champion's.
    assert (data, dict(info.metadata)) == (b"challenger", {})
    assert info.generation > champion
    assert local_bucket.write(
        "models/current.skops",
        b"next",
        metadata={"prodml-version": "next"},
        if_generation_match=info.generation,
    )
    assert dict(local_bucket.stat("models/current.skops").metadata) == {"prodml-version": "next"}
