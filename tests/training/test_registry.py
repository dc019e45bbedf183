"""The registry on a real local bucket: versions, compare-and-swap promotion, history, rollback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import training_rows, training_schema

from shared.contracts import CURRENT_MODEL, CardStatus
from shared.errors import PreconditionFailed, RegistryError
from shared.model import ModelBundle
from shared.storage.base import Bucket
from shared.storage.local import LocalBucket
from shared.training import fitting, ledger, registry
from shared.training.card import Decision, ModelCard


@pytest.fixture(scope="module")
def fitted() -> object:
    """One fitted default pipeline, shared: the registry does not care what the model learned."""
    schema = training_schema()
    return fitting.fit_full(fitting.default_pipeline(schema), training_rows(200, 1), schema)


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalBucket:
    return LocalBucket(tmp_path / "buckets", "prodml-artifacts")


def _version(artifacts: Bucket, estimator: object, version: str | None = None) -> tuple[str, bytes]:
    version = version or registry.new_version_id()
    data = ModelBundle(version, estimator, training_schema()).to_bytes()
    card = ModelCard(version, created=registry.now_iso(), decision=Decision(CardStatus.PENDING))
    registry.write_version(artifacts, version, data, card)
    return version, data


def _promote(artifacts: Bucket, version: str, data: bytes) -> int:
    expected = registry.current_generation(artifacts)
    current = registry.read_current(artifacts)
    previous = current.version if current else None
    return registry.swap_current(
        artifacts, version, data, expected, kind="promote", previous=previous, by="test"
    )


def test_version_ids_sort_by_time_and_never_collide() -> None:
    early = registry.new_version_id(datetime(2026, 11, 25, 12, 3, 1, tzinfo=UTC))
    late = registry.new_version_id(datetime(2026, 11, 25, 12, 3, 2, tzinfo=UTC))
    assert early.startswith("20261125T120301Z-") and len(early) == len("20261125T120301Z-a1b2c3")
    assert early < late
    same_second = {registry.new_version_id(datetime(2026, 1, 1, tzinfo=UTC)) for _ in range(200)}
    assert len(same_second) == 200


def test_a_version_is_written_once_and_read_back(artifacts: LocalBucket, fitted: object) -> None:
    version, data = _version(artifacts, fitted)
    assert registry.read_card(artifacts, version).version == version
    assert artifacts.read(registry.model_name(version)) == data
    with pytest.raises(PreconditionFailed):
        registry.write_version(artifacts, version, b"other", {"version": version})
    assert artifacts.read(registry.model_name(version)) == data
    with pytest.raises(RegistryError, match="invalid model version '../x'"):
        registry.model_name("../x")


def test_promotion_is_a_compare_and_swap_on_the_current_generation(
    artifacts: LocalBucket, fitted: object
) -> None:
    first, first_bytes = _version(artifacts, fitted)
    second, second_bytes = _version(artifacts, fitted)
    with pytest.raises(PreconditionFailed):  # "none yet" is generation 0; a wrong number fails
        registry.swap_current(artifacts, first, first_bytes, 12345, kind="promote", previous=None, by="test")
    generation = registry.swap_current(
        artifacts, first, first_bytes, 0, kind="promote", previous=None, by="test"
    )

    with pytest.raises(PreconditionFailed):  # a second writer that read "none yet" loses
        registry.swap_current(artifacts, second, second_bytes, 0, kind="promote", previous=None, by="test")
    assert artifacts.read(CURRENT_MODEL) == first_bytes

    registry.swap_current(
        artifacts, second, second_bytes, generation, kind="promote", previous=first, by="test"
    )
    current = registry.read_current(artifacts)
    assert current is not None and current.version == second
    events = registry.list_events(artifacts)
    assert [(e["kind"], e["version"], e["previous"]) for e in events] == [
        ("promote", first, None),
        ("promote", second, first),
    ]


def test_history_pops_on_rollback_and_recovers_a_lost_swap_record() -> None:
    def ev(kind: str, version: str) -> dict[str, str]:
        return {"kind": kind, "version": version}

    events = [ev("promote", "a"), ev("promote", "b"), ev("promote", "c"), ev("rollback", "b")]
    assert registry.promotion_history(events, "b") == ["a", "b"]
    assert registry.promotion_history([*events, ev("promote", "d")], "d") == ["a", "b", "d"]
    assert registry.promotion_history([*events, ev("rollback", "z")], "z") == ["a", "b", "z"]
    assert registry.promotion_history(events, "e") == ["a", "b", "e"]  # promoted, record lost


def test_rollback_goes_back_one_promotion_at_a_time(artifacts: LocalBucket, fitted: object) -> None:
    made = [_version(artifacts, fitted) for _ in range(3)]
    for version, data in made:
        _promote(artifacts, version, data)
    (a, a_bytes), (b, b_bytes), (c, _) = made

    first = registry.rollback(artifacts)
    assert (first.previous, first.version) == (c, b)
    assert artifacts.read(CURRENT_MODEL) == b_bytes
    second = registry.rollback(artifacts)
    assert (second.previous, second.version) == (b, a)
    assert artifacts.read(CURRENT_MODEL) == a_bytes
    with pytest.raises(RegistryError, match=f"nothing to roll back to: {a} is the first"):
        registry.rollback(artifacts)

    registry.rollback(artifacts, c)  # forward again, by name
    assert registry.read_current(artifacts).version == c  # type: ignore[union-attr]
    assert [e["kind"] for e in registry.list_events(artifacts)] == ["promote"] * 3 + ["rollback"] * 3
    with pytest.raises(RegistryError, match="no model version 'nope'"):
        registry.rollback(artifacts, "nope")
    with pytest.raises(RegistryError, match="already the current model"):
        registry.rollback(artifacts, c)


def test_rollback_recovers_from_a_current_model_that_will_not_load(
    artifacts: LocalBucket, fitted: object
) -> None:
    made = [_version(artifacts, fitted) for _ in range(3)]
    for version, data in made:
        _promote(artifacts, version, data)
    (a, a_bytes), (b, b_bytes), (c, c_bytes) = made
    artifacts.write(CURRENT_MODEL, b"garbage, not a skops file")

    done = registry.rollback(artifacts)  # back to the last good promotion: c, whose copy is whole
    assert (done.previous, done.version) == (registry.UNLOADABLE, c)
    assert artifacts.read(CURRENT_MODEL) == c_bytes
    assert registry.list_events(artifacts)[-1]["previous"] == registry.UNLOADABLE

    # The version copy of c is corrupt too: the walk goes on down to b.
    artifacts.write(CURRENT_MODEL, b"garbage again")
    artifacts.write(registry.model_name(c), b"garbage again")
    assert registry.rollback(artifacts).version == b
    assert artifacts.read(CURRENT_MODEL) == b_bytes

    artifacts.write(CURRENT_MODEL, b"garbage once more")
    assert registry.rollback(artifacts, a).version == a  # a named target, as asked
    assert artifacts.read(CURRENT_MODEL) == a_bytes
    artifacts.write(CURRENT_MODEL, b"garbage")
    with pytest.raises(RegistryError, match=f"version {c} cannot be loaded either"):
        registry.rollback(artifacts, c)


def test_rollback_without_a_model_says_so(artifacts: LocalBucket) -> None:
    with pytest.raises(RegistryError, match="no current model"):
        registry.rollback(artifacts)


def test_processed_markers_are_written_only_once(artifacts: LocalBucket) -> None:
    assert not ledger.is_processed(artifacts, "prodml-data", "incoming/a.csv", 7)
    assert ledger.mark_processed(artifacts, "prodml-data", "incoming/a.csv", 7, {"outcome": "promoted"})
    assert not ledger.mark_processed(artifacts, "prodml-data", "incoming/a.csv", 7, {"outcome": "other"})
    assert ledger.is_processed(artifacts, "prodml-data", "incoming/a.csv", 7)
    assert not ledger.is_processed(artifacts, "prodml-data", "incoming/a.csv", 8)  # another generation
    marker = ledger.read_processed(artifacts, "prodml-data", "incoming/a.csv", 7)
    assert marker is not None and marker["outcome"] == "promoted"
    assert artifacts.exists("registry/processed/prodml-data/incoming/a.csv@7.json")


def test_the_registry_works_the_same_on_each_backend(bucket: Bucket, fitted: object) -> None:
    """Versions, swaps, history and rollback through the Bucket protocol (local and GCS API).

    Precondition refusals are covered above on the local store: the GCS emulator does not
    enforce them.
    """
    first, first_bytes = _version(bucket, fitted)
    second, _ = _version(bucket, fitted)
    _promote(bucket, first, first_bytes)
    _promote(bucket, second, bucket.read(registry.model_name(second)))
    assert [c.version for c in registry.list_cards(bucket)] == [first, second]  # oldest first
    assert registry.read_current(bucket).version == second  # type: ignore[union-attr]

    assert registry.rollback(bucket).version == first
    assert bucket.read(CURRENT_MODEL) == first_bytes
    assert [e["kind"] for e in registry.list_events(bucket)] == ["promote", "promote", "rollback"]
    ledger.mark_processed(bucket, "prodml-data", "incoming/a b.csv", 3, {"outcome": "promoted"})
    assert ledger.is_processed(bucket, "prodml-data", "incoming/a b.csv", 3)


def test_a_done_marker_over_the_record_cap_is_cut_and_still_marks_the_file(artifacts: LocalBucket) -> None:
    from shared.record_caps import MAX_RECORD_BYTES

    record = {"outcome": "quarantined", "rule": "wrong_type", "message": "found " + "x" * 5_000_000}
    assert ledger.mark_processed(artifacts, "prodml-data", "incoming/a.csv", 7, record)
    assert len(artifacts.read(ledger.processed_name("prodml-data", "incoming/a.csv", 7))) <= MAX_RECORD_BYTES
    marker = ledger.read_processed(artifacts, "prodml-data", "incoming/a.csv", 7)
    assert marker is not None and (marker["name"], marker["generation"], marker["rule"]) == (
        "incoming/a.csv",
        7,
        "wrong_type",
    )
    assert marker["message"].startswith("found xxx") and "cut" in marker
