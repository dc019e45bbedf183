"""The trainer in-process, on real local buckets: every task, both strategies, the paths around.

The train function process (tests/functions/test_train_function.py) runs the same
``handle_event``; here the cases that need a different schema or settings per test, or an
injected fault, run without one.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import drop_file, training_rows, training_schema
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline

from shared.config import Settings, load_settings
from shared.contracts import CURRENT_MODEL
from shared.data import monitoring
from shared.errors import PreconditionFailed, RetryLater
from shared.events import parse_storage_event, to_cloudevent
from shared.schema import Schema, save_schema
from shared.storage.local import LocalBucket
from shared.training import event_version, fitting, ledger, registry
from shared.training.on_event import Outcome, handle_event


@dataclass
class World:
    settings: Settings
    data: LocalBucket
    artifacts: LocalBucket

    def send(self, name: str, content: Any, event_id: str | None = None) -> Outcome:
        info = drop_file(self.data, name, content)
        return self.deliver(info, event_id)

    def deliver(self, info: Any, event_id: str | None = None) -> Outcome:
        event = parse_storage_event(to_cloudevent(info, event_id))
        return handle_event(event, self.settings, data=self.data, artifacts=self.artifacts)

    def with_settings(self, **env: str) -> World:
        return World(_settings(Path(self.data.folder).parent, **env), self.data, self.artifacts)

    def current(self) -> registry.Current:
        current = registry.read_current(self.artifacts, self.settings.model_trusted_types)
        assert current is not None
        return current


def _settings(root: Path, **env: str) -> Settings:
    return load_settings({"LOCAL_BUCKETS_ROOT": str(root), **env})


def make_world(tmp_path: Path, task: str = "binary", schema: Schema | None = None, **env: str) -> World:
    root = tmp_path / "buckets"
    settings = _settings(root, **env)
    world = World(
        settings, LocalBucket(root, settings.data_bucket), LocalBucket(root, settings.artifacts_bucket)
    )
    save_schema(world.artifacts, schema or training_schema(task))
    return world


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_label_task_trains_full_then_incremental_and_beats_a_trivial_model(
    tmp_path: Path, task: str
) -> None:
    world = make_world(tmp_path, task)
    for i in range(3):
        assert world.send(f"incoming/full-{i}.csv", training_rows(300, i, task)).status == "promoted"
    incremental = world.with_settings(TRAINING_STRATEGY="incremental")
    before = world.current().version
    outcome = incremental.send("incoming/inc.csv", training_rows(300, 9, task))
    assert outcome.status == "promoted", outcome.message
    card = registry.read_card(world.artifacts, outcome.version or "")
    assert card.strategy == "incremental"
    assert card.parent == before
    assert card.trained_on == [
        "prodml-data/incoming/inc.csv@" + str(world.data.stat("incoming/inc.csv").generation)
    ]

    current = world.current()
    test = training_rows(2000, 12345, task)
    quality = monitoring.evaluate(current.bundle, test)
    label = test[training_schema(task).label.name]
    if task == "binary":
        assert quality["roc_auc"] > 0.8
    elif task == "multiclass":
        majority = label.value_counts(normalize=True).max()
        assert quality["accuracy"] > majority + 0.15
    else:
        assert quality["rmse"] < 0.5 * float(label.std())


def test_test_then_train_records_the_live_model_on_the_file_before_training(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    first = world.send("incoming/a.csv", training_rows(300, 1))
    second = world.send("incoming/b.csv", training_rows(300, 2))

    info = world.data.stat("incoming/b.csv")
    record = json.loads(world.artifacts.read(monitoring.record_name("incoming/b.csv", info.generation)))
    assert record["model_version"] == first.version  # scored by the model before b trained it
    assert record["metrics"]["log_loss"] > 0 and 0 <= record["metrics"]["roc_auc"] <= 1
    assert set(record["psi"]) == {"country", "hour", "bid"}
    assert record["decision"] == "accepted"
    assert record["training"] == {"outcome": "promoted", "version": second.version, "message": second.message}
    card = registry.read_card(world.artifacts, second.version or "")
    assert card.reference["rows"] == card.training_rows


def _drifted_rows(seed: int) -> Any:
    frame = training_rows(300, seed)
    frame["bid"] = np.round(9 + frame["bid"] / 10, 3)  # every bid in [9, 10]
    return frame


def test_drift_warns_by_default_and_quarantines_by_setting(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))

    warned = world.send("incoming/drift-warn.csv", _drifted_rows(2))
    info = world.data.stat("incoming/drift-warn.csv")
    record = json.loads(world.artifacts.read(monitoring.record_name(info.name, info.generation)))
    assert record["decision"] == "warning" and record["drifted"] == ["bid"]
    assert warned.status == "promoted", warned.message  # a warning does not stop training

    strict = world.with_settings(DRIFT_POLICY="quarantine")
    before = world.artifacts.read(CURRENT_MODEL)
    outcome = strict.send("incoming/drift-strict.csv", _drifted_rows(3))
    assert (outcome.status, outcome.rule) == ("quarantined", "drift")
    reason = json.loads(world.data.read("quarantine/drift-strict.csv.reason.json"))
    assert reason["rule"] == "drift" and "bid" in reason["message"]
    assert world.artifacts.read(CURRENT_MODEL) == before


def test_without_a_schema_the_file_stays_and_a_later_delivery_trains_it(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.artifacts.delete("schema.json")
    info = drop_file(world.data, "incoming/early.csv", training_rows(300, 1))

    outcome = world.deliver(info)

    assert outcome.status == "no_schema" and "schema.json" in outcome.message
    assert world.data.exists("incoming/early.csv")
    assert not ledger.is_processed(world.artifacts, "prodml-data", "incoming/early.csv", info.generation)
    save_schema(world.artifacts, training_schema())
    assert world.deliver(info).status == "promoted"


def test_ignored_and_gone_objects(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    assert world.send("elsewhere/a.csv", training_rows(30, 1)).status == "ignored"
    old = drop_file(world.data, "incoming/replaced.csv", training_rows(300, 1))
    drop_file(world.data, "incoming/replaced.csv", training_rows(300, 2))
    assert world.deliver(old).status == "gone"
    assert registry.list_cards(world.artifacts) == []


def _everything(bucket: LocalBucket) -> list[str]:
    return sorted(info.name for info in bucket.list())


def test_a_forged_event_for_an_object_that_is_not_there_is_ignored_without_a_trace(tmp_path: Path) -> None:
    """The event's claims (size, generation) are not trusted: the object itself is looked at."""
    world = make_world(tmp_path, MAX_FILE_BYTES="20000")
    world.send("incoming/a.csv", training_rows(300, 1))
    real = drop_file(world.data, "incoming/real.csv", training_rows(300, 2))
    data_before, artifacts_before = _everything(world.data), _everything(world.artifacts)
    model_before = world.artifacts.read(CURRENT_MODEL)
    forged = [
        dataclasses.replace(real, name="incoming/never-written.csv", size=10**12),  # no such object
        dataclasses.replace(real, generation=real.generation + 7, size=10**12),  # no such generation
    ]

    outcomes = [world.deliver(info) for info in forged]

    assert [o.status for o in outcomes] == ["gone", "gone"], outcomes
    assert _everything(world.data) == data_before  # no quarantine/ reason, the real file untouched
    assert _everything(world.artifacts) == artifacts_before  # no marker, no record, no version
    assert world.artifacts.read(CURRENT_MODEL) == model_before


