"""Logging: JSON lines with severity and message for Cloud Logging, text for a terminal."""

from __future__ import annotations

import io
import json

from shared.logs import get_logger, setup_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_carry_severity_message_and_fields() -> None:
    stream = io.StringIO()
    setup_logging("auto", "info", stream=stream)
    log = get_logger("shared.test")
    log.info("model promoted", extra={"fields": {"version": "v1"}})
    log.warning("drift on %s", "country")
    log.debug("not shown at info")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["severity"], e["message"]) for e in lines] == [
        ("INFO", "model promoted"),
        ("WARNING", "drift on country"),
    ]
    assert lines[0]["version"] == "v1"


def test_terminal_gets_readable_text() -> None:
    stream = _Terminal()
    setup_logging("auto", "info", stream=stream)
    get_logger("shared.test").error("bad file", extra={"fields": {"rule": "empty"}})
    line = stream.getvalue().strip()
    assert "ERROR" in line and "bad file" in line and "rule=empty" in line
    assert not line.startswith("{")


def test_setup_twice_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    setup_logging("json", "info", stream=stream)
    setup_logging("json", "info", stream=stream)
    get_logger("shared.test").info("once")
    assert len(stream.getvalue().splitlines()) == 1


def test_a_huge_message_makes_a_line_under_the_cap_that_is_still_json() -> None:
    from shared.record_caps import MAX_RECORD_BYTES

    stream = io.StringIO()
    setup_logging("json", "info", stream=stream)
    get_logger("shared.test").info(
        "quarantined: " + "x" * 10_000_000, extra={"fields": {"rule": "wrong_type"}}
    )
    [line] = stream.getvalue().splitlines()
    assert len(line.encode()) <= MAX_RECORD_BYTES
    entry = json.loads(line)
    assert entry["severity"] == "INFO" and entry["rule"] == "wrong_type"
    assert entry["message"].startswith("quarantined: xxx") and entry["cut"]["bytes"] > 10_000_000

    terminal = _Terminal()
    setup_logging("auto", "info", stream=terminal)
    get_logger("shared.test").info("quarantined: " + "x" * 10_000_000)
    [text] = terminal.getvalue().splitlines()
    assert len(text.encode()) <= MAX_RECORD_BYTES and text.endswith("chars]")


def test_text_lines_show_control_characters_escaped() -> None:
    stream = _Terminal()
    setup_logging("auto", "info", stream=stream)
    name = "incoming/\x1b]0;owned\x07day\r.csv"  # a name GCS takes: set the title, BEL, CR
    get_logger("shared.test").warning(f"cannot process {name}", extra={"fields": {"object": name}})
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert "cannot process incoming/\\x1b]0;owned\\x07day\\r.csv" in line
    assert "object=incoming/\\x1b]0;owned\\x07day\\r.csv" in line
