"""``prodml train``, ``prodml models`` and ``prodml rollback``, run as a user runs them (in-process
``shared.cli.main`` with the environment a shell would give it), on real local buckets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import bad_model_files
import pytest
from conftest import drop_file, train_env, training_rows, training_schema

from shared.contracts import CURRENT_MODEL
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training import ledger, registry

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def buckets(tmp_path: Path) -> tuple[LocalBucket, LocalBucket]:
    root = tmp_path / "buckets"
    artifacts = LocalBucket(root, "prodml-artifacts")
    save_schema(artifacts, training_schema())
    return LocalBucket(root, "prodml-data"), artifacts


@pytest.fixture
def prodml(tmp_path: Path, cli_in_process: Callable[[dict[str, str]], Run]) -> Run:
    return cli_in_process(train_env(tmp_path / "buckets", LOG_LEVEL="warning"))


def _file(tmp_path: Path, name: str, seed: int, **kwargs: object) -> Path:
    path = tmp_path / name
    training_rows(300, seed, **kwargs).to_csv(path, index=False)  # type: ignore[arg-type]
    return path


def test_static_training_uploads_trains_promotes_and_marks_the_files(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    data, artifacts = buckets
    code, out, _ = prodml("train", _file(tmp_path, "a.csv", 1), _file(tmp_path, "b.csv", 2))

    assert code == 0, out
    current = registry.read_current(artifacts)
    assert current is not None and current.version in out and "(promoted)" in out
    assert [r["name"] for r in current.lineage] == ["incoming/a.csv", "incoming/b.csv"]
    assert current.card is not None and current.card.strategy == "static"
    for ref in current.lineage:
        assert data.stat(ref["name"]).generation == ref["generation"]
        assert ledger.is_processed(artifacts, "prodml-data", ref["name"], ref["generation"])

    code, out, _ = prodml("train", "--json", _file(tmp_path, "c.csv", 3))
    summary = json.loads(out)
    assert code == 0 and summary["promoted"] and summary["decision"] == "promoted"
    card = registry.read_card(artifacts, summary["version"])
    assert card.parent == current.version
    assert [r["name"] for r in card.lineage] == ["incoming/c.csv"]  # a static retrain starts afresh
    assert card.metrics["champion"]["rows"] == card.metrics["challenger"]["rows"] > 0

    code, out, _ = prodml("models", "--json")
    listing = json.loads(out)
    assert listing["current"] == summary["version"]
    assert [(v["version"], v["current"], v["files"]) for v in listing["versions"]] == [
        (current.version, False, 2),
        (summary["version"], True, 1),
    ]
    # Static training compiles too: the version is served in its verified ONNX form.
    newest = listing["versions"][-1]
    assert newest["compiled"] == "verified" and newest["compiled_max_abs_difference"] < 1e-6


def test_rerunning_with_the_same_file_reuses_it_and_a_different_one_under_that_name_is_refused(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    data, _ = buckets
    path = _file(tmp_path, "a.csv", 1)
    assert prodml("train", path)[0] == 0
    generation = data.stat("incoming/a.csv").generation
    assert prodml("train", path)[0] == 0
    assert data.stat("incoming/a.csv").generation == generation

    _file(tmp_path, "a.csv", 2)
    code, _, err = prodml("train", path)
    assert code == 1
    assert "prodml-data/incoming/a.csv already exists with other content" in err
    assert data.stat("incoming/a.csv").generation == generation


def test_a_bad_file_or_no_schema_fails_with_a_one_line_reason_and_changes_nothing(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    data, artifacts = buckets
    bad = tmp_path / "bad.csv"
    frame = training_rows(50, 1)
    frame.loc[4, "bid"] = 99.0
    frame.to_csv(bad, index=False)

    code, _, err = prodml("train", _file(tmp_path, "good.csv", 1), bad)

    assert code == 1
    assert err.count("\n") == 1 and "'bad.csv'" in err and "'bid'" in err and "99.0" in err
    assert list(data.list("incoming/")) == []
    assert not artifacts.exists(CURRENT_MODEL)

    artifacts.delete("schema.json")
    code, _, err = prodml("train", _file(tmp_path, "good.csv", 1))
    assert code == 1 and "no schema.json" in err


def test_rollback_steps_back_through_promotions_and_is_recorded(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    _, artifacts = buckets
    versions = []
    for i in range(3):
        code, out, _ = prodml("train", "--json", _file(tmp_path, f"day{i}.csv", i))
        versions.append(json.loads(out)["version"])
    first, second, third = versions

    code, out, _ = prodml("rollback")
    assert code == 0 and out.strip() == f"rolled back: current model is now {second} (was {third})"
    assert artifacts.read(CURRENT_MODEL) == artifacts.read(registry.model_name(second))
    code, out, _ = prodml("rollback", "--json")
    assert code == 0 and json.loads(out)["current"] == first
    code, _, err = prodml("rollback")
    assert code == 1 and f"nothing to roll back to: {first} is the first promoted model" in err

    code, out, _ = prodml("rollback", third)
    assert code == 0 and registry.read_current(artifacts).version == third  # type: ignore[union-attr]
    kinds = [(e["kind"], e["version"]) for e in registry.list_events(artifacts)]
    assert kinds[-3:] == [("rollback", second), ("rollback", first), ("rollback", third)]
    code, out, _ = prodml("models")
    assert code == 0 and next(line for line in out.splitlines() if line.startswith("*")).split()[1] == third


def test_a_current_model_that_fails_to_load_late_leaves_every_recovery_command_working(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    # Its zip and schema.json are fine; an array member fails only while skops loads it.
    data, artifacts = buckets
    versions = []
    for i in range(2):
        code, out, _ = prodml("train", "--json", _file(tmp_path, f"day{i}.csv", i))
        versions.append(json.loads(out)["version"])
    first, second = versions
    artifacts.write(CURRENT_MODEL, bad_model_files.with_object_array(artifacts.read(CURRENT_MODEL)))

    code, out, err = prodml("models", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert listing["current"] is None and [v["version"] for v in listing["versions"]] == versions

    # A file that lands now cannot be trained on: it is not lost, `prodml monitor` shows why.
    drop_file(data, "incoming/late.csv", training_rows(300, 7))
    code, out, _ = prodml("replay", "--in-process", "--json")
    outcomes = {o["name"]: o["outcome"] for o in json.loads(out)}
    assert code == 1 and outcomes["incoming/late.csv"] == "model_error"
    code, out, _ = prodml("monitor", "--json")
    (row,) = [r for r in json.loads(out) if r["object"] == "incoming/late.csv"]
    assert row["decision"] == "model_error" and "Object arrays cannot be loaded" in row["message"]
    code, out, _ = prodml("monitor")
    assert code == 0 and "model_error" in next(line for line in out.splitlines() if "late.csv" in line)
    # Its line among the files without an outcome says why too, not "no event reached it yet".
    waiting = out.split("no outcome yet", 1)[1]
    (line,) = [line for line in waiting.splitlines() if "late.csv" in line]
    assert "model_error: " in line and "Object arrays cannot be loaded" in line, line

    code, out, err = prodml("rollback", first)  # an explicit target
    assert code == 0, err
    assert out.strip() == f"rolled back: current model is now {first} (was {registry.UNLOADABLE})"
    artifacts.write(CURRENT_MODEL, bad_model_files.with_short_array(artifacts.read(CURRENT_MODEL)))
    code, out, err = prodml("rollback")  # the default: the last promotion (after the rollback) that loads
    assert code == 0, err
    assert registry.read_current(artifacts).version == first  # type: ignore[union-attr]


def test_gate_option_refuses_a_worse_model(
    tmp_path: Path, prodml: Run, buckets: tuple[LocalBucket, LocalBucket]
) -> None:
    _, artifacts = buckets
    assert prodml("train", *(_file(tmp_path, f"good{i}.csv", i) for i in range(3)))[0] == 0
    before = artifacts.read(CURRENT_MODEL)

    code, out, _ = prodml("train", "--gate", _file(tmp_path, "noise.csv", 9, shuffle=True))

    assert code == 1 and "(rejected)" in out and "rejected: log_loss worse by" in out
    assert artifacts.read(CURRENT_MODEL) == before
