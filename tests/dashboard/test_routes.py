"""Every page from real local buckets holding hostile data: it renders as text, never as markup;
each page's numbers are the CLI's JSON; 400, 404 and 405 answers; the security headers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import train_env, training_rows, training_schema
from page_parser import parse, scripts_or_handlers

from shared.config import get_settings
from shared.contracts import CardStatus
from shared.dashboard.formatting import number
from shared.dashboard.routes import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, handle
from shared.dashboard.sources import Sources
from shared.feedback.report import write_report
from shared.schema import save_schema
from shared.serving.traffic import flush_counts
from shared.storage.local import LocalBucket
from shared.training import registry

Run = Callable[..., tuple[int, str, str]]
SCRIPT_NAME = "incoming/<script>alert(1)</script>.csv"
IMG = "<img src=x onerror=alert(1)>"
PAGES = ["/", "/versions", "/monitoring", "/live", "/quarantine", "/table"]


@pytest.fixture
def prodml(tmp_path: Path, cli_in_process: Callable[[dict[str, str]], Run]) -> Run:
    run = cli_in_process(train_env(tmp_path / "buckets", LOG_LEVEL="warning", DASHBOARD_CACHE_SECONDS="0"))
    save_schema(LocalBucket(tmp_path / "buckets", "prodml-artifacts"), training_schema())
    return run


def cli_json(prodml: Run, *args: str) -> object:
    code, out, err = prodml(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def get(path: str, method: str = "GET", **query: str) -> tuple[int, dict[str, str], bytes]:
    answer = handle(Sources.open(get_settings()), method, path, {k: [v] for k, v in query.items()})
    return answer.status, answer.all_headers(), answer.body


@pytest.fixture
def hostile(tmp_path: Path, prodml: Run) -> dict[str, str]:
    """A trained version whose card's reason holds markup, a quarantined file named like a script
    whose rows hold an <img onerror> category, and traffic keys with that same value."""
    root = tmp_path / "buckets"
    data, artifacts = LocalBucket(root, "prodml-data"), LocalBucket(root, "prodml-artifacts")
    path = tmp_path / "day.csv"
    training_rows(300, 1).to_csv(path, index=False)
    code, out, err = prodml("train", "--json", path)
    assert code == 0, err
    version = json.loads(out)["version"]
    card = registry.read_card(artifacts, version)
    registry.set_decision(
        artifacts, card, CardStatus.PROMOTED, f"promoted <script>alert('{version}')</script>"
    )

    bad = training_rows(50, 2)
    bad.loc[3, "country"] = IMG
    data.write(SCRIPT_NAME, bad.to_csv(index=False).encode())
    code, out, err = prodml("replay", "--in-process", "--json")
    assert any(o["outcome"] == "quarantined" for o in json.loads(out)), out

    now = datetime.now(UTC)
    flush_counts(
        artifacts, {json.dumps([IMG, 3]): 40, json.dumps(["us", 5]): 7}, ["country", "hour"], "i1", now, now
    )
    return {"version": version}


def test_hostile_names_and_values_render_as_text_on_every_page(hostile: dict[str, str]) -> None:
    for path in [*PAGES, f"/versions/{hostile['version']}"]:
        status, headers, body = get(path)
        page = parse(body)
        assert status == 200, (path, body[:500])
        assert scripts_or_handlers(page) == [], path
        assert b"<script" not in body and b"<img" not in body, path
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value
        assert headers["Content-Type"] == "text/html; charset=utf-8"
    quarantine = parse(get("/quarantine")[2])
    (row,) = quarantine.table_with("quarantined at")
    assert row["file"] == SCRIPT_NAME  # the name, as text
    assert IMG in row["samples"] or IMG in row["message"]
    card = parse(get(f"/versions/{hostile['version']}")[2])
    assert card.definitions["reason"] == f"promoted <script>alert('{hostile['version']}')</script>"
    keys = parse(get("/table")[2]).table_with("key")
    assert keys[0]["key"] == f"{IMG}, 3" and keys[0]["requests"] == "40"


def test_monitoring_and_quarantine_pages_show_prodml_monitor_json(
    hostile: dict[str, str], prodml: Run
) -> None:
    rows = cli_json(prodml, "monitor")
    assert isinstance(rows, list)
    shown = parse(get("/monitoring")[2]).table_with("time")
    assert len(shown) == len(rows)
    for expected, row in zip(reversed(rows), shown, strict=True):  # newest first
        assert row["file"] == expected["object"]
        assert row["generation"] == number(expected.get("generation"))
        for metric, value in (expected.get("metrics") or {}).items():
            if metric in row:
                assert row[metric] == number(value)
    quarantined = [r for r in rows if r.get("decision") == "quarantined"]
    (row,) = parse(get("/quarantine")[2]).table_with("quarantined at")
    assert row["rule"] == quarantined[0]["quarantine"]["rule"]
    assert row["message"] == quarantined[0]["quarantine"]["message"]


def test_table_page_shows_the_advisors_numbers(hostile: dict[str, str], prodml: Run, tmp_path: Path) -> None:
    advice = cli_json(prodml, "advise", "--png", str(tmp_path / "plot.png"))
    assert isinstance(advice, dict)
    page = parse(get("/table")[2])
    assert page.definitions["recommendation"] == advice["recommendation"]
    for term, field in (
        ("requests", "requests"),
        ("cardinality", "cardinality"),
        ("distinct keys seen", "distinct_keys_seen"),
        ("invalid requests", "invalid_requests"),
    ):
        assert page.definitions[term] == number(advice[field])
    assert page.definitions["top 1% share"] == number(advice["top_share"]["1%"])
    assert "no table yet" in page.all_text()


def test_live_page_shows_the_live_report_and_an_empty_state_without_one(prodml: Run, tmp_path: Path) -> None:
    assert "no live report yet" in parse(get("/live")[2]).all_text()
    quality = {
        "counts": {"served": 10, "labelled": 6, "defaulted": 0, "pending": 4, "matured": 6},
        "metrics": {"log_loss": 0.61234, "roc_auc": 0.7, "accuracy": 0.66667},
        "calibration": None,
    }
    report = {
        "format": "prodml-live/1",
        "generated_at": "2026-01-02T00:00:00Z",
        "log": {"rows": 10, "objects": 1},
        "labels": {"rows": 6, "matched": 6, "unmatched": 0},
        "totals": quality["counts"],
        "versions": [
            {
                "version": "v<b>1</b>",
                **quality,
                "by_source": {"model": quality},
                "by_day": [{"day": "2026-01-01", **quality}],
                "skew": {
                    "reference": True,
                    "threshold": 0.2,
                    "features": {IMG: {"psi": 0.31, "skewed": True}},
                    "note": None,
                },
            }
        ],
    }
    write_report(LocalBucket(tmp_path / "buckets", "prodml-artifacts"), report)
    body = get("/live")[2]
    page = parse(body)
    assert scripts_or_handlers(page) == [] and b"<img" not in body and b"<b>" not in body
    rows = {r[""]: r for r in page.table_with("")}
    assert rows["all"]["served"] == "10" and rows["all"]["log_loss"] == number(0.61234) == "0.6123"
    assert rows["day 2026-01-01"]["accuracy"] == "0.6667" and rows["source model"]["pending"] == "4"
    skew = page.table_with("feature")
    assert skew == [{"feature": IMG, "psi": "0.3100", "skewed": "SKEWED"}]
    assert any(tag == "svg" for tag, _ in page.tags)


def test_bad_requests_are_400_404_and_405_pages(hostile: dict[str, str]) -> None:
    cases = [
        ("GET", "/nowhere", 404),
        ("GET", "/versions/20990101T000000Z-ffffff", 404),
        ("GET", "/versions/a/b", 400),
        ("GET", "/versions/" + "x" * 101, 400),
        ("POST", "/", 405),
        ("DELETE", "/versions", 405),
        ("PUT", "/style.css", 405),
    ]
    for method, path, status in cases:
        got, headers, body = get(path, method)
        assert got == status, (method, path, body[:300])
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert scripts_or_handlers(parse(body)) == []
        if status == 405:
            assert headers["Allow"] == "GET, HEAD"
    assert get("/monitoring", page="abc")[0] == 400 and get("/quarantine", page="0")[0] == 400
    status, headers, body = get("/style.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8" and b"nav" in body