def test_a_real_object_over_the_limit_is_quarantined_whatever_size_its_event_claims(tmp_path: Path) -> None:
    world = make_world(tmp_path, MAX_FILE_BYTES="20000")
    big = drop_file(world.data, "incoming/big.csv", training_rows(3000, 6))
    assert big.size > 20000

    outcome = world.deliver(dataclasses.replace(big, size=10))  # the event understates the size

    assert (outcome.status, outcome.rule) == ("quarantined", "too_large")
    reason = json.loads(world.data.read("quarantine/big.csv.reason.json"))
    assert reason["rule"] == "too_large" and str(big.size) in reason["message"]


def test_a_promotion_whose_marker_was_lost_is_only_marked_on_redelivery(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    info = drop_file(world.data, "incoming/a.csv", training_rows(300, 1))
    first = world.deliver(info)
    world.artifacts.delete(ledger.processed_name("prodml-data", "incoming/a.csv", info.generation))

    again = world.deliver(info)

    assert (again.status, again.version) == ("already_trained", first.version)
    assert len(registry.list_cards(world.artifacts)) == 1
    assert ledger.is_processed(world.artifacts, "prodml-data", "incoming/a.csv", info.generation)


def test_a_version_left_by_a_crash_is_superseded_when_another_model_was_promoted_meanwhile(
    tmp_path: Path, mocker: Any
) -> None:
    world = make_world(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    crashed = drop_file(world.data, "incoming/crashed.csv", training_rows(300, 2))
    # Fault injection: the process "dies" right after writing its version and claim.
    mocker.patch("shared.training.on_event._maybe_crash", side_effect=SystemExit("killed"))
    with pytest.raises(SystemExit):
        world.deliver(crashed)
    mocker.stopall()
    (pending,) = [c for c in registry.list_cards(world.artifacts) if c.status == "pending"]
    other = world.send("incoming/other.csv", training_rows(300, 3))  # promoted meanwhile

    redelivered = world.deliver(crashed)

    assert redelivered.status == "promoted" and redelivered.version != pending.version
    assert registry.read_card(world.artifacts, pending.version).status == "superseded"
    card = registry.read_card(world.artifacts, redelivered.version or "")
    assert card.parent == other.version
    names = [r["name"] for r in world.current().lineage]
    assert names == ["incoming/a.csv", "incoming/other.csv", "incoming/crashed.csv"]


def test_when_others_always_promote_first_the_trainer_asks_for_redelivery(
    tmp_path: Path, mocker: Any
) -> None:
    world = make_world(tmp_path, CAS_MAX_ATTEMPTS="2")
    world.send("incoming/a.csv", training_rows(300, 1))
    before = world.artifacts.read(CURRENT_MODEL)
    mocker.patch("shared.training.registry.swap_current", side_effect=PreconditionFailed("someone else won"))
    info = drop_file(world.data, "incoming/b.csv", training_rows(300, 2))

    with pytest.raises(RetryLater, match="CAS_MAX_ATTEMPTS"):
        world.deliver(info)

    assert world.artifacts.read(CURRENT_MODEL) == before
    assert not ledger.is_processed(world.artifacts, "prodml-data", "incoming/b.csv", info.generation)
    statuses = [c.status for c in registry.list_cards(world.artifacts)]
    assert statuses == ["promoted", "superseded", "superseded"]


def forest(schema: Schema) -> Pipeline:
    """An ESTIMATOR plug-in without partial_fit (see test below)."""
    preprocess: ColumnTransformer = fitting.default_preprocessor(schema)
    return Pipeline(
        [("preprocess", preprocess), ("model", RandomForestClassifier(n_estimators=20, random_state=0))]
    )


def test_a_plugged_in_estimator_trains_and_incremental_falls_back_to_full(tmp_path: Path) -> None:
    world = make_world(
        tmp_path,
        ESTIMATOR="test_on_event:forest",
        TRAINING_STRATEGY="incremental",
        MODEL_TRUSTED_TYPES="sklearn.tree._tree.Tree",  # skops does not trust tree internals by default
    )
    world.send("incoming/a.csv", training_rows(300, 1))
    outcome = world.send("incoming/b.csv", training_rows(300, 2))

    card = registry.read_card(world.artifacts, outcome.version or "")
    assert card.estimator == "test_on_event:forest"
    assert (card.strategy, card.fallback_reason) == ("full", "the current model has no partial_fit")
    assert isinstance(world.current().bundle.estimator[-1], RandomForestClassifier)


def test_incremental_gates_on_the_stored_held_out_rows_even_when_old_files_are_gone(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    for i in range(3):
        world.send(f"incoming/old-{i}.csv", training_rows(300, i))
    old_keys = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in world.current().lineage]
    for i in range(3):
        world.data.delete(f"incoming/old-{i}.csv")  # e.g. a retention policy on the data bucket

    outcome = world.with_settings(TRAINING_STRATEGY="incremental").send(
        "incoming/new.csv", training_rows(300, 7)
    )

    card = registry.read_card(world.artifacts, outcome.version or "")
    assert card.metrics["holdout_files"] == old_keys
    assert card.skipped_files == []
    assert card.metrics["champion"]["rows"] == card.metrics["challenger"]["rows"] > 100
    assert world.artifacts.exists(card.holdout_cache)
    # A full retrain needs the files themselves: it says which ones it could not read.
    full = world.send("incoming/newer.csv", training_rows(300, 8))
    skipped = registry.read_card(world.artifacts, full.version or "").skipped_files
    assert [note.split(":")[0] for note in skipped] == old_keys


def test_a_full_retrain_reads_only_the_recent_files_that_fit_training_window_rows(tmp_path: Path) -> None:
    world = make_world(tmp_path, TRAINING_WINDOW_ROWS="700")  # 300-row files: the new one + one more
    for i in range(3):
        world.send(f"incoming/day-{i}.csv", training_rows(300, i))
    earlier = [ledger.file_key(r["bucket"], r["name"], r["generation"]) for r in world.current().lineage]

    outcome = world.send("incoming/day-3.csv", training_rows(300, 3))

    card = registry.read_card(world.artifacts, outcome.version or "")
    new_key = ledger.file_key(
        "prodml-data", "incoming/day-3.csv", world.data.stat("incoming/day-3.csv").generation
    )
    assert card.trained_on == [earlier[-1], new_key]
    assert card.training_rows <= 600
    # The gate still compares on the held-out rows of every recent file (from the stored table).
    assert card.metrics["holdout_files"] == earlier
    assert card.skipped_files == []
    assert [r["name"] for r in card.lineage] == [f"incoming/day-{i}.csv" for i in range(4)]


def test_a_file_with_a_duplicated_or_too_many_columns_is_quarantined_naming_them(tmp_path: Path) -> None:
    world = make_world(tmp_path, MAX_COLUMNS="6")
    rows = training_rows(50, 3)
    duplicated = rows.assign(hour2=(rows["hour"] + 1) % 24).rename(columns={"hour2": "hour"})
    assert world.send("incoming/dup.csv", duplicated).status == "quarantined"
    reason = json.loads(world.data.read("quarantine/dup.csv.reason.json"))
    assert reason["rule"] == "duplicate_columns" and reason["details"]["columns"] == ["hour"]
    assert "'hour'" in reason["message"]
    wide = rows.assign(a=1, b=2, c=3)  # 7 columns
    outcome = world.send("incoming/wide.csv", wide)
    assert (outcome.status, outcome.rule) == ("quarantined", "too_many_columns")
    reason = json.loads(world.data.read("quarantine/wide.csv.reason.json"))
    assert "7 columns" in reason["message"] and "MAX_COLUMNS=6" in reason["message"]
    assert not world.artifacts.exists(CURRENT_MODEL)  # nothing of either was trained on


def test_a_later_retrain_parses_only_the_schema_columns_of_an_accepted_wide_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.data import file_readers

    world = make_world(tmp_path, MAX_COLUMNS="200")
    assert world.send("incoming/first.csv", training_rows(300, 0)).status == "promoted"
    wide = training_rows(300, 1).assign(**{f"extra{i}": i for i in range(150)})
    assert world.send("incoming/wide.csv", wide).status == "promoted"
    # Record the width of every CSV chunk parsed from here on (a spy: the real reader runs).
    parsed: list[tuple[str, int]] = []
    real_chunks = file_readers.csv_chunks

    def spy(*args: Any, **kwargs: Any) -> Any:
        for chunk in real_chunks(*args, **kwargs):
            parsed.append((args[1], chunk.shape[1]))
            yield chunk

    monkeypatch.setattr(file_readers, "csv_chunks", spy)
    outcome = world.send("incoming/later.csv", training_rows(300, 2))
    assert outcome.status == "promoted", outcome.message
    card = registry.read_card(world.artifacts, outcome.version or "")
    assert any("/incoming/wide.csv@" in key for key in card.trained_on)  # it is in the window
    # The new file is read whole (a first read); the window's files, the wide one too, only in
    # the schema's 4 columns.
    assert dict(parsed) == {"incoming/later.csv": 4, "incoming/first.csv": 4, "incoming/wide.csv": 4}


# --- the claim: one delivery at a time works on a file version ---------------------------------


def _claim_blob(info: Any) -> str:
    return ledger.claim_name("prodml-data", info.name, info.generation)


def test_a_live_claim_turns_other_events_away_asks_its_own_again_and_expired_is_taken_over(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    info = drop_file(world.data, "incoming/a.csv", training_rows(300, 1))
    claim, held = ledger.acquire_claim(
        world.artifacts, "prodml-data", info.name, info.generation, "holder", 900
    )
    assert held

    other = world.deliver(info, "another-event")
    assert other.status == "claimed" and "event holder" in other.message
    with pytest.raises(RetryLater, match="this very event holds its claim"):
        world.deliver(info, "holder")  # maybe the platform's redelivery after the holder died
    assert registry.list_cards(world.artifacts) == []
    assert not ledger.is_processed(world.artifacts, "prodml-data", info.name, info.generation)
    assert ledger.read_claim(world.artifacts, claim.blob) == claim  # the losers left it alone

    # The holder died: once its claim has expired, a redelivery takes the work over and finishes.
    ledger.release_claim(world.artifacts, claim)  # as its expiry passing would, without a wait
    ledger.acquire_claim(world.artifacts, "prodml-data", info.name, info.generation, "holder", 0)
    assert world.deliver(info, "holder").status == "promoted"
    assert not world.artifacts.exists(claim.blob)  # done: the claim is gone, the marker is there
    assert ledger.is_processed(world.artifacts, "prodml-data", info.name, info.generation)


def test_a_claim_of_a_process_that_died_on_this_machine_is_taken_over_before_it_expires(
    tmp_path: Path,
) -> None:
    """A killed train instance's claim (900 s) must not turn its event's redeliveries away: the
    local router gives up after seconds. A holder elsewhere (no way to tell) waits for the expiry."""
    world = make_world(tmp_path)
    info = drop_file(world.data, "incoming/a.csv", training_rows(300, 1))
    root = world.artifacts.folder.parent
    # A real process takes the claim for 900 s and dies holding it, as a SIGKILLed worker does.
    grab = (
        "import sys; from pathlib import Path; from shared.training import ledger;"
        "from shared.storage.local import LocalBucket;"
        "ledger.acquire_claim(LocalBucket(Path(sys.argv[1]), 'prodml-artifacts'), 'prodml-data',"
        " sys.argv[2], int(sys.argv[3]), 'dead-holder', 900)"
    )
    subprocess.run([sys.executable, "-c", grab, str(root), info.name, str(info.generation)], check=True)
    dead = ledger.read_claim(world.artifacts, _claim_blob(info))
    assert dead is not None and dead.event_id == "dead-holder" and dead.holder
    assert dead.expired()  # gone, though its 900 s are not over

    assert world.deliver(info, "dead-holder").status == "promoted"  # its redelivery finishes it
    assert ledger.is_processed(world.artifacts, "prodml-data", info.name, info.generation)

    other = drop_file(world.data, "incoming/b.csv", training_rows(300, 2))
    elsewhere, _ = ledger.acquire_claim(
        world.artifacts, "prodml-data", other.name, other.generation, "x", 900
    )
    assert elsewhere.holder is not None and not ledger.holder_is_gone(elsewhere.holder)
    foreign = dataclasses.replace(elsewhere, holder="another-instance|boot|pid:[1]|7|1")
    assert not foreign.expired()  # another machine's process: only the expiry says it is gone


def test_of_two_deliveries_that_find_a_claim_expired_only_one_takes_it_over(
    tmp_path: Path, mocker: Any
) -> None:
    world = make_world(tmp_path)
    info = drop_file(world.data, "incoming/a.csv", training_rows(300, 1))
    dead, _ = ledger.acquire_claim(world.artifacts, "prodml-data", info.name, info.generation, "dead", 0)
    assert dead.expired()
    first, first_held = ledger.acquire_claim(
        world.artifacts, "prodml-data", info.name, info.generation, "first", 900
    )
    # Fault injection: the second taker read the claim before the first took it over.
    real_read = ledger.read_claim
    reads = iter([dead])
    mocker.patch(
        "shared.training.ledger.read_claim", side_effect=lambda *a: next(reads, None) or real_read(*a)
    )

    second, second_held = ledger.acquire_claim(
        world.artifacts, "prodml-data", info.name, info.generation, "second", 900
    )

    assert (first_held, second_held) == (True, False)
    assert second == first  # its compare-and-swap failed; it found the first taker's live claim
    assert real_read(world.artifacts, first.blob) == first


def test_a_delivery_whose_claim_was_taken_over_stops_without_writing_anything(
    tmp_path: Path, mocker: Any
) -> None:
    world = make_world(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    before = world.artifacts.read(CURRENT_MODEL)
    info = drop_file(world.data, "incoming/slow.csv", training_rows(300, 2))
    real_build = event_version.build_challenger

    def slow_build(request: Any) -> Any:
        built = real_build(request)
        # While this delivery trained past its claim's expiry, another one took the claim over.
        held = ledger.read_claim(world.artifacts, _claim_blob(info))
        assert held is not None
        ledger.release_claim(world.artifacts, held)
        ledger.acquire_claim(world.artifacts, "prodml-data", info.name, info.generation, "taker", 900)
        return built

    mocker.patch("shared.training.event_version.build_challenger", side_effect=slow_build)
    outcome = world.deliver(info, "slow")

    assert outcome.status == "claimed" and "taken over" in outcome.message
    assert [c.event["name"] for c in registry.list_cards(world.artifacts)] == ["incoming/a.csv"]
    assert world.artifacts.read(CURRENT_MODEL) == before
    assert not ledger.is_processed(world.artifacts, "prodml-data", info.name, info.generation)
    taker = ledger.read_claim(world.artifacts, _claim_blob(info))
    assert taker is not None and taker.event_id == "taker"  # left to the taker, not released
