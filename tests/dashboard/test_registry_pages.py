"""The overview and versions pages, rendered from real local buckets, against `prodml models --json`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import train_env, training_rows, training_schema
from page_parser import parse, scripts_or_handlers

from shared.config import get_settings
from shared.dashboard.common import PAGE_SIZE
from shared.dashboard.formatting import number
from shared.dashboard.routes import CONTENT_SECURITY_POLICY, handle
from shared.dashboard.sources import Sources
from shared.schema import save_schema
from shared.storage.local import LocalBucket

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def prodml(tmp_path: Path, cli_in_process: Callable[[dict[str, str]], Run]) -> Run:
    run = cli_in_process(train_env(tmp_path / "buckets", LOG_LEVEL="warning", DASHBOARD_CACHE_SECONDS="0"))
    save_schema(LocalBucket(tmp_path / "buckets", "prodml-artifacts"), training_schema())
    return run


def train(tmp_path: Path, prodml: Run, name: str, seed: int) -> str:
    path = tmp_path / name
    training_rows(300, seed).to_csv(path, index=False)
    code, out, err = prodml("train", "--json", path)
    assert code == 0, err
    return str(json.loads(out)["version"])


def get(path: str, **query: str) -> tuple[int, dict[str, str], bytes]:
    answer = handle(Sources.open(get_settings()), "GET", path, {k: [v] for k, v in query.items()})
    return answer.status, answer.all_headers(), answer.body


def test_overview_without_any_model_says_how_to_train_one(prodml: Run) -> None:
    status, headers, body = get("/")
    page = parse(body)
    assert status == 200 and headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "no model yet: train one with `prodml train FILE`" in page.all_text()
    assert "no table yet" in page.all_text() and "no live report yet" in page.all_text()
    assert scripts_or_handlers(page) == []


def test_versions_page_shows_the_numbers_prodml_models_json_gives(tmp_path: Path, prodml: Run) -> None:
    first = train(tmp_path, prodml, "a.csv", 1)
    second = train(tmp_path, prodml, "b.csv", 2)
    code, out, _ = prodml("models", "--json")
    listing = json.loads(out)

    status, _, body = get("/versions")
    rows = parse(body).table_with("version")
    assert status == 200 and [r["version"] for r in rows] == [second, first]  # newest first
    by_version = {v["version"]: v for v in listing["versions"]}
    for row in rows:
        expected = by_version[row["version"]]
        assert row["challenger"] == number(expected["challenger"])
        assert float(row["challenger"]) == round(expected["challenger"], 4)
        assert row["champion"] == number(expected["champion"])
        assert row["decision"] == expected["decision"] and row["compiled"] == str(expected["compiled"])
        assert row["rows"] == str(expected["training_rows"]) and row["files"] == str(expected["files"])
        assert row["parent"] == (expected["parent"] or "-")
        assert row["rollback"] == f"prodml rollback {row['version']}"
        assert row["current"] == ("current" if expected["current"] else "")

    page = parse(get("/")[2])
    assert page.definitions["version"] == listing["current"] == second
    assert page.definitions["versions in the registry"] == "2"


def test_a_version_card_page_shows_its_gate_and_lineage(tmp_path: Path, prodml: Run) -> None:
    version = train(tmp_path, prodml, "a.csv", 1)
    status, _, body = get(f"/versions/{version}")
    page = parse(body)
    card = json.loads(
        LocalBucket(tmp_path / "buckets", "prodml-artifacts").read(f"models/versions/{version}/card.json")
    )
    assert status == 200 and page.definitions["version"] == version
    gate = {r["metric"]: r for r in page.table_with("metric")}
    for name, value in card["metrics"]["challenger"].items():
        assert gate[name]["challenger"] == number(value)
    assert [r["file"] for r in page.table_with("file")] == [e["name"] for e in card["lineage"]]
    assert page.definitions["rollback"] == f"prodml rollback {version}"


def test_versions_are_paged_and_a_bad_page_is_a_400(tmp_path: Path, prodml: Run) -> None:
    from shared.training import registry
    from shared.training.card import ModelCard

    artifacts = LocalBucket(tmp_path / "buckets", "prodml-artifacts")
    for i in range(PAGE_SIZE + 3):
        card = ModelCard(version=f"20260101T0000{i:02d}Z-{i:06x}", created=f"2026-01-01T00:00:{i:02d}Z")
        artifacts.write(registry.card_name(card.version), registry.json_bytes(card.to_dict()))
    assert len(parse(get("/versions")[2]).table_with("version")) == PAGE_SIZE
    last = parse(get("/versions", page="2")[2]).table_with("version")
    assert [r["version"] for r in last] == [f"20260101T0000{i:02d}Z-{i:06x}" for i in (2, 1, 0)]
    for bad in ("0", "-1", "x", "1.5", "", "9" * 12):
        status, headers, body = get("/versions", page=bad)
        assert status == 400, bad
        assert "page must be one positive integer" in parse(body).all_text()
        assert headers["Content-Type"] == "text/html; charset=utf-8"
