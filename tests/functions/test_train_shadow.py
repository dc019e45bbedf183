"""The shadow policy in a real train function process (PROMOTION_POLICY=shadow, issue 16 "must
show"): a challenger that passes the gate runs in shadow; labels files then decide it on live
evidence: promoted when not worse, stopped and recorded as rejected with its numbers when worse;
a trainer killed during a shadow run leaves the pointers whole and the redelivery completes; two
labels events at once promote once.

The prediction log is written as predict writes it (``log_format.write_log``), with the scores
the real champion and shadow models give each instance, so the test decides which model the
labels favour; real predict processes scoring the shadow are another item of the issue.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import deliver, drop_file, train_env, training_rows, training_schema

from shared.contracts import CURRENT_MODEL, CURRENT_VERSION_METADATA, EVENTS_PREFIX, CardStatus, EventOutcome
from shared.feedback.log_format import LogBatch, write_log
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.model import ModelBundle, to_frame
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger, registry, shadow

pytestmark = pytest.mark.slow

MIN_LABELS = 60
CLAIM_SECONDS = 10


@dataclass
class Shadowed:
    """A train process under PROMOTION_POLICY=shadow on its own local buckets."""

    process: FunctionProcess
    data: LocalBucket
    artifacts: LocalBucket
    predictions: LocalBucket
    crash_file: Path
    logs: int = 0

    def train(self, name: str, seed: int, event_id: str | None = None) -> dict[str, Any]:
        """Drop a data file, deliver its event; its "done" marker."""
        info = drop_file(self.data, name, training_rows(300, seed))
        assert deliver(self.process.url, info, event_id) == [200], self.process.log_tail()
        return self.marker(name, info.generation)

    def marker(self, name: str, generation: int) -> dict[str, Any]:
        marker = ledger.read_processed(self.artifacts, self.data.name, name, generation)
        assert marker is not None, self.process.log_tail()
        return marker

    def current(self) -> str:
        return self.artifacts.stat(CURRENT_MODEL).metadata[CURRENT_VERSION_METADATA]

    def bundle(self, version: str) -> ModelBundle:
        return ModelBundle.from_bytes(self.artifacts.read(registry.model_name(version)))

    def serve(
        self, champion: str, shadow_version: str, n: int, prefix: str
    ) -> dict[str, tuple[float, float]]:
        """Log ``n`` predictions as predict would: the champion's answer and the shadow's score of
        each instance; (champion score, shadow score) by id."""
        schema = training_schema()
        rows = training_rows(n, seed=sum(map(ord, prefix))).drop(columns=["converted"])
        frame = to_frame(schema, rows)
        served, shadowed = self.bundle(champion).scores(frame), self.bundle(shadow_version).scores(frame)
        batch = LogBatch(features={f.name: list(rows[f.name]) for f in schema.features})
        ids = [f"{prefix}-{i}" for i in range(n)]
        batch.ids, batch.times = ids, [time.time()] * n  # served during the shadow run
        batch.scores, batch.labels = [float(s) for s in served], [str(int(s >= 0.5)) for s in served]
        batch.sources, batch.model_versions, batch.table_builds = ["model"] * n, [champion] * n, [""] * n
        batch.shadow_scores, batch.shadow_versions = [float(s) for s in shadowed], [shadow_version] * n
        self.logs += 1
        write_log(self.predictions, batch, schema, "test-instance", self.logs)
        return {i: (float(a), float(b)) for i, a, b in zip(ids, served, shadowed, strict=True)}

    def labels(self, name: str, outcomes: dict[str, int]) -> tuple[str, int]:
        """Drop a labels file; its (name, generation), not yet delivered."""
        csv = "id,converted\n" + "".join(f"{i},{y}\n" for i, y in outcomes.items())
        info = drop_file(self.data, name, csv.encode())
        return name, info.generation


def favouring(scores: dict[str, tuple[float, float]], shadow_wins: bool) -> dict[str, int]:
    """Outcomes each of which the favoured model scored likelier than the other did."""
    return {i: int((s > c) == shadow_wins) for i, (c, s) in scores.items()}


@pytest.fixture
def stack(tmp_path: Path) -> Any:
    root = tmp_path / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, training_schema())
    crash_file = tmp_path / "crash-now"
    env = train_env(
        root,
        PROMOTION_POLICY="shadow",
        SHADOW_MIN_LABELS=str(MIN_LABELS),
        TRAIN_CLAIM_SECONDS=str(CLAIM_SECONDS),
        TRAIN_CRASH_FILE=str(crash_file),
    )
    spec = load_declaration().functions["train"]
    process = FunctionProcess(spec, free_port(), env, tmp_path / "train.log").start()
    try:
        data, predictions = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-predictions")
        yield Shadowed(process, data, artifacts, predictions, crash_file)
    finally:
        process.stop()


def champion_and_shadow(stack: Shadowed) -> tuple[str, str]:
    first = stack.train("incoming/day-1.csv", 1)
    assert first["outcome"] == EventOutcome.PROMOTED  # the first model: nothing to shadow against
    second = stack.train("incoming/day-2.csv", 2)
    assert second["outcome"] == EventOutcome.SHADOW, second
    assert stack.current() == first["version"]  # the champion still serves
    return first["version"], second["version"]


def history(stack: Shadowed) -> list[tuple[str | None, str]]:
    return [(r["version"] or r["previous"], r["change"]) for r in shadow.list_history(stack.artifacts)]


def test_a_shadow_better_on_live_labels_is_promoted_by_the_policy(stack: Shadowed) -> None:
    champion, challenger = champion_and_shadow(stack)
    assert registry.read_card(stack.artifacts, challenger).status == CardStatus.SHADOW
    scores = stack.serve(champion, challenger, 2 * MIN_LABELS, "a")
    few = dict(list(favouring(scores, shadow_wins=True).items())[: MIN_LABELS // 2])
    name, generation = stack.labels("labels/few.csv", few)
    assert deliver(stack.process.url, stack.data.stat(name)) == [200]
    waiting = stack.marker(name, generation)
    assert f"{MIN_LABELS // 2} of SHADOW_MIN_LABELS={MIN_LABELS}" in waiting["message"]
    assert stack.current() == champion

    name, generation = stack.labels("labels/all.csv", favouring(scores, shadow_wins=True))
    assert deliver(stack.process.url, stack.data.stat(name)) == [200]

    marker = stack.marker(name, generation)
    assert marker["outcome"] == EventOutcome.LABELS_STORED
    assert f"shadow {challenger}: promoted" in marker["message"]
    assert stack.current() == challenger  # current.skops names it
    card = registry.read_card(stack.artifacts, challenger)
    assert card.status == CardStatus.PROMOTED and "promoted on live labels" in card.decision.reason  # type: ignore[union-attr]
    assert history(stack) == [(challenger, "started"), (challenger, "promoted")]
    pointer = shadow.read_pointer(stack.artifacts)
    assert pointer is not None and not pointer.running and pointer.numbers["rows"] == 2 * MIN_LABELS
    swaps = registry.list_events(stack.artifacts)
    assert [(e["version"], e["previous"]) for e in swaps] == [(champion, None), (challenger, champion)]


def test_a_shadow_worse_on_live_labels_is_stopped_and_recorded_as_rejected_with_its_numbers(
    stack: Shadowed,
) -> None:
    champion, challenger = champion_and_shadow(stack)
    scores = stack.serve(champion, challenger, 2 * MIN_LABELS, "b")
    name, generation = stack.labels("labels/b.csv", favouring(scores, shadow_wins=False))

    assert deliver(stack.process.url, stack.data.stat(name)) == [200]

    assert f"shadow {challenger}: rejected" in stack.marker(name, generation)["message"]
    assert stack.current() == champion
    decision = registry.read_card(stack.artifacts, challenger).decision
    assert decision is not None and decision.status == CardStatus.REJECTED
    assert "worse on live labels" in decision.reason and f"rows {2 * MIN_LABELS}" in decision.reason
    pointer = shadow.read_pointer(stack.artifacts)
    assert pointer is not None and not pointer.running
    assert pointer.numbers["rows"] == 2 * MIN_LABELS and pointer.numbers["mean_difference"] > 0
    assert history(stack) == [(challenger, "started"), (challenger, "rejected")]


def test_a_trainer_killed_during_a_shadow_run_leaves_the_pointers_whole_and_the_redelivery_completes(
    stack: Shadowed,
) -> None:
    champion, running = champion_and_shadow(stack)
    pointer_before = stack.artifacts.read("models/shadow.json")
    stack.crash_file.touch()
    name = "incoming/day-3.csv"
    info = drop_file(stack.data, name, training_rows(300, 3))
    event_id = str(uuid.uuid4())

    assert deliver(stack.process.url, info, event_id, attempts=1)[0] >= 500  # died with the worker

    assert stack.artifacts.read("models/shadow.json") == pointer_before and stack.current() == champion
    (written,) = [c for c in registry.list_cards(stack.artifacts) if (c.event or {}).get("name") == name]
    assert written.status == CardStatus.PENDING
    assert not ledger.is_processed(stack.artifacts, stack.data.name, name, info.generation)

    assert deliver(stack.process.url, info, event_id) == [200], stack.process.log_tail()

    marker = stack.marker(name, info.generation)
    assert (marker["outcome"], marker["version"]) == (EventOutcome.SHADOW, written.version)  # the very one
    assert shadow.running_version(stack.artifacts) == written.version and stack.current() == champion
    assert registry.read_card(stack.artifacts, running).status == CardStatus.SUPERSEDED
    assert history(stack) == [(running, "started"), (written.version, "replaced")]
    # The replaced shadow's file is not lost: the newer challenger holds it beside the champion's.
    lineage = [r["name"] for r in registry.read_card(stack.artifacts, written.version).lineage]
    assert lineage == ["incoming/day-1.csv", "incoming/day-2.csv", name]


def test_two_labels_events_at_once_promote_once(stack: Shadowed) -> None:
    champion, challenger = champion_and_shadow(stack)
    outcomes = favouring(stack.serve(champion, challenger, 2 * MIN_LABELS, "c"), shadow_wins=True)
    ids = list(outcomes)
    files = [
        stack.labels("labels/x.csv", {i: outcomes[i] for i in ids[: MIN_LABELS + 10]}),
        stack.labels("labels/y.csv", {i: outcomes[i] for i in ids[MIN_LABELS - 10 :]}),
    ]

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda f: deliver(stack.process.url, stack.data.stat(f[0]))[-1], files))

    assert statuses == [200, 200], stack.process.log_tail()
    assert [stack.marker(*f)["outcome"] for f in files] == [EventOutcome.LABELS_STORED] * 2
    assert stack.current() == challenger
    promotions = [e for e in registry.list_events(stack.artifacts) if e["version"] == challenger]
    assert len(promotions) == 1 and len(list(stack.artifacts.list(EVENTS_PREFIX))) == 2
    assert history(stack) == [(challenger, "started"), (challenger, "promoted")]
    assert registry.read_card(stack.artifacts, challenger).status == CardStatus.PROMOTED
