"""``prodml live``: the join of logged predictions (written with ``write_log``, as predict writes
them) and labels files (through the train function's handler), run as a user runs the command,
checked against a direct computation with scikit-learn on the same rows."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import train_env, training_rows, training_schema
from sklearn import metrics

from shared.cli import main
from shared.config import get_settings, load_settings
from shared.contracts import LIVE_REPORT_BLOB, EventOutcome
from shared.data.monitoring import reference_stats
from shared.events import parse_storage_event, to_cloudevent
from shared.feedback.log_format import LogBatch, write_log
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import registry
from shared.training.card import ModelCard
from shared.training.on_event import handle_event

Run = Callable[..., tuple[int, str, str]]
SCHEMA = training_schema()
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


class Loop:
    """Local buckets with the binary schema; logs written as predict does, labels dropped and handled."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.settings = load_settings(env)
        self.data = LocalBucket(root, "prodml-data")
        self.artifacts = LocalBucket(root, "prodml-artifacts")
        self.predictions = LocalBucket(root, "prodml-predictions")
        save_schema(self.artifacts, SCHEMA)
        self.seq = 0

    def log(self, rows: list[dict[str, Any]], features: pd.DataFrame | None = None) -> str:
        """Write one flush: each row's id, time, score, source, version (features from ``features``)."""
        batch = LogBatch()
        for i, row in enumerate(rows):
            batch.ids.append(row["id"])
            batch.times.append(row["time"])
            batch.scores.append(row["score"])
            batch.labels.append(str(int(row["score"] >= 0.5)))
            batch.sources.append(row.get("source", "model"))
            batch.model_versions.append(row.get("version", "v1"))
            batch.table_builds.append("tables/v1/full-x.npz" if row.get("source") == "table" else "")
            for feature in SCHEMA.features:
                value = features.iloc[i][feature.name] if features is not None else feature.domain[:1] or [1]
                batch.features.setdefault(feature.name, []).append(
                    value[0] if isinstance(value, list | tuple) else value
                )
        self.seq += 1
        return write_log(self.predictions, batch, SCHEMA, "instance-a", self.seq)

    def labels(self, name: str, frame: pd.DataFrame) -> str:
        self.data.write(name, frame.to_csv(index=False).encode())
        event = parse_storage_event(to_cloudevent(self.data.stat(name)))
        return handle_event(event, self.settings, data=self.data, artifacts=self.artifacts).status


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return train_env(tmp_path / "buckets", LOG_LEVEL="warning", LOG_FORMAT="text")


@pytest.fixture
def prodml(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Run]:
    def run(*args: str, **overrides: str) -> tuple[int, str, str]:
        for key, value in {**env, **overrides}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    get_settings.cache_clear()


def _live(prodml: Run, **overrides: str) -> dict[str, Any]:
    code, out, err = prodml("live", "--json", **overrides)
    assert code == 0, err
    return dict(json.loads(out))


def _expected(rows: pd.DataFrame) -> dict[str, Any]:
    """log loss, ROC AUC and accuracy with scikit-learn, straight from the rows."""
    truth, score = rows["truth"].to_numpy(dtype=int), rows["score"].to_numpy()
    return {
        "rows": float(len(rows)),
        "log_loss": metrics.log_loss(truth, score, labels=[0, 1]),
        "roc_auc": metrics.roc_auc_score(truth, score),
        "accuracy": metrics.accuracy_score(truth, (score >= 0.5).astype(int)),
    }


