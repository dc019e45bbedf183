"""The train function in a real functions-framework process, sent real CloudEvents over HTTP.

One process (binary label, default settings, a small MAX_FILE_BYTES, a crash trigger file) serves
every test of this module but the concurrency one, which has its own process. Tests that need a
current model make sure there is one, so each can also run alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from conftest import (
    UNREADABLE_DELIVERIES,
    deliver,
    drop_file,
    post_unreadable,
    train_env,
    training_rows,
    training_schema,
)
from sklearn.base import BaseEstimator

from shared.contracts import CURRENT_MODEL
from shared.events import build_cloudevent
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.model import ModelBundle
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger, registry
from shared.training.card import ModelCard

pytestmark = pytest.mark.slow

MAX_FILE_BYTES = 20_000  # a 300-row file is ~4 kB; the "too large" case writes ~40 kB
# A crashed trainer's claim expires this soon (the default is 900 s): long enough for a restarted
# worker to turn another delivery away first, short enough for a redelivery to take over in a test.
CLAIM_SECONDS = 10
REDELIVERIES = 25  # deliver()'s backoff tops out at 2 s: ~45 s of redeliveries, past CLAIM_SECONDS


@dataclass
class Stack:
    """A train function process on its own local buckets."""

    process: FunctionProcess
    data: LocalBucket
    artifacts: LocalBucket
    crash_file: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.url

    def current_bytes(self) -> bytes:
        return self.artifacts.read(CURRENT_MODEL)

    def current(self) -> registry.Current:
        current = registry.read_current(self.artifacts)
        assert current is not None
        return current

    def cards(self) -> list[ModelCard]:
        return registry.list_cards(self.artifacts)

    def cards_for(self, name: str) -> list[ModelCard]:
        return [c for c in self.cards() if (c.event or {}).get("name") == name]

    def train(self, name: str, seed: int, rows: int = 300, **kwargs: Any) -> Any:
        info = drop_file(self.data, name, training_rows(rows, seed, **kwargs))
        assert deliver(self.url, info) == [200], self.process.log_tail()
        return info


def _start(tmp: Path, task: str = "binary", **overrides: str) -> Stack:
    root = tmp / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, training_schema(task))
    crash_file = tmp / "crash-now"
    defaults = {
        "MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "TRAIN_CLAIM_SECONDS": str(CLAIM_SECONDS),
        "TRAIN_CRASH_FILE": str(crash_file),
    }
    env = train_env(root, **{**defaults, **overrides})
    spec = load_declaration().functions["train"]
    process = FunctionProcess(spec, free_port(), env, log_path=tmp / "train.log").start()
    return Stack(process, LocalBucket(root, "prodml-data"), artifacts, crash_file, env)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The module's train function process."""
    s = _start(tmp_path_factory.mktemp("train-fn"))
    try:
        yield s
    finally:
        s.process.stop()


@pytest.fixture
def trained(stack: Stack) -> Stack:
    """The stack with a current model trained on at least three files."""
    current = registry.read_current(stack.artifacts)
    have = len(current.lineage) if current is not None else 0
    for i in range(have, 3):
        stack.train(f"incoming/base-{i}.csv", seed=900 + i)
    return stack


def test_five_files_in_sequence_give_five_versions_and_the_right_current_model(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"incoming/day-{i}.csv" for i in range(5)]
    for i, name in enumerate(names):
        stack.train(name, seed=i)

    versions = [stack.cards_for(name) for name in names]
    assert [len(v) for v in versions] == [1, 1, 1, 1, 1]
    cards = [v[0] for v in versions]
    # Five files of one distribution: each full retrain is not worse than the model before it.
    assert [c.status for c in cards] == ["promoted"] * 5, [c.decision for c in cards]
    for parent, child in zip(cards, cards[1:], strict=False):
        assert child.parent == parent.version
    current = stack.current()
    assert current.version == cards[-1].version
    assert stack.current_bytes() == stack.artifacts.read(registry.model_name(cards[-1].version))
    lineage_names = [r["name"] for r in current.lineage]
    assert lineage_names[-5:] == names
    for card in cards:  # each card compares both models on the same held-out rows
        metrics = card.metrics
        if metrics["champion"] is not None:
            assert metrics["champion"]["rows"] == metrics["challenger"]["rows"] > 0
    assert cards[-1].metrics["challenger"]["roc_auc"] > 0.75  # it learned the signal

    from shared.cli import main
    from shared.config import get_settings

    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        capsys.readouterr()
        assert main(["models"]) == 0
        table = capsys.readouterr().out
        assert main(["models", "--json"]) == 0
        listing = json.loads(capsys.readouterr().out)
    finally:
        get_settings.cache_clear()
    for card in cards:
        assert card.version in table
    current_line = next(line for line in table.splitlines() if line.startswith("*"))
    assert cards[-1].version in current_line
    assert listing["current"] == cards[-1].version
    shown = {row["version"]: row for row in listing["versions"]}
    assert [shown[c.version]["decision"] for c in cards] == ["promoted"] * 5


