"""Labels files through the train function's handler (in process, real local buckets): the
contract, quarantine with a reason, the stored form, and one file version stored once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import train_env, training_schema

from shared.config import load_settings
from shared.contracts import EventOutcome, LabelsRule
from shared.events import StorageObjectEvent, parse_storage_event, to_cloudevent
from shared.feedback import labels
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger
from shared.training.on_event import handle_event


class World:
    """Local data and artifacts buckets with the binary schema, and the handler on them."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        root = tmp_path / "buckets"
        self.settings = load_settings(train_env(root, **env))
        self.data = LocalBucket(root, "prodml-data")
        self.artifacts = LocalBucket(root, "prodml-artifacts")
        save_schema(self.artifacts, training_schema())

    def drop(self, name: str, body: bytes) -> StorageObjectEvent:
        self.data.write(name, body)
        return parse_storage_event(to_cloudevent(self.data.stat(name)))

    def send(self, event: StorageObjectEvent) -> str:
        return handle_event(event, self.settings, data=self.data, artifacts=self.artifacts).status

    def stored(self) -> list[str]:
        return [i.name for i in self.artifacts.list("feedback/labels/")]


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def test_a_good_labels_file_is_stored_normalized_ids_kept_as_written(tmp_path: Path) -> None:
    world = World(tmp_path)
    body = b"id,converted,event_time,extra\n00123,1,2026-01-02T03:04:05Z,x\nabc,0,1767225600,y\nq,1,,z\n"
    event = world.drop("labels/day1.csv", body)

    assert world.send(event) == EventOutcome.LABELS_STORED
    [name] = world.stored()
    assert name == f"feedback/labels/prodml-data/labels/day1.csv@{event.generation}.npz"
    rows = labels.read_stored_labels(world.artifacts, name)
    assert rows.ids.tolist() == ["00123", "abc", "q"]  # not the number 123
    assert rows.labels.tolist() == ["1", "0", "1"]
    assert rows.event_times[0] == pd.Timestamp("2026-01-02T03:04:05Z").timestamp()
    assert rows.event_times[1] == 1767225600.0
    assert pd.isna(rows.event_times[2])
    marker = ledger.read_processed(world.artifacts, "prodml-data", "labels/day1.csv", event.generation)
    assert marker is not None and marker["outcome"] == EventOutcome.LABELS_STORED
    # The file stays where it was dropped (labels are not moved; only bad files are).
    assert world.data.exists("labels/day1.csv")


@pytest.mark.parametrize(
    ("body", "rule", "said"),
    [
        (b"prediction,converted\na,1\n", LabelsRule.MISSING_ID, "'id'"),
        (b"id,converted\na,1\n,0\n", LabelsRule.INVALID_ID, "1 to 128 characters"),
        (b"id,converted\n" + b"x" * 129 + b",1\n", LabelsRule.INVALID_ID, "1 to 128 characters"),
        (b"id,label\na,1\n", LabelsRule.MISSING_LABEL, "'converted'"),
        (b"id,converted\na,1\nb,2\n", LabelsRule.INVALID_LABEL, "classes [0, 1]"),
        (b"id,converted,event_time\na,1,yesterday\n", LabelsRule.INVALID_EVENT_TIME, "'yesterday'"),
        # milliseconds read as seconds: the year 55,800, which would outrank every correction
        (
            b"id,converted,event_time\na,1,1700000000000\n",
            LabelsRule.INVALID_EVENT_TIME,
            "not after tomorrow",
        ),
        (b"id,converted\n", "empty", "no data rows"),
        (b"\x00\x01binary", "unreadable", "binary"),
    ],
)
def test_a_bad_labels_file_is_quarantined_with_its_reason(
    tmp_path: Path, body: bytes, rule: str, said: str
) -> None:
    world = World(tmp_path)
    event = world.drop("labels/bad.csv", body)

    assert world.send(event) == EventOutcome.QUARANTINED
    reason = json.loads(world.data.read("quarantine/labels/bad.csv.reason.json"))
    assert (reason["object"], reason["generation"], reason["rule"]) == (
        "labels/bad.csv",
        event.generation,
        rule,
    )
    assert said in reason["message"]
    assert not world.data.exists("labels/bad.csv")  # moved, exactly as a bad data file
    assert world.stored() == []
    assert world.send(event) == EventOutcome.DUPLICATE  # marked done: a redelivery does nothing


def test_too_many_rows_is_the_data_files_limit(tmp_path: Path) -> None:
    world = World(tmp_path, MAX_ROWS="3")
    event = world.drop("labels/big.csv", _csv(pd.DataFrame({"id": list("abcd"), "converted": [1, 0, 1, 0]})))
    assert world.send(event) == EventOutcome.QUARANTINED
    assert json.loads(world.data.read("quarantine/labels/big.csv.reason.json"))["rule"] == "too_many_rows"


def test_the_same_file_delivered_twice_and_twice_at_once_is_stored_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    event = world.drop("labels/once.csv", b"id,converted\na,1\nb,0\n")
    statuses: list[str] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        try:
            statuses.append(world.send(event))
        except Exception as exc:  # the holder's own event, delivered again at once: a 5xx
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(EventOutcome.LABELS_STORED) == 1, statuses
    assert set(statuses) <= {EventOutcome.LABELS_STORED, EventOutcome.DUPLICATE, "RetryLater"}, statuses
    assert world.send(event) == EventOutcome.DUPLICATE
    assert len(world.stored()) == 1


def test_a_data_file_still_goes_to_training_and_other_prefixes_are_ignored(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert world.send(world.drop("elsewhere/x.csv", b"id,converted\na,1\n")) == EventOutcome.IGNORED
    assert world.stored() == []


def test_labels_past_the_join_bound_are_stored_and_the_outcome_says_the_report_was_not_refreshed(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, JOIN_MAX_ROWS="2")
    event = world.drop("labels/day1.csv", b"id,converted\na,1\nb,0\nc,1\n")

    outcome = handle_event(event, world.settings, data=world.data, artifacts=world.artifacts)

    assert outcome.status == EventOutcome.LABELS_STORED and len(world.stored()) == 1
    assert "the live report (feedback/live.json) was not refreshed" in outcome.message
    assert "JOIN_MAX_ROWS=2" in outcome.message and "prodml pipeline join" in outcome.message
    marker = ledger.read_processed(world.artifacts, "prodml-data", "labels/day1.csv", event.generation)
    assert marker is not None and "not refreshed" in marker["message"]


def test_a_parquet_file_whose_ids_are_binary_is_read_as_their_text(tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    world = World(tmp_path)
    table = pa.table({"id": pa.array([b"imp-1", "imp-\u00e9".encode()], pa.binary()), "converted": [1, 0]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    event = world.drop("labels/binary.parquet", buffer.getvalue())

    assert world.send(event) == EventOutcome.LABELS_STORED
    [name] = world.stored()
    assert labels.read_stored_labels(world.artifacts, name).ids.tolist() == ["imp-1", "imp-\u00e9"]
