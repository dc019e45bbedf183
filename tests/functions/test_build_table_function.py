"""The build_table function as a real functions-framework process on a real local bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import bad_model_files
import pytest
import requests
from conftest import UNREADABLE_DELIVERIES, post_unreadable

from shared.events import build_cloudevent
from shared.local.functions import load_declaration
from shared.local.processes import FunctionProcess, free_port
from shared.tables.format import read_pointer

pytestmark = pytest.mark.slow


def _env(buckets_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "STORAGE_BACKEND": "local",
            "LOCAL_BUCKETS_ROOT": str(buckets_root),
            "ARTIFACTS_BUCKET": "prodml-artifacts",
            "TABLE_CHUNK_ROWS": "100",
            "LOG_FORMAT": "json",
        }
    )
    return env


@pytest.fixture
def function(
    request: pytest.FixtureRequest, table_artifacts, buckets_root: Path, tmp_path: Path
) -> Iterator[FunctionProcess]:
    """The infra/functions.json function named by the indirect parameter, serving ``table_artifacts``."""
    spec = load_declaration().functions[request.param]
    with FunctionProcess(spec, free_port(), _env(buckets_root), tmp_path / f"{spec.name}.log") as process:
        yield process


@pytest.mark.parametrize("function", ["build_table_event"], indirect=True)
def test_model_promotion_event_builds_once(function: FunctionProcess, table_artifacts) -> None:
    model = table_artifacts.stat("models/current.skops")
    headers, body = build_cloudevent(model, event_id="promotion-1")

    answer = requests.post(function.url, headers=headers, data=body, timeout=60)
    assert answer.status_code == 200, function.log_tail()
    pointer, pointer_generation = read_pointer(table_artifacts)
    assert (
        pointer is not None and pointer["version"] == "v1" and pointer["model_generation"] == model.generation
    )
    built = table_artifacts.stat(pointer["blob"])
    assert pointer["rows"] == 360
    assert "table build: 360/360 rows" in function.log_tail(20000)

    # Eventarc redelivers the same event: nothing new is built, the pointer is untouched.
    answer = requests.post(function.url, headers=headers, data=body, timeout=60)
    assert answer.status_code == 200
    assert [i.name for i in table_artifacts.list("tables/v1/")] == [built.name]  # no second build
    assert read_pointer(table_artifacts)[1] == pointer_generation
    assert "skipped" in function.log_tail(4000)

    # Finalized objects other than the model (the pointer itself fires one) are ignored with a 2xx.
    headers, body = build_cloudevent(table_artifacts.stat("tables/current.json"))
    assert requests.post(function.url, headers=headers, data=body, timeout=60).status_code == 200
    assert read_pointer(table_artifacts)[1] == pointer_generation

    # So is a malformed event: a redelivery could not fix it.
    broken = requests.post(function.url, headers={**headers, "ce-type": "other.type"}, data=body, timeout=60)
    assert broken.status_code == 200


@pytest.mark.parametrize("function", ["build_table_event"], indirect=True)
def test_a_promotion_event_superseded_by_a_newer_one_builds_nothing(
    function: FunctionProcess, table_artifacts
) -> None:
    stale = table_artifacts.stat("models/current.skops")
    # Promoted again (a burst of promotions, a rollback): the newer generation has its own event.
    live = table_artifacts.write("models/current.skops", table_artifacts.read("models/current.skops"))
    headers, body = build_cloudevent(stale, event_id="promotion-old")

    answer = requests.post(function.url, headers=headers, data=body, timeout=60)
    assert answer.status_code == 200, function.log_tail()
    assert not list(table_artifacts.list("tables/"))
    assert f"superseded by generation {live}, whose own event builds it" in function.log_tail(4000)

    headers, body = build_cloudevent(table_artifacts.stat("models/current.skops"), event_id="promotion-new")
    assert requests.post(function.url, headers=headers, data=body, timeout=60).status_code == 200
    pointer, _ = read_pointer(table_artifacts)
    assert pointer is not None and pointer["model_generation"] == live


@pytest.mark.parametrize("function", ["build_table_event"], indirect=True)
def test_deliveries_that_cannot_be_parsed_answer_2xx_with_a_log_line_and_a_promotion_still_builds(
    function: FunctionProcess, table_artifacts
) -> None:
    """functions-framework used to crash (500) on these before our function ran."""
    assert post_unreadable(function.url) == dict.fromkeys(UNREADABLE_DELIVERIES, 200)

    said = [line for line in function.log_tail(20000).splitlines() if "cannot be parsed" in line]
    assert len(said) == 3 and "build_table_event" in said[0], said
    assert not list(table_artifacts.list("tables/"))
    headers, body = build_cloudevent(table_artifacts.stat("models/current.skops"), event_id="promotion-1")
    assert requests.post(function.url, headers=headers, data=body, timeout=60).status_code == 200
    pointer, _ = read_pointer(table_artifacts)
    assert pointer is not None and pointer["rows"] == 360


@pytest.mark.parametrize("function", ["build_table_event"], indirect=True)
def test_a_promoted_model_that_fails_to_load_late_is_answered_without_a_retry_loop(
    function: FunctionProcess, table_artifacts
) -> None:
    # Its zip and schema.json are fine; an array member fails only while skops loads it. A
    # redelivery would meet the same bytes: a 2xx that says why, not a 5xx until dead-lettered.
    good = table_artifacts.read("models/current.skops")
    for fault in (bad_model_files.with_object_array, bad_model_files.with_short_array):
        table_artifacts.write("models/current.skops", fault(good))
        headers, body = build_cloudevent(table_artifacts.stat("models/current.skops"))
        answer = requests.post(function.url, headers=headers, data=body, timeout=60)
        assert answer.status_code == 200, function.log_tail()
        assert "cannot load models/current.skops" in function.log_tail(4000)
    assert not list(table_artifacts.list("tables/"))


@pytest.mark.parametrize("function", ["build_table"], indirect=True)
def test_http_builds_on_a_good_body_and_refuses_bad_ones(function: FunctionProcess, table_artifacts) -> None:
    answer = requests.post(function.url, json={"strategy": "full"}, timeout=60)
    assert answer.status_code == 200, function.log_tail()
    summary = answer.json()
    assert summary["status"] == "built" and summary["rows"] == 360 and summary["pointer_switched"] is True
    assert summary["table"].startswith("tables/v1/full-") and summary["strategy"] == "full"
    assert read_pointer(table_artifacts)[0]["blob"] == summary["table"]

    again = requests.post(function.url, json={"strategy": "auto"}, timeout=60)
    assert again.status_code == 200 and again.json()["status"] == "skipped"

    no_traffic = requests.post(function.url, json={"strategy": "top_k", "k": 10}, timeout=60)
    assert no_traffic.status_code == 200
    assert no_traffic.json()["status"] == "nothing_to_build"
    assert "no traffic counted yet" in no_traffic.json()["message"]

    bad = [
        (requests.post(function.url, data=b"{not json", timeout=10), 400, "malformed_json", None),
        (
            requests.post(function.url, json={"strategy": "everything"}, timeout=10),
            400,
            "invalid_value",
            "strategy",
        ),
        (requests.post(function.url, json={"k": -1}, timeout=10), 400, "invalid_value", "k"),
        (requests.post(function.url, json=["full"], timeout=10), 400, "invalid_body", None),
        (requests.post(function.url, data=b"{}" + b" " * 5000, timeout=10), 413, "body_too_large", None),
        (requests.get(function.url, timeout=10), 405, "method_not_allowed", None),
    ]
    for response, status, code, field in bad:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["field"] == field and error["message"]