def test_the_same_event_delivered_three_times_trains_once(trained: Stack) -> None:
    stack = trained
    info = drop_file(stack.data, "incoming/repeated.csv", training_rows(300, 21))
    event_id = str(uuid.uuid4())
    for _ in range(3):
        assert deliver(stack.url, info, event_id) == [200]
    assert len(stack.cards_for("incoming/repeated.csv")) == 1
    keys = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in stack.current().lineage]
    assert keys.count(ledger.file_key("prodml-data", "incoming/repeated.csv", info.generation)) == 1
    marker = ledger.read_processed(stack.artifacts, "prodml-data", "incoming/repeated.csv", info.generation)
    assert marker is not None and marker["outcome"] == "promoted"


def _versions_and_lineage(stack: Stack, info: Any) -> tuple[list[ModelCard], int]:
    """The versions written for a file, and how often the current model's lineage holds it."""
    keys = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in stack.current().lineage]
    return stack.cards_for(info.name), keys.count(ledger.file_key("prodml-data", info.name, info.generation))


def test_one_event_delivered_three_times_at_once_then_three_times_more_trains_once(trained: Stack) -> None:
    """Eventarc delivers duplicates concurrently: the claim lets one delivery do the work. The
    others of the same event are asked to come again (5xx) until it is done, then answered 2xx."""
    stack = trained
    info = drop_file(stack.data, "incoming/at-once.csv", training_rows(300, 71))
    event_id = str(uuid.uuid4())

    with ThreadPoolExecutor(max_workers=3) as pool:
        at_once = list(pool.map(lambda _: deliver(stack.url, info, event_id, REDELIVERIES), range(3)))
    after = [deliver(stack.url, info, event_id) for _ in range(3)]

    assert [statuses[-1] for statuses in at_once] == [200] * 3, at_once
    assert after == [[200]] * 3
    versions, in_lineage = _versions_and_lineage(stack, info)
    assert len(versions) == 1, [(c.version, c.decision) for c in versions]
    assert in_lineage == (1 if versions[0].status == "promoted" else 0)
    marker = ledger.read_processed(stack.artifacts, "prodml-data", info.name, info.generation)
    assert marker is not None and marker["version"] == versions[0].version
    assert not stack.artifacts.exists(ledger.claim_name("prodml-data", info.name, info.generation))


def test_two_events_for_one_generation_at_once_train_once(trained: Stack) -> None:
    stack = trained
    info = drop_file(stack.data, "incoming/two-ids.csv", training_rows(300, 72))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda eid: deliver(stack.url, info, eid), [str(uuid.uuid4()) for _ in "ab"]))

    assert results == [[200], [200]]  # the other event's delivery has nothing to retry
    versions, in_lineage = _versions_and_lineage(stack, info)
    assert len(versions) == 1, [(c.version, c.decision) for c in versions]
    assert in_lineage == (1 if versions[0].status == "promoted" else 0)
    assert ledger.is_processed(stack.artifacts, "prodml-data", info.name, info.generation)


def _bad_csv(**columns: Any) -> bytes:
    frame = training_rows(50, 5)
    for name, value in columns.items():
        if value is None:
            frame = frame.drop(columns=[name])
        else:
            frame[name] = frame[name].astype(object)
            frame.loc[3, name] = value
    return frame.to_csv(index=False).encode()


