"""The shadow policy's decisions on real local buckets: start, replace, promote, stop, and the
evaluation's paths, each also after a crash between its two writes (pointer, then cards).

The comparison on live labels (``shared.feedback.shadow_compare``) is exercised through real
prediction log files in tests/functions/test_train_shadow.py; here are the paths that decide
before it is asked."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import fit_serving_bundle, promote_version

from shared.config import Settings, load_settings
from shared.contracts import EVENTS_PREFIX, CardStatus, ShadowChange
from shared.errors import PreconditionFailed, ShadowError
from shared.storage.local import LocalBucket
from shared.training import promotion, registry, shadow, shadow_policy
from shared.training.card import Decision, ModelCard
from shared.training.registry import iso


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"LOCAL_BUCKETS_ROOT": str(tmp_path / "buckets"), "PROMOTION_POLICY": "shadow"})


@pytest.fixture
def artifacts(settings: Settings) -> LocalBucket:
    """Local artifacts holding v1 as the current model."""
    bucket = LocalBucket(Path(settings.local_buckets_root), settings.artifacts_bucket)
    promote_version(bucket, fit_serving_bundle("v1"))
    return bucket


@pytest.fixture
def predictions(settings: Settings) -> LocalBucket:
    return LocalBucket(Path(settings.local_buckets_root), settings.predictions_bucket)


def write_challenger(artifacts: LocalBucket, version: str) -> ModelCard:
    """A version written by a trainer and passed by the offline gate (``pending``)."""
    card = ModelCard(version=version, parent="v1", decision=Decision(CardStatus.PENDING, "promoted: gate"))
    registry.write_version(artifacts, version, fit_serving_bundle(version, flip=True).to_bytes(), card)
    return card


def status(artifacts: LocalBucket, version: str) -> CardStatus | None:
    return registry.read_card(artifacts, version).status


def reason(artifacts: LocalBucket, version: str) -> str:
    decision = registry.read_card(artifacts, version).decision
    return decision.reason if decision is not None else ""


def changes(artifacts: LocalBucket) -> list[tuple[str | None, str]]:
    return [(r["version"] or r["previous"], r["change"]) for r in shadow.list_history(artifacts)]


def start(artifacts: LocalBucket, card: ModelCard) -> shadow.ShadowPointer:
    return shadow_policy.start(artifacts, card, champion="v1", by="test", reason="passed the gate")


def test_a_started_shadow_is_named_by_the_pointer_and_its_card_and_a_second_start_changes_nothing(
    artifacts: LocalBucket,
) -> None:
    card = write_challenger(artifacts, "v2")
    first = start(artifacts, card)
    again = start(artifacts, registry.read_card(artifacts, "v2"))

    assert again.generation == first.generation  # no new pointer, no new record
    assert first.version == "v2" and first.champion == "v1" and first.change == ShadowChange.STARTED
    assert status(artifacts, "v2") == CardStatus.SHADOW and "beside v1" in reason(artifacts, "v2")
    assert changes(artifacts) == [("v2", "started")]
    assert registry.read_current(artifacts).version == "v1"  # type: ignore[union-attr]


def test_a_newer_challenger_replaces_the_running_shadow_whose_card_is_superseded(
    artifacts: LocalBucket,
) -> None:
    start(artifacts, write_challenger(artifacts, "v2"))
    pointer = start(artifacts, write_challenger(artifacts, "v3"))

    assert pointer.version == "v3" and pointer.previous == "v2" and pointer.change == ShadowChange.REPLACED
    assert status(artifacts, "v2") == CardStatus.SUPERSEDED
    assert reason(artifacts, "v2") == "replaced in shadow by v3"
    assert status(artifacts, "v3") == CardStatus.SHADOW
    assert changes(artifacts) == [("v2", "started"), ("v3", "replaced")]


def test_a_start_cut_by_a_crash_after_the_pointer_is_finished_by_its_rerun(artifacts: LocalBucket) -> None:
    start(artifacts, write_challenger(artifacts, "v2"))
    card = write_challenger(artifacts, "v3")
    before = shadow.read_pointer(artifacts)
    # The crash: the pointer swapped, neither card updated.
    new = shadow.started(
        "v3", champion="v1", form=registry.served_form(card), by="t", reason="r", previous=before
    )
    shadow.swap_pointer(artifacts, new, before.generation)  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.SHADOW and status(artifacts, "v3") == CardStatus.PENDING

    start(artifacts, card)  # the redelivery

    assert status(artifacts, "v2") == CardStatus.SUPERSEDED and status(artifacts, "v3") == CardStatus.SHADOW
    assert changes(artifacts) == [("v2", "started"), ("v3", "replaced")]


def test_a_promotion_by_hand_swaps_the_current_model_then_ends_the_pointer(artifacts: LocalBucket) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))

    ended = shadow_policy.promote(artifacts, pointer, by="me", reason="by hand", numbers={"rows": 3})

    assert registry.read_current(artifacts).version == "v2"  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.PROMOTED
    assert not ended.running and ended.previous == "v2" and ended.numbers == {"rows": 3}
    assert changes(artifacts) == [("v2", "started"), ("v2", "promoted")]
    swaps = registry.list_events(artifacts)
    assert [(e["kind"], e["version"], e["previous"]) for e in swaps][-1] == ("promote", "v2", "v1")


def test_a_promotion_cut_by_a_crash_after_the_swap_is_ended_by_the_next_evaluation_without_a_second_swap(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket
) -> None:
    card = write_challenger(artifacts, "v2")
    start(artifacts, card)
    model_bytes = artifacts.read(registry.model_name("v2"))
    # The crash: the model swapped in (its card's decision not even written), the pointer running.
    generation = registry.current_generation(artifacts)
    registry.swap_current(artifacts, "v2", model_bytes, generation, kind="promote", previous="v1", by="t")
    swaps = len(list(artifacts.list(EVENTS_PREFIX)))

    decision = shadow_policy.evaluate(settings, artifacts, predictions, "test")

    assert decision.action == ShadowChange.PROMOTED and decision.version == "v2"
    assert status(artifacts, "v2") == CardStatus.PROMOTED
    assert not shadow.read_pointer(artifacts).running  # type: ignore[union-attr]
    assert len(list(artifacts.list(EVENTS_PREFIX))) == swaps
    again = shadow_policy.evaluate(settings, artifacts, predictions, "test")
    assert again.action == shadow_policy.NOTHING
    assert changes(artifacts) == [("v2", "started"), ("v2", "promoted")]


def test_a_shadow_whose_champion_changed_under_it_is_stopped_and_its_card_superseded(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket
) -> None:
    start(artifacts, write_challenger(artifacts, "v2"))
    promote_version(artifacts, fit_serving_bundle("v9"))  # another promotion (or a rollback)

    decision = shadow_policy.evaluate(settings, artifacts, predictions, "test")

    assert decision.action == ShadowChange.STOPPED and "now v9" in decision.message
    assert status(artifacts, "v2") == CardStatus.SUPERSEDED and "now v9" in reason(artifacts, "v2")
    assert changes(artifacts) == [("v2", "started"), ("v2", "stopped")]
    assert registry.read_current(artifacts).version == "v9"  # type: ignore[union-attr]


def test_a_shadow_past_its_max_age_expires_and_is_recorded_as_rejected(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket
) -> None:
    card = write_challenger(artifacts, "v2")
    began = iso(datetime.now(UTC) - timedelta(hours=2))
    old = dataclasses.replace(
        shadow.started(
            "v2", champion="v1", form=registry.served_form(card), by="t", reason="r", previous=None
        ),
        started=began,
    )
    shadow.swap_pointer(artifacts, old, 0)
    hour = dataclasses.replace(settings, shadow_max_age=3600.0)

    decision = shadow_policy.evaluate(hour, artifacts, predictions, "test")

    assert decision.action == ShadowChange.EXPIRED and "SHADOW_MAX_AGE=3600 s" in decision.message
    assert status(artifacts, "v2") == CardStatus.REJECTED and "expired in shadow" in reason(artifacts, "v2")
    assert registry.read_current(artifacts).version == "v1"  # type: ignore[union-attr]


def test_a_stop_by_hand_leaves_the_card_pending_with_a_note_and_the_version_can_run_again(
    artifacts: LocalBucket,
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))

    shadow_policy.stop(artifacts, pointer, ShadowChange.STOPPED, by="prodml shadow stop", reason="enough")

    assert status(artifacts, "v2") == CardStatus.PENDING
    assert "stopped by prodml shadow stop: enough" in reason(artifacts, "v2")
    with pytest.raises(ShadowError, match="no version runs in shadow"):
        ended = shadow.read_pointer(artifacts)
        assert ended is not None
        shadow_policy.stop(artifacts, ended, ShadowChange.STOPPED, by="x", reason="")
    start(artifacts, registry.read_card(artifacts, "v2"))
    assert status(artifacts, "v2") == CardStatus.SHADOW
    assert changes(artifacts) == [("v2", "started"), ("v2", "stopped"), ("v2", "started")]


def test_of_two_deciders_on_one_pointer_the_second_writes_nothing_and_the_next_evaluation_finds_nothing(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    shadow_policy.promote(artifacts, pointer, by="first", reason="won")
    swaps = len(list(artifacts.list(EVENTS_PREFIX)))

    with pytest.raises(PreconditionFailed):  # read the same pointer: its end is refused
        shadow_policy.stop(artifacts, pointer, ShadowChange.REJECTED, by="second", reason="lost")

    assert status(artifacts, "v2") == CardStatus.PROMOTED
    assert shadow_policy.evaluate(settings, artifacts, predictions, "again").action == shadow_policy.NOTHING
    assert len(list(artifacts.list(EVENTS_PREFIX))) == swaps
    assert changes(artifacts) == [("v2", "started"), ("v2", "promoted")]


def test_a_promotion_that_loses_the_model_swap_writes_nothing(
    artifacts: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    generation = registry.current_generation(artifacts)
    card = write_challenger(artifacts, "v3")
    # Another trainer swaps in between our read of the current model and our swap.
    real_current = shadow_policy.current_model

    def racing(bucket: LocalBucket) -> tuple[str | None, int]:
        seen = real_current(bucket)
        promotion.swap_in(bucket, card, bucket.read(registry.model_name("v3")), generation, previous="v1",
                          reason="other", by="other")  # fmt: skip
        return seen

    monkeypatch.setattr(shadow_policy, "current_model", racing)  # the fault: a race, injected
    with pytest.raises(PreconditionFailed):
        shadow_policy.promote(artifacts, pointer, by="me", reason="by hand")

    assert registry.read_current(artifacts).version == "v3"  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.SHADOW
    assert shadow.read_pointer(artifacts).version == "v2"  # type: ignore[union-attr]
