"""The train function's handler in-process under PROMOTION_POLICY=shadow: what a replacing
challenger is trained on (incremental too), and an evaluation fault said in the outcome, not
raised (the real-process paths are in tests/functions/test_train_shadow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import drop_file, training_rows, training_schema

from shared.config import load_settings
from shared.contracts import SHADOW_POINTER, CardStatus, EventOutcome
from shared.events import parse_storage_event, to_cloudevent
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import registry, shadow
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
    assert card.parent == first.version and card.strategy == "incremental"
    assert [r["name"] for r in card.lineage] == ["incoming/a.csv", "incoming/b.csv", "incoming/c.csv"]
    assert [key.split("@")[0] for key in card.trained_on] == [
        "prodml-data/incoming/b.csv",
        "prodml-data/incoming/c.csv",
    ]
    assert registry.read_card(world.artifacts, second.version or "").status == CardStatus.SUPERSEDED
    assert shadow.running_version(world.artifacts) == third.version


def test_a_shadow_that_cannot_be_evaluated_is_said_in_the_labels_outcome_not_raised(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.send("incoming/a.csv", training_rows(300, 1))
    world.artifacts.write(SHADOW_POINTER, b"{not json")  # broken by hand

    outcome = world.send("labels/l.csv", b"id,converted\nx,1\n")

    assert outcome.status == EventOutcome.LABELS_STORED
    assert "the shadow was not evaluated: models/shadow.json is not valid JSON" in outcome.message
