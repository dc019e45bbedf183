"""``prodml shadow start|status|promote|stop``, run as a user runs them (in-process
``shared.cli.main`` with a shell's environment), on real local buckets."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fit_serving_bundle, promote_version, train_env, training_schema

from shared.contracts import CURRENT_MODEL, CURRENT_VERSION_METADATA, SHADOW_POINTER, CardStatus
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import registry
from shared.training.card import Decision, ModelCard

Run = Callable[..., tuple[int, str, str]]
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalBucket:
    """v1 serving; v2 passed the gate (pending), v3 newer but rejected."""
    bucket = LocalBucket(tmp_path / "buckets", "prodml-artifacts")
    save_schema(bucket, training_schema())
    promote_version(bucket, fit_serving_bundle("v1"))
    for version, status in (("v2", CardStatus.PENDING), ("v3", CardStatus.REJECTED)):
        card = ModelCard(version=version, created=f"2026-01-0{version[1]}", decision=Decision(status, "gate"))
        registry.write_version(bucket, version, fit_serving_bundle(version, flip=True).to_bytes(), card)
    return bucket


@pytest.fixture
def prodml(tmp_path: Path, cli_in_process: Callable[[dict[str, str]], Run]) -> Run:
    return cli_in_process(train_env(tmp_path / "buckets", LOG_LEVEL="warning", SHADOW_MIN_LABELS="30"))


def test_start_without_a_version_picks_the_most_recent_challenger_not_rejected(
    prodml: Run, artifacts: LocalBucket
) -> None:
    code, out, err = prodml("shadow", "start")

    assert code == 0, err
    assert out.strip() == "v2 in shadow beside v1"
    assert registry.read_card(artifacts, "v2").status == CardStatus.SHADOW


def test_status_json_has_the_pointer_its_age_the_policy_the_comparison_and_the_history(
    prodml: Run, artifacts: LocalBucket
) -> None:
    assert prodml("shadow", "start", "v2")[0] == 0

    code, out, err = prodml("shadow", "status", "--json")

    assert code == 0, err
    body = json.loads(out)
    assert set(body) == {
        "pointer", "running", "age_seconds", "current", "policy", "comparison", "comparison_error", "history",
    }  # fmt: skip
    assert body["running"] == "v2" and body["current"] == "v1" and body["age_seconds"] >= 0
    assert body["pointer"]["champion"] == "v1" and body["pointer"]["change"] == "started"
    assert body["policy"]["shadow_min_labels"] == 30 and body["policy"]["promotion_policy"] == "offline"
    live = body["comparison"]["live"]
    assert live["rows"] == 0 and live["decision"] == "waiting" and body["comparison_error"] is None
    assert [(r["version"], r["change"]) for r in body["history"]] == [("v2", "started")]
    code, text, _ = prodml("shadow", "status")
    assert code == 0 and "in shadow: v2 beside v1" in text and "waiting" in text


def test_promote_by_hand_makes_the_shadow_the_serving_model_and_ends_the_run(
    prodml: Run, artifacts: LocalBucket
) -> None:
    prodml("shadow", "start", "v2")

    code, out, err = prodml("shadow", "promote")

    assert code == 0, err
    assert out.startswith("v2: promoted (promoted by hand")
    assert artifacts.stat(CURRENT_MODEL).metadata[CURRENT_VERSION_METADATA] == "v2"
    assert registry.read_card(artifacts, "v2").status == CardStatus.PROMOTED
    body = json.loads(prodml("shadow", "status", "--json")[1])
    assert body["running"] is None and body["comparison"] is None
    assert [(r["previous"], r["change"]) for r in body["history"]][-1] == ("v2", "promoted")


def test_stop_by_hand_ends_the_run_and_promote_or_stop_without_a_shadow_is_refused(
    prodml: Run, artifacts: LocalBucket
) -> None:
    prodml("shadow", "start", "v2")

    code, out, err = prodml("shadow", "stop", "--reason", "seen enough\x1b[2J")

    assert code == 0, err
    assert RAW_CONTROL.search(out) is None and "seen enough\\x1b[2J" in out
    assert registry.read_card(artifacts, "v2").status == CardStatus.PENDING
    assert artifacts.stat(CURRENT_MODEL).metadata[CURRENT_VERSION_METADATA] == "v1"
    for action in ("promote", "stop"):
        code, _, err = prodml("shadow", action)
        assert code == 1 and "no version runs in shadow" in err
    code, text, _ = prodml("shadow", "status")
    assert "no version runs in shadow" in text and RAW_CONTROL.search(text) is None


def test_start_of_an_unknown_version_is_refused_with_its_name(prodml: Run, artifacts: LocalBucket) -> None:
    code, _, err = prodml("shadow", "start", "v9")
    assert code == 1 and "no model version 'v9'" in err
    code, _, err = prodml("shadow", "start", "v1")
    assert code == 1 and "v1 is the current model" in err


def test_stop_repairs_a_malformed_pointer_and_training_can_start_a_shadow_again(
    prodml: Run, artifacts: LocalBucket
) -> None:
    artifacts.write(SHADOW_POINTER, b"{not json")

    code, out, err = prodml("shadow", "stop", "--json")

    assert code == 0, err
    repaired = json.loads(out)
    assert repaired["version"] is None and repaired["change"] == "stopped"
    assert (
        "replaced a malformed models/shadow.json (models/shadow.json is not valid JSON" in repaired["reason"]
    )
    body = json.loads(prodml("shadow", "status", "--json")[1])
    assert body["running"] is None and body["history"][-1]["generation"] == repaired["generation"]
    assert prodml("shadow", "start", "v2")[0] == 0
