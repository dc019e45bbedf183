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
from shared.contracts import EVENTS_PREFIX, SHADOW_HISTORY_PREFIX, SHADOW_POINTER, CardStatus, ShadowChange
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


def test_a_promotion_whose_champion_is_replaced_before_its_model_swap_supersedes_the_card(
    artifacts: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    generation = registry.current_generation(artifacts)
    card = write_challenger(artifacts, "v3")
    # Another writer swaps v3 in between the pointer's end and the shadow's model swap.
    real_swap = shadow.swap_pointer

    def racing(*args: object, **kwargs: object) -> shadow.ShadowPointer:
        written = real_swap(*args, **kwargs)  # type: ignore[arg-type]
        promotion.swap_in(artifacts, card, artifacts.read(registry.model_name("v3")), generation,
                          previous="v1", reason="other", by="other")  # fmt: skip
        return written

    monkeypatch.setattr(shadow, "swap_pointer", racing)  # the fault: a race, injected
    shadow_policy.promote(artifacts, pointer, by="me", reason="by hand")

    assert registry.read_current(artifacts).version == "v3"  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.SUPERSEDED
    assert "serving model changed to v3 before it was swapped in" in reason(artifacts, "v2")
    assert changes(artifacts) == [("v2", "started"), ("v2", "promoted")]


def test_a_promotion_by_hand_after_the_champion_changed_is_refused_and_writes_nothing(
    artifacts: LocalBucket,
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    promote_version(artifacts, fit_serving_bundle("v9"))  # a rollback, another promotion

    with pytest.raises(ShadowError, match="serving model is now v9: not promoted"):
        shadow_policy.promote(artifacts, pointer, by="me", reason="by hand")

    assert registry.read_current(artifacts).version == "v9"  # type: ignore[union-attr]
    assert shadow.read_pointer(artifacts).version == "v2"  # type: ignore[union-attr]


def test_a_stop_landing_during_a_promotion_finds_nothing_running_and_the_history_says_promoted(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    real_swap_in = promotion.swap_in
    stops: list[str] = []

    def swap_then_operator_stops(*args: object, **kwargs: object) -> ModelCard:
        card = real_swap_in(*args, **kwargs)  # type: ignore[arg-type]
        # `prodml shadow stop` lands now: with a fresh read, and with the read it made before.
        for held in (shadow.read_pointer(artifacts), pointer):
            try:
                shadow_policy.stop(artifacts, held, ShadowChange.STOPPED, by="prodml shadow stop", reason="x")  # type: ignore[arg-type]
                stops.append("stopped")
            except (ShadowError, PreconditionFailed) as exc:
                stops.append(type(exc).__name__)
        return card

    monkeypatch.setattr(shadow_policy.promotion, "swap_in", swap_then_operator_stops)
    shadow_policy.promote(artifacts, pointer, by="train labels", reason="not worse")
    monkeypatch.setattr(shadow_policy.promotion, "swap_in", real_swap_in)

    assert stops == ["ShadowError", "PreconditionFailed"]  # nothing to stop; too late
    assert shadow_policy.evaluate(settings, artifacts, predictions, "retry").action == shadow_policy.NOTHING
    assert registry.read_current(artifacts).version == "v2"  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.PROMOTED
    assert changes(artifacts) == [("v2", "started"), ("v2", "promoted")]


def test_a_promoted_pointer_whose_model_swap_a_crash_cut_is_swapped_in_by_the_next_evaluation(
    settings: Settings, artifacts: LocalBucket, predictions: LocalBucket
) -> None:
    pointer = start(artifacts, write_challenger(artifacts, "v2"))
    # The crash: the pointer ended promoted, the model never swapped.
    ended = shadow.ended(pointer, ShadowChange.PROMOTED, by="train labels", reason="not worse")
    shadow.swap_pointer(artifacts, ended, pointer.generation, replacing=pointer)
    assert registry.read_current(artifacts).version == "v1"  # type: ignore[union-attr]

    assert shadow_policy.evaluate(settings, artifacts, predictions, "retry").action == shadow_policy.NOTHING

    assert registry.read_current(artifacts).version == "v2"  # type: ignore[union-attr]
    assert status(artifacts, "v2") == CardStatus.PROMOTED and reason(artifacts, "v2") == "not worse"
    swaps = registry.list_events(artifacts)
    assert [(e["version"], e["previous"], e["by"]) for e in swaps][-1] == ("v2", "v1", "train labels")


def test_a_lost_history_record_is_written_by_the_next_change_before_it_replaces_the_pointer(
    artifacts: LocalBucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        """The process dies here."""

    real_write = artifacts.write

    def killed_at_the_record(name: str, *args: object, **kwargs: object) -> int:
        if name.startswith(SHADOW_HISTORY_PREFIX):
            raise Killed()
        return real_write(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(artifacts, "write", killed_at_the_record)
    with pytest.raises(Killed):  # the crash: v2's pointer swapped, its record never written
        start(artifacts, write_challenger(artifacts, "v2"))
    monkeypatch.setattr(artifacts, "write", real_write)

    start(artifacts, write_challenger(artifacts, "v3"))

    assert changes(artifacts) == [("v2", "started"), ("v3", "replaced")]
    assert len(list(artifacts.list(SHADOW_HISTORY_PREFIX))) == 2  # both stored, not recovered


def lineage_card(artifacts: LocalBucket, version: str, refs: list[dict[str, object]]) -> ModelCard:
    """A challenger whose lineage holds ``refs``."""
    card = dataclasses.replace(write_challenger(artifacts, version), lineage=refs)
    registry.write_card(artifacts, card)
    return card


def ref(name: str, added_by: str) -> dict[str, object]:
    return {"bucket": "prodml-data", "name": f"incoming/{name}", "generation": 1, "added_by": added_by}


@pytest.mark.parametrize(
    ("change", "carried"),
    [
        (ShadowChange.EXPIRED, ["a.csv", "b.csv"]),
        (ShadowChange.STOPPED, ["a.csv", "b.csv"]),
        (ShadowChange.REJECTED, ["a.csv"]),  # worse on live labels: its own file is not carried
    ],
)
def test_an_ended_pointer_carries_the_runs_files_unless_its_own_was_rejected(
    artifacts: LocalBucket, change: ShadowChange, carried: list[str]
) -> None:
    # v2 replaced a shadow that added a.csv, so it carries a.csv beside its own b.csv.
    pointer = start(artifacts, lineage_card(artifacts, "v2", [ref("a.csv", "v0"), ref("b.csv", "v2")]))

    ended = shadow_policy.stop(artifacts, pointer, change, by="test", reason="ends")

    assert [r["name"] for r in ended.carry] == [f"incoming/{name}" for name in carried]
    assert shadow.read_pointer(artifacts).carry == ended.carry  # type: ignore[union-attr]
    # A version started by hand beside it keeps the carry its own lineage lacks.
    again = start(artifacts, lineage_card(artifacts, "v3", [ref("b.csv", "v3")]))
    assert [r["name"] for r in again.carry] == ["incoming/a.csv"]


def test_start_and_stop_replace_a_malformed_pointer_as_none_running_and_log_it(
    artifacts: LocalBucket, caplog: pytest.LogCaptureFixture
) -> None:
    artifacts.write(SHADOW_POINTER, b"{not json")

    pointer = start(artifacts, write_challenger(artifacts, "v2"))

    assert pointer.version == "v2" and pointer.change == ShadowChange.STARTED and pointer.previous is None
    assert status(artifacts, "v2") == CardStatus.SHADOW
    assert "replacing models/shadow.json generation" in caplog.text and "not valid JSON" in caplog.text
    artifacts.write(SHADOW_POINTER, b"[]")
    state = shadow.read_state(artifacts)
    repaired = shadow_policy.end_malformed(artifacts, state, by="prodml shadow stop", reason="by hand")
    assert not repaired.running and "replaced a malformed models/shadow.json" in repaired.reason
    assert shadow.read_pointer(artifacts) == repaired
