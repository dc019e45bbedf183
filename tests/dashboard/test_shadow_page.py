"""The shadow page: the running shadow, its agreement and live comparison (from the live report the
train function writes after a labels file) equal to `prodml shadow status --json`, the history;
and the page and the overview with no shadow, and with a malformed pointer."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fit_serving_bundle, promote_version, train_env, training_schema
from page_parser import parse, scripts_or_handlers

from shared.config import get_settings
from shared.contracts import SHADOW_POINTER, CardStatus, EventOutcome
from shared.dashboard.formatting import number
from shared.dashboard.routes import handle
from shared.dashboard.sources import Sources
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback.log_format import LogBatch, write_log
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import registry, shadow_policy
from shared.training.card import Decision, ModelCard
from shared.training.on_event import handle_event

Run = Callable[..., tuple[int, str, str]]
MIN_LABELS = 50


@pytest.fixture
def prodml(tmp_path: Path, cli_in_process: Callable[[dict[str, str]], Run]) -> Run:
    run = cli_in_process(
        train_env(
            tmp_path / "buckets",
            LOG_LEVEL="warning",
            DASHBOARD_CACHE_SECONDS="0",
            SHADOW_MIN_LABELS=str(MIN_LABELS),
        )
    )
    save_schema(LocalBucket(tmp_path / "buckets", "prodml-artifacts"), training_schema())
    return run


def page(path: str) -> tuple[int, bytes]:
    answer = handle(Sources.open(get_settings()), "GET", path, {})
    return answer.status, answer.body


@pytest.fixture
def running(tmp_path: Path, prodml: Run) -> dict[str, str]:
    """v1 serving, v2 in shadow beside it; 80 predictions logged with both scores, 60 labelled
    through the train function's labels handler (which writes the live report)."""
    root = tmp_path / "buckets"
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    predictions = LocalBucket(root, "prodml-predictions")
    promote_version(artifacts, fit_serving_bundle("v1"))
    card = ModelCard(version="v2", parent="v1", decision=Decision(CardStatus.PENDING, "promoted: gate"))
    registry.write_version(artifacts, "v2", fit_serving_bundle("v2", flip=True).to_bytes(), card)
    shadow_policy.start(artifacts, card, champion="v1", by="test", reason="passed the gate <b>x</b>")

    schema = training_schema()
    batch = LogBatch(features={f.name: [] for f in schema.features})
    for i in range(80):
        champion, candidate = 0.2 + 0.6 * (i % 2), 0.3 + 0.5 * (i % 3 == 0)
        batch.ids.append(f"imp-{i}")
        batch.times.append(time.time())  # served during the shadow run, which began above
        batch.scores.append(champion)
        batch.labels.append(str(int(champion >= 0.5)))
        batch.sources.append("table" if i % 4 == 0 else "model")
        batch.model_versions.append("v1")
        batch.table_builds.append("")
        batch.shadow_scores.append(candidate)
        batch.shadow_versions.append("v2")
        for feature in schema.features:
            batch.features[feature.name].append(feature.domain[0] if feature.domain else 1.0)
    write_log(predictions, batch, schema, "instance", 1)
    labels = "id,converted\n" + "".join(f"imp-{i},{i % 2}\n" for i in range(60))
    data.write("labels/day.csv", labels.encode())
    event = parse_storage_event(to_cloudevent(data.stat("labels/day.csv")))
    outcome = handle_event(event, get_settings(), data=data, artifacts=artifacts)
    assert outcome.status == EventOutcome.LABELS_STORED, outcome.message
    return {"root": str(root)}


def test_the_shadow_page_shows_prodml_shadow_status_json(running: dict[str, str], prodml: Run) -> None:
    code, out, err = prodml("shadow", "status", "--json")
    assert code == 0, err
    status = json.loads(out)
    comparison = status["comparison"]

    code_, body = page("/shadow")

    shown = parse(body)
    assert code_ == 200 and scripts_or_handlers(shown) == [] and b"<b>" not in body
    assert shown.definitions["in shadow"] == "v2" and shown.definitions["beside champion"] == "v1"
    agreement = {row["source"]: row for row in shown.table_with("source")}
    assert set(agreement) == set(comparison["agreement"]) == {"all", "model", "table"}
    for source, expected in comparison["agreement"].items():
        assert agreement[source]["rows"] == number(expected["rows"])
        assert agreement[source]["mean |shadow - champion|"] == number(expected["mean_abs_difference"])
        assert agreement[source]["flipped labels"] == number(expected["flipped_share"])
    live = comparison["live"]
    assert live["rows"] == 60 and live["decision"] in ("not_worse", "worse")
    assert shown.definitions["decision"] == live["decision"]
    assert shown.definitions["matured rows both scored"] == "60"
    assert shown.definitions[f"champion {live['metric']}"] == number(live["champion_metric"])
    assert shown.definitions[f"shadow {live['metric']}"] == number(live["shadow_metric"])
    assert not math.isnan(float(shown.definitions["mean_difference"]))
    assert "passed the gate <b>x</b>" in shown.definitions["why"]  # markup shown as text
    (started,) = shown.table_with("generation")
    assert (started["change"], started["version"]) == ("started", "v2")

    overview = parse(page("/")[1]).all_text()
    assert "shadow: v2 runs beside v1" in overview


def test_without_a_shadow_the_page_says_how_to_start_one_and_a_malformed_pointer_is_said(
    tmp_path: Path, prodml: Run
) -> None:
    artifacts = LocalBucket(tmp_path / "buckets", "prodml-artifacts")
    status, body = page("/shadow")
    assert status == 200 and "no shadow running" in parse(body).all_text()
    assert "no shadow ever ran" in parse(body).all_text()

    artifacts.write(SHADOW_POINTER, b"<script>not json")
    status, body = page("/shadow")
    text = parse(body).all_text()
    assert status == 200 and "the shadow pointer cannot be read" in text and b"<script" not in body
    assert status == page("/")[0] == 200
