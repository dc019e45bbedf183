"""Size caps: sample values cut where messages are built, every record cut where it is written."""

from __future__ import annotations

import json

from shared.record_caps import (
    MAX_MESSAGE_CHARS,
    MAX_RECORD_BYTES,
    MAX_VALUE_CHARS,
    cut_line,
    cut_text,
    fit_record,
)


def _render(record: dict) -> str:
    return json.dumps(record, indent=2)


def test_a_long_value_keeps_its_start_and_says_how_long_it_was() -> None:
    assert cut_text("short") == "short"
    cut = cut_text("x" * 10_000)
    assert cut == "x" * MAX_VALUE_CHARS + "…[cut from 10000 chars]"
    assert cut_text(cut) == cut  # cutting again changes nothing


def test_a_record_under_the_cap_is_written_as_it_is() -> None:
    record = {"object": "incoming/a.csv", "rule": "empty", "message": "no rows"}
    assert fit_record(record, ("object", "rule"), _render) == _render(record)


def test_a_record_over_the_cap_keeps_valid_json_its_key_fields_and_says_it_was_cut() -> None:
    name = "incoming/" + "n" * 1000  # a long object name is a key field: it stays whole
    record = {
        "object": name,
        "rule": "wrong_type",
        "message": "column 'bid' must hold numbers, found " + "x" * 1_000_000,
        "details": {"columns": ["bid"], "samples": ["x" * 1_000_000], "rows": list(range(100_000))},
    }
    text = fit_record(record, ("object", "rule", "message"), _render)
    assert len(text.encode()) <= MAX_RECORD_BYTES
    cut = json.loads(text)
    assert cut["object"] == name and cut["rule"] == "wrong_type"
    assert (
        cut["message"].startswith("column 'bid' must hold numbers")
        and len(cut["message"]) < 2 * MAX_MESSAGE_CHARS
    )
    assert cut["details"]["columns"] == ["bid"] and len(cut["details"]["samples"][0]) < 2 * MAX_VALUE_CHARS
    assert cut["cut"]["bytes"] > 2_000_000 and cut["cut"]["limit"] == MAX_RECORD_BYTES


def test_long_lists_are_shortened_and_fields_that_stay_too_big_are_dropped_and_named() -> None:
    record = {"object": "incoming/a.csv", "psi": {f"f{i}": 0.5 for i in range(5_000)}}
    cut = json.loads(fit_record(record, ("object",), _render, limit=4096))
    assert cut["object"] == "incoming/a.csv" and len(cut["psi"]) == 20 and cut["cut"]["dropped"] == []

    wide = {"object": "incoming/a.csv", **{f"field{i}": i for i in range(5_000)}}
    text = fit_record(wide, ("object",), _render, limit=4096)
    cut = json.loads(text)
    assert len(text.encode()) <= 4096 and set(cut) == {"object", "cut"}
    assert cut["cut"]["dropped"][:2] == ["field0", "field1"] and len(cut["cut"]["dropped"]) == 20


def test_a_text_line_is_cut_at_its_end_in_bytes() -> None:
    line = "ü" * 100_000  # two bytes each
    cut = cut_line(line)
    assert len(cut.encode()) <= MAX_RECORD_BYTES and cut.endswith("…[cut from 100000 chars]")
