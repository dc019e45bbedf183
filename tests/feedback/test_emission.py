"""Joined rows back into training (issue 15 item 6, FEEDBACK_TRAINING): predictions logged with
``write_log`` as predict writes them, labels files and the emitted data file through the train
function's own handler (``handle_event``) on real local buckets; the emitted file read back with
pandas as a user would."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import drop_file, train_env, training_rows, training_schema

from shared.cli import main
from shared.config import Settings, get_settings, load_settings
from shared.contracts import EMITTED_PREFIX, FEEDBACK_INCOMING_PREFIX, FEEDBACK_SOURCE, EventOutcome
from shared.errors import EmissionError
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback import emission
from shared.feedback.log_format import LogBatch, write_log
from shared.schema import Schema, save_schema
from shared.storage.local import LocalBucket
from shared.training import registry
from shared.training.on_event import Outcome, handle_event

SCHEMA = training_schema()
LABEL = SCHEMA.label.name


class Loop:
    """Local buckets with a first model; served rows logged; labels files and data files handled."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.env = train_env(root, LOG_LEVEL="warning", LOG_FORMAT="text", **env)
        self.settings = load_settings(self.env)
        self.data = LocalBucket(root, self.settings.data_bucket)
        self.artifacts = LocalBucket(root, self.settings.artifacts_bucket)
        self.predictions = LocalBucket(root, self.settings.predictions_bucket)
        save_schema(self.artifacts, SCHEMA)
        self.seq = 0

    def with_settings(self, **env: str) -> Loop:
        other = Loop.__new__(Loop)
        other.__dict__.update(self.__dict__)
        other.env = {**self.env, **env}
        other.settings = load_settings(other.env)
        return other

    def send(self, name: str, content: Any) -> Outcome:
        return self.deliver(drop_file(self.data, name, content))

    def deliver(self, info: Any) -> Outcome:
        event = parse_storage_event(to_cloudevent(info))
        return handle_event(event, self.settings, data=self.data, artifacts=self.artifacts)

    def serve(self, rows: pd.DataFrame, at: float) -> str:
        """Log ``rows`` (with an ``id`` column) as one flush served at ``at`` (a second apart)."""
        n = len(rows)
        batch = LogBatch(
            ids=list(rows["id"]),
            times=[at + i for i in range(n)],
            scores=[0.5] * n,
            labels=["1"] * n,
            sources=["model"] * n,
            model_versions=["v1"] * n,
            table_builds=[""] * n,
            features={f.name: list(rows[f.name]) for f in SCHEMA.features},
        )
        self.seq += 1
        return write_log(self.predictions, batch, SCHEMA, "instance-a", self.seq)

    def emitted_files(self) -> list[str]:
        return sorted(i.name for i in self.data.list(FEEDBACK_INCOMING_PREFIX))

    def read_file(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.data.read(name)))

    def emit(self, settings: Settings | None = None, **kwargs: Any) -> emission.EmitResult:
        return emission.emit(
            settings or self.settings,
            data=self.data,
            artifacts=self.artifacts,
            predictions=self.predictions,
            **kwargs,
        )


def _served(n: int = 200, seed: int = 5) -> pd.DataFrame:
    rows = training_rows(n, seed)
    rows.insert(0, "id", [f"p{i:03d}" for i in range(n)])
    return rows