BAD_FILES = {
    "empty": ("incoming/empty.csv", b"", "empty"),
    "binary_junk": ("incoming/junk.csv", np.random.default_rng(1).bytes(4000), "unreadable"),
    "header_only": ("incoming/header.csv", b"country,hour,bid,converted\n", "empty"),
    "missing_label": ("incoming/nolabel.csv", _bad_csv(converted=None), "missing_label"),
    "wrong_types": ("incoming/types.csv", _bad_csv(hour="noon"), "wrong_type"),
    "nan_label": ("incoming/nanlabel.csv", _bad_csv(converted="NaN"), "invalid_label"),
    "infinite_label": ("incoming/inflabel.csv", _bad_csv(converted="inf"), "invalid_label"),
    "out_of_range": ("incoming/range.csv", _bad_csv(bid=12.5), "out_of_range"),
    "unseen_category": ("incoming/unseen.csv", _bad_csv(country="fr"), "unseen_category"),
    "too_large": ("incoming/large.csv", training_rows(3000, 6).to_csv(index=False).encode(), "too_large"),
    "unknown_extension": ("incoming/sheet.xlsx", _bad_csv(), "unknown_format"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_quarantined_with_its_reason_and_the_model_untouched(trained: Stack, case: str) -> None:
    stack = trained
    name, body, rule = BAD_FILES[case]
    before = stack.current_bytes()
    versions_before = len(stack.cards())
    info = drop_file(stack.data, name, body)

    assert deliver(stack.url, info) == [200]

    assert stack.current_bytes() == before
    assert len(stack.cards()) == versions_before
    assert not stack.data.exists(name)
    target = "quarantine/" + name.removeprefix("incoming/")
    assert stack.data.read(target) == body
    reason = json.loads(stack.data.read(target + ".reason.json"))
    assert (reason["object"], reason["generation"], reason["rule"]) == (name, info.generation, rule)
    assert reason["message"]
    marker = ledger.read_processed(stack.artifacts, "prodml-data", name, info.generation)
    assert marker is not None and (marker["outcome"], marker["rule"]) == ("quarantined", rule)


def test_a_file_with_shuffled_labels_trains_a_worse_model_that_is_rejected(trained: Stack) -> None:
    stack = trained
    before = stack.current_bytes()
    name = "incoming/shuffled.csv"
    stack.train(name, seed=77, shuffle=True)

    (card,) = stack.cards_for(name)
    assert card.status == "rejected", card.decision
    metrics = card.metrics
    worse_by = metrics["challenger"]["log_loss"] - metrics["champion"]["log_loss"]
    assert worse_by > 0.01  # PROMOTION_TOLERANCE
    assert stack.current_bytes() == before
    assert stack.artifacts.exists(registry.model_name(card.version))  # kept, for the record
    assert name not in [r["name"] for r in stack.current().lineage]


def test_objects_outside_incoming_and_foreign_events_are_ignored_with_2xx(stack: Stack) -> None:
    before = len(stack.cards())
    for name in ("quarantine/elsewhere.csv", "other/elsewhere.csv"):
        info = drop_file(stack.data, name, training_rows(30, 3))
        assert deliver(stack.url, info) == [200]
        assert stack.data.exists(name)
        assert not ledger.is_processed(stack.artifacts, "prodml-data", name, info.generation)
    headers, body = build_cloudevent(stack.data.stat("other/elsewhere.csv"))
    headers["ce-type"] = "google.cloud.storage.object.v1.deleted"
    assert requests.post(stack.url, headers=headers, data=body, timeout=30).status_code == 200
    escaping = dataclasses.replace(stack.data.stat("other/elsewhere.csv"), name="incoming/../../escape.csv")
    assert deliver(stack.url, escaping) == [200]  # refused, not retried
    assert len(stack.cards()) == before
    assert "escape.csv" in stack.process.log_tail() and "refuses" in stack.process.log_tail()


def test_a_trainer_killed_before_the_swap_leaves_the_model_whole_and_redelivery_completes(
    trained: Stack,
) -> None:
    """Fault injection: TRAIN_CRASH_FILE makes the worker SIGKILL itself after writing its version."""
    stack = trained
    before_bytes, before_version = stack.current_bytes(), stack.current().version
    stack.crash_file.touch()
    name = "incoming/crash.csv"
    info = drop_file(stack.data, name, training_rows(300, 31))
    event_id = str(uuid.uuid4())

    first = deliver(stack.url, info, event_id, attempts=1)

    assert first[0] >= 500  # the connection died with the worker
    assert not stack.crash_file.exists()
    assert stack.current_bytes() == before_bytes
    assert ModelBundle.from_bytes(before_bytes).version == before_version
    (written,) = stack.cards_for(name)
    assert written.status == "pending"
    assert not ledger.is_processed(stack.artifacts, "prodml-data", name, info.generation)
    # The dead worker's claim has not expired (CLAIM_SECONDS), but its holder is a process of this
    # machine that no longer runs: the first redelivery, a second later, takes it over at once.
    redelivered = deliver(stack.url, info, event_id, attempts=1)

    assert redelivered == [200], stack.process.log_tail()
    assert f"from the delivery of event {event_id}, whose process is gone" in stack.process.log_tail(20000)

    current = stack.current()
    assert current.version == written.version  # the very version written before the crash
    assert [c.version for c in stack.cards_for(name)] == [written.version]
    assert registry.read_card(stack.artifacts, written.version).status == "promoted"
    keys = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in current.lineage]
    assert keys.count(ledger.file_key("prodml-data", name, info.generation)) == 1
    assert ledger.is_processed(stack.artifacts, "prodml-data", name, info.generation)


def test_ten_files_delivered_concurrently_end_in_one_model_holding_all_ten_once(
    tmp_path: Path,
) -> None:
    # The gate is opened wide here: this test is about lost updates, not about model quality.
    stack = _start(tmp_path, PROMOTION_TOLERANCE="1000", CAS_MAX_ATTEMPTS="3")
    try:
        infos = [
            drop_file(stack.data, f"incoming/burst-{i}.csv", training_rows(200, 300 + i)) for i in range(10)
        ]
        # Every event twice, all at once: at-least-once delivery may duplicate an event.
        jobs = [(info, str(uuid.uuid4())) for info in infos]
        with ThreadPoolExecutor(max_workers=20) as pool:
            # A duplicate waits (5xx, redelivered) for the delivery holding the file's claim.
            results = list(pool.map(lambda job: deliver(stack.url, *job, attempts=40), jobs + jobs))
        assert all(statuses[-1] == 200 for statuses in results), results

        current = stack.current()
        keys = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in current.lineage]
        expected = [ledger.file_key("prodml-data", i.name, i.generation) for i in infos]
        assert sorted(keys) == sorted(expected)  # all ten, each exactly once
        promoted = [c for c in stack.cards() if c.status == "promoted"]
        assert sorted(c.event["name"] for c in promoted) == sorted(i.name for i in infos)
        assert all(ledger.is_processed(stack.artifacts, "prodml-data", i.name, i.generation) for i in infos)
    finally:
        stack.process.stop()


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_labels_train_and_promote_in_the_function(
    tmp_path: Path, task: str
) -> None:
    stack = _start(tmp_path, task)
    try:
        for i in range(2):
            stack.train(f"incoming/{task}-{i}.csv", seed=500 + i, task=task)
        current = stack.current()
        assert current.bundle.task == task
        assert [r["name"] for r in current.lineage] == [f"incoming/{task}-{i}.csv" for i in range(2)]
        card = registry.read_card(stack.artifacts, current.version)
        primary = "log_loss" if task == "multiclass" else "rmse"
        assert card.metrics["primary"] == primary
        assert card.metrics["champion"][primary] > 0  # the second model was gated against the first
        assert card.status == "promoted"
    finally:
        stack.process.stop()


