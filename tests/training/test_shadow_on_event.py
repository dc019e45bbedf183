"""The train function's handler in-process under PROMOTION_POLICY=shadow: what a replacing
challenger is trained on (incremental too), and an evaluation fault said in the outcome, not
raised (the real-process paths are in tests/functions/test_train_shadow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import drop_file, training_rows, training_schema

from shared.config import load_settings
from shared.contracts import SHADOW_POINTER, CardStatus, EventOutcome
from shared.events import parse_storage_event, to_cloudevent
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import event_shadow, on_event, registry, shadow, shadow_policy
from shared.training.on_event import Outcome, handle_event


class World:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        root = tmp_path / "buckets"
        self.settings = load_settings({"LOCAL_BUCKETS_ROOT": str(root), "PROMOTION_POLICY": "shadow", **env})
        self.data = LocalBucket(root, self.settings.data_bucket)
        self.artifacts = LocalBucket(root, self.settings.artifacts_bucket)
        save_schema(self.artifacts, training_schema())

    def send(self, name: str, content: Any) -> Outcome:
        info = drop_file(self.data, name, content)
        event = parse_storage_event(to_cloudevent(info))
        return handle_event(event, self.settings, data=self.data, artifacts=self.artifacts)


def test_an_incremental_challenger_replacing_a_shadow_also_learns_the_shadows_file(tmp_path: Path) -> None:
    world = World(tmp_path, TRAINING_STRATEGY="incremental")
    first = world.send("incoming/a.csv", training_rows(300, 1))
    second = world.send("incoming/b.csv", training_rows(300, 2))
    assert (first.status, second.status) == (EventOutcome.PROMOTED, EventOutcome.SHADOW), second.message

    third = world.send("incoming/c.csv", training_rows(300, 3))

    assert third.status == EventOutcome.SHADOW, third.message
    assert f"replacing {second.version}" in third.message
    card = registry.read_card(world.artifacts, third.version or "")
    # Trained full, so the carried file is read within TRAINING_WINDOW_ROWS (and says why).
    assert card.parent == first.version and card.strategy == "full"
    assert "1 files of the shadow it replaces are carried" in (card.fallback_reason or "")
    assert [r["name"] for r in card.lineage] == ["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]
    assert [key.split("@")[0] for key in card.trained_on] == [
        "prodml-data/incoming/a.csv",
        "prodml-data/incoming/b.csv",
        "prodml-data/incoming/c.csv",
    ]
    assert registry.read_card(world.artifacts, second.version or "").status == CardStatus.SUPERSEDED
    assert shadow.running_version(world.artifacts) == third.version


def test_a_stream_of_incremental_challengers_replacing_each_other_stays_within_the_window_rows(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, TRAINING_STRATEGY="incremental", TRAINING_WINDOW_ROWS="400")
    world.send("incoming/f0.csv", training_rows(300, 0))
    rows = []
    for i in range(1, 5):
        outcome = world.send(f"incoming/f{i}.csv", training_rows(300, i))
        assert outcome.status == EventOutcome.SHADOW, outcome.message
        card = registry.read_card(world.artifacts, outcome.version or "")
        rows.append(card.training_rows or 0)
        assert len(card.lineage) == i + 1  # every file still in the lineage

    assert max(rows) <= 400, rows


def test_two_data_files_at_once_both_end_in_the_running_shadows_lineage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    assert world.send("incoming/a.csv", training_rows(300, 1)).status == EventOutcome.PROMOTED
    real_start = event_shadow.start_shadow
    finished_first: list[Outcome] = []

    def c_finishes_first(job: Any, card: Any, current: Any, reason: str) -> Outcome | None:
        if job.event.name == "incoming/b.csv" and not finished_first:
            # b's challenger is trained; c arrives and starts in shadow first.
            monkeypatch.setattr(on_event.event_shadow, "start_shadow", real_start)
            finished_first.append(world.send("incoming/c.csv", training_rows(300, 3)))
        return real_start(job, card, current, reason)

    monkeypatch.setattr(on_event.event_shadow, "start_shadow", c_finishes_first)  # the race, injected
    b = world.send("incoming/b.csv", training_rows(300, 2))
    c = finished_first[0]

    assert (b.status, c.status) == (EventOutcome.SHADOW, EventOutcome.SHADOW), (b.message, c.message)
    running = shadow.running_version(world.artifacts)
    assert running == b.version and f"replacing {c.version}" in b.message
    names = [r["name"] for r in registry.read_card(world.artifacts, running or "").lineage]
    assert names == ["incoming/a.csv", "incoming/c.csv", "incoming/b.csv"]
    superseded = [
        card for card in registry.list_cards(world.artifacts) if card.status == CardStatus.SUPERSEDED
    ]
    assert any(
        "changed before it started in shadow" in (c.decision.reason if c.decision else "") for c in superseded
    )


def test_a_promotion_on_labels_while_a_file_trains_makes_that_file_train_again_beside_the_new_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    b = world.send("incoming/b.csv", training_rows(300, 2))
    assert b.status == EventOutcome.SHADOW, b.message
    real_start = event_shadow.start_shadow

    def labels_promote_b_meanwhile(job: Any, card: Any, current: Any, reason: str) -> Outcome | None:
        monkeypatch.setattr(on_event.event_shadow, "start_shadow", real_start)  # once
        pointer = shadow.read_pointer(world.artifacts)
        assert pointer is not None
        shadow_policy.promote(world.artifacts, pointer, by="labels", reason="live labels")
        return real_start(job, card, current, reason)

    monkeypatch.setattr(on_event.event_shadow, "start_shadow", labels_promote_b_meanwhile)
    c = world.send("incoming/c.csv", training_rows(300, 3))

    pointer = shadow.read_pointer(world.artifacts)
    assert c.status == EventOutcome.SHADOW and pointer is not None, c.message
    assert pointer.version == c.version and pointer.champion == b.version
    names = [r["name"] for r in registry.read_card(world.artifacts, c.version or "").lineage]
    assert names == ["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]


def test_an_expired_shadows_file_is_carried_into_the_next_challenger(tmp_path: Path) -> None:
    world = World(tmp_path, SHADOW_MAX_AGE="0.001")
    world.send("incoming/a.csv", training_rows(300, 1))
    b = world.send("incoming/b.csv", training_rows(300, 2))
    assert b.status == EventOutcome.SHADOW, b.message

    c = world.send("incoming/c.csv", training_rows(300, 3))  # b expires first (SHADOW_MAX_AGE)

    assert c.status == EventOutcome.SHADOW and f"shadow {b.version}: expired" in c.message, c.message
    assert registry.read_card(world.artifacts, b.version or "").status == CardStatus.REJECTED
    names = [r["name"] for r in registry.read_card(world.artifacts, c.version or "").lineage]
    assert names == ["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]


def test_a_malformed_pointer_is_replaced_by_the_next_challenger_not_a_stalled_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    world.artifacts.write(SHADOW_POINTER, b"{not json")  # broken by hand

    outcome = world.send("incoming/b.csv", training_rows(300, 2))

    assert outcome.status == EventOutcome.SHADOW, outcome.message
    assert shadow.running_version(world.artifacts) == outcome.version
    assert "which is not a pointer (models/shadow.json is not valid JSON" in caplog.text


def test_a_shadow_that_cannot_be_evaluated_is_said_in_the_labels_outcome_not_raised(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    world.artifacts.write(SHADOW_POINTER, b"{not json")  # broken by hand

    outcome = world.send("labels/l.csv", b"id,converted\nx,1\n")

    assert outcome.status == EventOutcome.LABELS_STORED
    assert "the shadow was not evaluated: models/shadow.json is not valid JSON" in outcome.message