def _labels(served: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    return served.iloc[start:stop][["id", LABEL]].reset_index(drop=True)


@pytest.fixture
def loop(tmp_path: Path) -> Loop:
    on = Loop(tmp_path / "buckets", FEEDBACK_TRAINING="true", FEEDBACK_MIN_ROWS="1")
    assert on.send("incoming/day-1.csv", training_rows(400, 1)).status == EventOutcome.PROMOTED
    return on


def test_matured_rows_train_a_version_whose_lineage_names_the_loop_and_are_never_emitted_twice(
    loop: Loop,
) -> None:
    served = _served()
    started = time.time() - 1000
    loop.serve(served, started)

    first = loop.send("labels/batch-1.csv", _labels(served, 0, 120))
    assert first.status == EventOutcome.LABELS_STORED
    (name,) = loop.emitted_files()
    assert name.startswith(f"{FEEDBACK_INCOMING_PREFIX}00000001-") and name.endswith(".parquet")
    assert "emitted 120 rows" in first.message
    emitted = loop.read_file(name)
    expected = served.iloc[:120].reset_index(drop=True)
    assert list(emitted.columns) == ["id", "country", "hour", "bid", LABEL]
    pd.testing.assert_frame_equal(emitted, expected, check_dtype=False)  # as served, as labelled

    trained = loop.deliver(loop.data.stat(name))
    assert trained.status in (EventOutcome.PROMOTED, EventOutcome.REJECTED), trained.message
    card = registry.read_card(loop.artifacts, trained.version or "")
    entry = card.lineage[-1]
    assert (entry["name"], entry["source"], entry["emitted_rows"]) == (name, FEEDBACK_SOURCE, 120)
    assert entry["emission"] == f"{EMITTED_PREFIX}00000001.npz"
    assert entry["window"] == {"first": emission._iso(started), "last": emission._iso(started + 119)}
    assert card.lineage[0].get("source") is None  # an ordinary file says nothing of the kind
    checks = card.data_checks or {}
    assert (checks["served_share"], checks["row_skew"]["rows"], checks["row_skew"]["mismatched"]) == (
        1.0,
        120,
        [],
    )  # every row was served, with exactly these features

    again = loop.deliver(loop.data.stat("labels/batch-1.csv"))  # the same delivery twice
    assert again.status == EventOutcome.DUPLICATE
    uploaded_again = loop.send("labels/batch-1.csv", _labels(served, 0, 120))  # a new generation
    assert uploaded_again.status == EventOutcome.LABELS_STORED
    assert "no matured row that was not emitted before" in uploaded_again.message
    assert loop.emitted_files() == [name]

    second = loop.send("labels/batch-2.csv", _labels(served, 100, 180))  # 20 of them emitted before
    assert second.status == EventOutcome.LABELS_STORED
    assert len(loop.emitted_files()) == 2
    later = loop.read_file(loop.emitted_files()[1])
    assert list(later["id"]) == [f"p{i:03d}" for i in range(120, 180)]
    record = json.loads(loop.artifacts.read(f"{EMITTED_PREFIX}00000002.json"))
    assert (record["rows"], record["labelled"], record["defaulted"]) == (60, 60, 0)
    assert record["file"] == loop.emitted_files()[1]
    assert record["file_generation"] == loop.data.stat(record["file"]).generation


def test_off_by_default_a_labels_file_emits_nothing(tmp_path: Path) -> None:
    off = Loop(tmp_path / "buckets")
    assert off.send("incoming/day-1.csv", training_rows(400, 1)).status == EventOutcome.PROMOTED
    served = _served()
    off.serve(served, time.time() - 1000)
    assert off.send("labels/batch-1.csv", _labels(served, 0, 120)).status == EventOutcome.LABELS_STORED
    assert off.emitted_files() == []
    assert list(off.artifacts.list(EMITTED_PREFIX)) == []


def test_a_defaulted_row_is_emitted_as_the_default_once_past_the_window_and_pending_rows_wait(
    loop: Loop,
) -> None:
    served = _served(40)
    now = time.time()
    loop.serve(served.iloc[:20], now - 7200)  # past the window
    loop.serve(served.iloc[20:], now - 60)  # within it
    windowed = loop.with_settings(LABEL_WINDOW="1h", LABEL_DEFAULT="0")
    result = loop.emit(windowed.settings, now=now)
    assert result.emitted is not None
    assert (result.emitted.meta["labelled"], result.emitted.meta["defaulted"]) == (0, 20)
    emitted = loop.read_file(result.emitted.file)
    assert list(emitted["id"]) == [f"p{i:03d}" for i in range(20)]
    assert set(emitted[LABEL]) == {0}
    # Later, a label arrives for a row emitted as the default: it is not emitted again.
    late = loop.with_settings(FEEDBACK_TRAINING="false")
    assert late.send("labels/late.csv", pd.DataFrame({"id": ["p000"], LABEL: [1]})).status == "labels_stored"
    assert loop.emit(windowed.settings, now=now).emitted is None


def test_fewer_new_rows_than_feedback_min_rows_wait(loop: Loop) -> None:
    served = _served()
    loop.serve(served, time.time() - 1000)
    waiting = loop.with_settings(FEEDBACK_MIN_ROWS="50")
    outcome = waiting.send("labels/batch-1.csv", _labels(served, 0, 30))
    assert "30 matured rows not emitted before wait for FEEDBACK_MIN_ROWS=50" in outcome.message
    assert loop.emitted_files() == []
    assert waiting.send("labels/batch-2.csv", _labels(served, 30, 60)).status == "labels_stored"
    (name,) = loop.emitted_files()
    assert len(loop.read_file(name)) == 60


class _CrashBeforeTheFile(LocalBucket):
    """The data bucket of an emitter that dies after its reservation, before its data file."""

    def write(self, name: str, data: bytes, **kwargs: Any) -> Any:
        if name.startswith(FEEDBACK_INCOMING_PREFIX):
            raise KeyboardInterrupt("killed")  # not an Exception: nothing on the way catches it
        return super().write(name, data, **kwargs)


def test_an_emission_a_crash_left_unfinished_is_finished_by_the_next_and_its_rows_not_emitted_again(
    loop: Loop,
) -> None:
    served = _served()
    loop.serve(served, time.time() - 1000)
    assert loop.with_settings(FEEDBACK_TRAINING="false").send(
        "labels/batch-1.csv", _labels(served, 0, 120)
    ).status == ("labels_stored")
    crashing = _CrashBeforeTheFile(loop.root, loop.settings.data_bucket)
    with pytest.raises(KeyboardInterrupt):
        emission.emit(loop.settings, data=crashing, artifacts=loop.artifacts, predictions=loop.predictions)
    assert loop.emitted_files() == []
    assert [i.name for i in loop.artifacts.list(EMITTED_PREFIX)] == [f"{EMITTED_PREFIX}00000001.npz"]

    result = loop.emit()
    assert result.emitted is None and [e.seq for e in result.finished] == [1]
    (name,) = loop.emitted_files()
    assert list(loop.read_file(name)["id"]) == [f"p{i:03d}" for i in range(120)]
    assert loop.artifacts.exists(f"{EMITTED_PREFIX}00000001.json")
    assert loop.emit().finished == ()  # finished once


class _AnotherEmitterFirst(LocalBucket):
    """An artifacts bucket where, just before this emitter reserves, another one emits in full."""

    def __init__(self, root: Path, name: str, rival: Any) -> None:
        super().__init__(root, name)
        self.rival = rival

    def write(self, name: str, data: bytes, **kwargs: Any) -> Any:
        if name.startswith(EMITTED_PREFIX) and name.endswith(".npz") and self.rival is not None:
            rival, self.rival = self.rival, None
            rival()
        return super().write(name, data, **kwargs)


def test_of_two_emitters_at_once_the_rows_go_out_once(loop: Loop) -> None:
    served = _served()
    loop.serve(served, time.time() - 1000)
    quiet = loop.with_settings(FEEDBACK_TRAINING="false")
    assert quiet.send("labels/batch-1.csv", _labels(served, 0, 100)).status == "labels_stored"
    rival_results: list[emission.EmitResult] = []

    def rival() -> None:  # a second labels file joined at the same moment, by another instance
        assert quiet.send("labels/batch-2.csv", _labels(served, 100, 150)).status == "labels_stored"
        rival_results.append(loop.emit())

    racing = _AnotherEmitterFirst(loop.root, loop.settings.artifacts_bucket, rival)
    result = emission.emit(loop.settings, data=loop.data, artifacts=racing, predictions=loop.predictions)

    (first,) = rival_results
    assert first.emitted is not None and first.emitted.rows == 150
    # This emitter had joined 100 rows; it lost number 1, read what it holds, and found none left.
    assert (result.emitted, result.emitted_before, result.new_rows) == (None, 150, 0)
    (name,) = loop.emitted_files()
    assert list(loop.read_file(name)["id"]) == [f"p{i:03d}" for i in range(150)]


def test_an_unreadable_emission_stops_emitting_rather_than_emit_rows_twice(loop: Loop) -> None:
    served = _served()
    loop.serve(served, time.time() - 1000)
    loop.with_settings(FEEDBACK_TRAINING="false").send("labels/batch-1.csv", _labels(served, 0, 100))
    assert loop.emit().emitted is not None
    loop.artifacts.write(f"{EMITTED_PREFIX}00000001.npz", b"written over by hand")
    with pytest.raises(EmissionError, match="which rows it emitted is unknown"):
        loop.emit()
    outcome = loop.send("labels/batch-2.csv", _labels(served, 100, 150))
    assert outcome.status == EventOutcome.LABELS_STORED  # the labels are stored all the same
    assert "no feedback rows emitted" in outcome.message
    assert len(loop.emitted_files()) == 1


def test_a_file_put_under_incoming_feedback_by_hand_trains_as_an_ordinary_file(loop: Loop) -> None:
    outcome = loop.send(f"{FEEDBACK_INCOMING_PREFIX}00000009-byhand.csv", training_rows(300, 3))
    assert outcome.status in (EventOutcome.PROMOTED, EventOutcome.REJECTED)
    entry = registry.read_card(loop.artifacts, outcome.version or "").lineage[-1]
    assert "source" not in entry


def test_prodml_feedback_emit_dry_run_then_emit(
    loop: Loop, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = _served()
    loop.serve(served, time.time() - 1000)
    loop.with_settings(FEEDBACK_TRAINING="false").send("labels/batch-1.csv", _labels(served, 0, 70))
    for key, value in {**loop.env, "FEEDBACK_TRAINING": "false"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        assert main(["feedback", "emit", "--dry-run", "--json"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert (dry["emitted"], dry["new_rows"], loop.emitted_files()) == (None, 70, [])
        assert main(["feedback", "emit"]) == 0
        out = capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    (name,) = loop.emitted_files()
    assert "emitted 70 rows (70 labelled, 0 defaulted)" in out and name in out


def test_rows_served_under_an_earlier_schema_are_left_out_and_the_labels_still_stored(loop: Loop) -> None:
    served = _served()
    loop.serve(served.iloc[:100], time.time() - 1000)  # served under the schema of day-1
    grown = Schema.from_dict(
        {**SCHEMA.to_dict(), "features": [*SCHEMA.to_dict()["features"], {"name": "extra", "type": "float"}]}
    )
    save_schema(loop.artifacts, grown)  # `prodml schema infer --upload` added a feature since

    outcome = loop.send("labels/batch-1.csv", _labels(served, 0, 100))

    assert outcome.status == EventOutcome.LABELS_STORED, outcome.message
    assert "no matured row that was not emitted before" in outcome.message  # none the schema can train
    assert loop.emitted_files() == []