def test_live_counts_and_metrics_equal_a_direct_computation(env: dict[str, str], prodml: Run) -> None:
    loop = Loop(Path(env["LOCAL_BUCKETS_ROOT"]), env)
    rng = np.random.default_rng(7)
    now = time.time()
    served = pd.DataFrame(
        {
            "id": [f"p{i:03d}" for i in range(60)],
            "time": now - 100 + np.arange(60) * 0.5,
            "score": np.round(rng.uniform(0.02, 0.98, 60), 4),
            "source": ["table" if i % 3 == 0 else "model" for i in range(60)],
        }
    )
    truth = pd.Series((rng.random(60) < served["score"].to_numpy()).astype(int), index=served["id"])
    loop.log(served.iloc[:40].to_dict("records"))
    # p000 logged again later (a retried request logged twice): the first is kept.
    loop.log([{"id": "p000", "time": now, "score": 0.99, "source": "model"}])

    # Labels for p040..p059 arrive before their predictions are logged: kept, unmatched for now.
    early = pd.DataFrame({"id": served["id"][40:], "converted": truth.iloc[40:].to_numpy()})
    assert loop.labels("labels/early.csv", early) == EventOutcome.LABELS_STORED
    first = _live(prodml)
    assert (first["labels"]["unmatched"], first["labels"]["matched"]) == (20, 0)
    assert first["totals"] == {"served": 40, "labelled": 0, "defaulted": 0, "pending": 40, "matured": 0}

    # Labels for p000..p029, two ids nobody served, and p005 labelled twice: the later event wins.
    wrong = 1 - int(truth["p005"])
    main_file = pd.DataFrame(
        {
            "id": [*served["id"][:30], "ghost-1", "ghost-2"],
            "converted": [*truth.iloc[:30].to_numpy(), 1, 0],
            "event_time": now - 50,
        }
    )
    main_file.loc[5, "converted"] = wrong
    correction = pd.DataFrame({"id": ["p005"], "converted": [int(truth["p005"])], "event_time": [now - 10]})
    assert loop.labels("labels/day.csv", main_file) == EventOutcome.LABELS_STORED
    assert loop.labels("labels/correction.csv", correction) == EventOutcome.LABELS_STORED
    assert loop.labels("labels/day.csv", main_file) == EventOutcome.LABELS_STORED  # a new upload: same rows
    loop.log(served.iloc[40:].to_dict("records"))  # the late log of p040..p059

    report = _live(prodml)
    labelled = served[served["id"].isin([*served["id"][:30], *served["id"][40:]])].assign(
        truth=lambda f: truth[f["id"]].to_numpy()
    )
    assert report["log"] == {"objects": 3, "unreadable": 0, "rows": 61, "duplicate_ids": 1}
    # 20 early + 32 + 1 + 32 rows; duplicates: p005 twice more, and the whole re-upload (32).
    assert report["labels"]["rows"] == 85
    assert report["labels"]["duplicates"] == 85 - 52
    assert (report["labels"]["matched"], report["labels"]["unmatched"]) == (50, 2)
    assert report["labels"]["unmatched_ids"] == ["ghost-1", "ghost-2"]
    [version] = report["versions"]
    assert version["version"] == "v1"
    assert version["counts"] == {"served": 60, "labelled": 50, "defaulted": 0, "pending": 10, "matured": 50}
    assert version["metrics"] == pytest.approx(_expected(labelled))
    assert version["calibration"] == pytest.approx(
        {"mean_predicted": labelled["score"].mean(), "observed_rate": labelled["truth"].mean()}
    )
    for source in ("table", "model"):
        rows = labelled[labelled["source"] == source]
        assert version["by_source"][source]["counts"]["labelled"] == len(rows)
        assert version["by_source"][source]["metrics"] == pytest.approx(_expected(rows))
    assert sum(day["counts"]["served"] for day in version["by_day"]) == 60
    # The train function wrote the same report after the last labels file (before the late log).
    stored = json.loads(loop.artifacts.read(LIVE_REPORT_BLOB))
    assert stored["labels"]["rows"] == 85 and stored["totals"]["served"] == 40