def test_a_storage_outage_answers_5xx_and_the_redelivery_after_it_trains(trained: Stack) -> None:
    """Fault injection the local store cannot shrug off (the tests run as root, so chmod would not):
    a file where the buckets' temp folder must be makes every write fail, reads still work."""
    stack = trained
    name = "incoming/outage.csv"
    info = drop_file(stack.data, name, training_rows(300, 41))
    temp_folder = Path(stack.env["LOCAL_BUCKETS_ROOT"]) / ".tmp"
    shutil.rmtree(temp_folder)
    temp_folder.write_bytes(b"")
    try:
        assert deliver(stack.url, info, attempts=1)[0] >= 500  # transient: Eventarc will redeliver
        assert not ledger.is_processed(stack.artifacts, "prodml-data", name, info.generation)
        assert stack.cards_for(name) == []
    finally:
        temp_folder.unlink()
        temp_folder.mkdir()

    assert deliver(stack.url, info) == [200]  # the redelivery once the store is back
    (card,) = stack.cards_for(name)
    marker = ledger.read_processed(stack.artifacts, "prodml-data", name, info.generation)
    assert marker is not None and marker["version"] == card.version
    assert marker["outcome"] == card.status in ("promoted", "rejected")


def _log_lines_since(stack: Stack, offset: int) -> list[str]:
    assert stack.process.log_path is not None
    return stack.process.log_path.read_bytes()[offset:].decode(errors="replace").splitlines()


def test_deliveries_that_cannot_be_parsed_answer_2xx_with_a_log_line_and_real_events_still_train(
    trained: Stack,
) -> None:
    """functions-framework used to crash (500) on these before our function ran: the platform
    would have redelivered them for a day. A storage outage still answers 5xx (the test above)."""
    stack = trained
    before, versions_before = stack.current_bytes(), len(stack.cards())
    assert stack.process.log_path is not None
    offset = stack.process.log_path.stat().st_size

    assert post_unreadable(stack.url) == dict.fromkeys(UNREADABLE_DELIVERIES, 200)

    said = [line for line in _log_lines_since(stack, offset) if "cannot be parsed" in line]
    assert len(said) == 3, said
    assert "RecursionError" in said[0]
    assert "base64" in said[1]
    assert "legacy background event" in said[2] and "TypeError" in said[2]
    assert stack.current_bytes() == before and len(stack.cards()) == versions_before
    stack.train("incoming/after-unreadable.csv", seed=61)  # a real event still trains
    (card,) = stack.cards_for("incoming/after-unreadable.csv")
    assert card.status in ("promoted", "rejected")


class _Exploding(BaseEstimator):
    """A plugged-in estimator with a bug: its fit raises what no validation foresees."""

    def fit(self, X: Any, y: Any) -> _Exploding:
        raise RuntimeError("exploding estimator: a bug in the plug-in")


def exploding(schema: Any) -> _Exploding:
    """ESTIMATOR=test_train_function:exploding (the function process imports it from tests/)."""
    return _Exploding()


def test_a_bug_answers_2xx_and_is_recorded_where_prodml_monitor_shows_it(tmp_path: Path) -> None:
    """A non-transient error is not retried forever (docs/design.md: raise only for transient faults), but
    it is not lost either: `prodml monitor` shows the file with outcome "error" and where it failed,
    and `prodml replay` trains it once the bug is fixed."""
    here = Path(__file__).resolve().parent  # this module, and tests/ for the conftest it imports
    path = os.pathsep.join([str(here), str(here.parent), *sys.path])
    stack = _start(tmp_path, ESTIMATOR="test_train_function:exploding", PYTHONPATH=path)
    try:
        info = drop_file(stack.data, "incoming/bug.csv", training_rows(300, 51))
        assert deliver(stack.url, info, attempts=1) == [200]
    finally:
        stack.process.stop()
    assert not ledger.is_processed(stack.artifacts, "prodml-data", info.name, info.generation)

    prodml = str(Path(sys.executable).with_name("prodml"))
    env = {k: v for k, v in stack.env.items() if k not in ("ESTIMATOR", "TRAIN_CRASH_FILE")}
    shown = subprocess.run(
        [prodml, "monitor", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    (row,) = [r for r in json.loads(shown.stdout) if r["object"] == "incoming/bug.csv"]
    assert row["decision"] == "error"
    assert row["error"]["type"] == "RuntimeError"
    assert "exploding estimator" in row["message"]
    assert any("test_train_function.py" in where for where in row["error"]["where"])
    table = subprocess.run([prodml, "monitor"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert any("incoming/bug.csv" in line and "error" in line for line in table.splitlines()), table

    replayed = subprocess.run(
        [prodml, "replay", "--in-process", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert [o["outcome"] for o in json.loads(replayed.stdout)] == ["promoted"], replayed.stderr


def test_a_file_with_a_10_mb_cell_leaves_only_records_and_log_lines_under_the_cap(tmp_path: Path) -> None:
    """One huge cell once made a 20 MB reason, a 10 MB marker, a 20 MB monitoring record and a
    10 MB log line (each quoted the whole value). Every one is now under MAX_RECORD_BYTES, and
    the reason still says which rule and which column."""
    from shared.data.monitoring import record_name
    from shared.record_caps import MAX_RECORD_BYTES

    huge = 10 * 1024 * 1024
    stack = _start(tmp_path, MAX_FILE_BYTES=str(50 * 1024 * 1024))
    try:
        cases = {"country": "unseen_category", "bid": "wrong_type"}
        for column, rule in cases.items():
            rows = training_rows(50, 7).astype({column: object})
            rows.loc[3, column] = "x" * huge
            info = drop_file(stack.data, f"incoming/huge-{column}.csv", rows)
            assert deliver(stack.url, info) == [200], stack.process.log_tail()

            reason_bytes = stack.data.read(f"quarantine/huge-{column}.csv.reason.json")
            marker_bytes = stack.artifacts.read(
                ledger.processed_name("prodml-data", info.name, info.generation)
            )
            record_bytes = stack.artifacts.read(record_name(info.name, info.generation))
            sizes = [len(reason_bytes), len(marker_bytes), len(record_bytes)]
            assert max(sizes) <= MAX_RECORD_BYTES, sizes
            reason = json.loads(reason_bytes)
            assert reason["rule"] == rule and reason["details"]["columns"] == [column]
            assert f"'{column}'" in reason["message"] and "cut from 10485760 chars" in reason["message"]
            assert json.loads(marker_bytes)["rule"] == rule
            assert json.loads(record_bytes)["rule"] == rule
        lines = (tmp_path / "train.log").read_bytes().splitlines()
        assert sum(b"huge-country.csv" in line for line in lines) >= 1
        assert max(len(line) for line in lines) <= MAX_RECORD_BYTES
    finally:
        stack.process.stop()