def test_maturity_pending_before_the_window_default_after_it(env: dict[str, str], prodml: Run) -> None:
    loop = Loop(Path(env["LOCAL_BUCKETS_ROOT"]), env)
    now = time.time()
    old = [{"id": f"old{i}", "time": now - 7200, "score": 0.2 + 0.05 * i} for i in range(6)]
    new = [{"id": f"new{i}", "time": now - 60, "score": 0.3} for i in range(4)]
    loop.log(old + new)
    assert (
        loop.labels("labels/l.csv", pd.DataFrame({"id": ["old0", "new0"], "converted": [1, 1]}))
        == "labels_stored"
    )

    without_default = _live(prodml, LABEL_WINDOW="1h")
    assert without_default["totals"] == {
        "served": 10,
        "labelled": 2,
        "defaulted": 0,
        "pending": 8,
        "matured": 2,
    }

    report = _live(prodml, LABEL_WINDOW="1h", LABEL_DEFAULT="0")
    assert report["label_default"] == "0" and report["label_window_seconds"] == 3600
    # Older than the window and unlabelled: counted as 0; the young ones stay pending.
    assert report["totals"] == {"served": 10, "labelled": 2, "defaulted": 5, "pending": 3, "matured": 7}
    matured = pd.DataFrame({"score": [r["score"] for r in old] + [0.3], "truth": [1, 0, 0, 0, 0, 0, 1]})
    assert report["versions"][0]["metrics"] == pytest.approx(_expected(matured))

    wider = _live(prodml, LABEL_WINDOW="3h", LABEL_DEFAULT="0")  # now nothing is old enough
    assert wider["totals"]["defaulted"] == 0 and wider["totals"]["pending"] == 8

    code, _, err = prodml("live", LABEL_DEFAULT="maybe")
    assert code == 1 and "LABEL_DEFAULT='maybe' is not one of the label's classes" in err


def test_a_stream_with_one_feature_shifted_is_skewed_on_that_feature_only(
    env: dict[str, str], prodml: Run
) -> None:
    loop = Loop(Path(env["LOCAL_BUCKETS_ROOT"]), env)
    reference = reference_stats(training_rows(3000, seed=1), SCHEMA)
    for version in ("v1", "v2"):
        registry.write_card(loop.artifacts, ModelCard(version=version, reference=reference))
    now = time.time()
    same = training_rows(1500, seed=2)
    shifted = training_rows(1500, seed=3).assign(bid=lambda f: np.clip(f["bid"] + 4.0, 0.0, 10.0))
    for version, features in (("v1", same), ("v2", shifted)):
        rows = [
            {"id": f"{version}-{i}", "time": now, "score": 0.5, "version": version}
            for i in range(len(features))
        ]
        loop.log(rows, features)

    report = _live(prodml)
    skew = {v["version"]: v["skew"] for v in report["versions"]}
    assert skew["v1"]["skewed"] == [] and skew["v2"]["skewed"] == ["bid"]
    assert {n for n, f in skew["v2"]["features"].items() if f["skewed"]} == {"bid"}
    assert set(skew["v2"]["features"]) == {"country", "hour", "bid"}
    assert skew["v2"]["features"]["bid"]["psi"] > skew["v2"]["threshold"] == 0.25
    code, out, _ = prodml("live")
    assert code == 0 and re.search(r"^bid\s+\S+\s+SKEWED$", out, flags=re.MULTILINE), out


def test_unreadable_logs_are_counted_and_the_join_is_bounded(env: dict[str, str], prodml: Run) -> None:
    loop = Loop(Path(env["LOCAL_BUCKETS_ROOT"]), env)
    loop.log([{"id": f"a{i}", "time": time.time(), "score": 0.4} for i in range(4)])
    loop.predictions.write("predictions/2026-01-01/junk.npz", b"not a zip")
    report = _live(prodml)
    assert (report["log"]["objects"], report["log"]["unreadable"], report["log"]["rows"]) == (2, 1, 4)
    assert report["unreadable_objects"] == ["predictions/2026-01-01/junk.npz"]

    code, _, err = prodml("live", JOIN_MAX_ROWS="3")
    assert code == 1
    assert "JOIN_MAX_ROWS=3" in err and "Beam pipeline" in err


def test_the_text_report_escapes_values_from_data(env: dict[str, str], prodml: Run) -> None:
    loop = Loop(Path(env["LOCAL_BUCKETS_ROOT"]), env)
    loop.log([{"id": "a", "time": time.time(), "score": 0.4, "version": "v\x1b]0;owned\x07"}])
    assert (
        loop.labels("labels/x.csv", pd.DataFrame({"id": ["\x1b[2Jghost"], "converted": [1]}))
        == "labels_stored"
    )
    code, out, _ = prodml("live")
    assert code == 0
    assert RAW_CONTROL.search(out) is None, repr(out)
    assert "version v\\x1b]0;owned\\x07" in out and "\\x1b[2Jghost" in out
