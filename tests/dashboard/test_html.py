"""The HTML builder escapes every value and refuses event handlers and inline styles."""

from __future__ import annotations

import pytest
from page_parser import parse

from shared.dashboard.html import Markup, element, escape, href, table


def test_every_child_and_attribute_value_is_escaped() -> None:
    hostile = '<script>alert(1)</script>" onmouseover="x'
    built = element("a", {"href": "/x", "title": hostile}, hostile, ["<b>", 3])
    page = parse(built)
    assert page.tags == [("a", {"href": "/x", "title": hostile})]
    assert page.all_text() == hostile + "<b>3"
    assert "<script" not in built and "<b>" not in built


def test_markup_passes_through_once_and_only_markup() -> None:
    inner = element("em", None, "<i>")
    assert element("p", None, inner) == "<p><em>&lt;i&gt;</em></p>"
    assert escape(Markup("<br>")) == "<br>" and escape("<br>") == "&lt;br&gt;"


@pytest.mark.parametrize("name", ["onclick", "ONLOAD", "style", "on"])
def test_event_handlers_and_styles_cannot_be_written(name: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        element("p", {name: "x"})


@pytest.mark.parametrize("tag", ["p onclick=x", "", "1p", "p>"])
def test_tag_and_attribute_names_are_checked(tag: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        element(tag)


def test_links_stay_on_the_dashboard_and_encode_their_parts() -> None:
    assert href("/versions/a b?c", page=2) == "/versions/a%20b%3Fc?page=2"
    for bad in ("javascript:alert(1)", "//evil.example/x", "http://x"):
        with pytest.raises(ValueError):
            href(bad)


def test_a_table_has_one_header_row_and_a_row_per_item() -> None:
    page = parse(table(("a", "b"), [[1, "<x>"], [2, None]]))
    assert page.tables == [[["a", "b"], ["1", "<x>"], ["2", ""]]]


def test_control_characters_from_data_are_written_as_escapes_and_line_ends_kept() -> None:
    shown = element("pre", None, "a\x1b]0;title\x07b\u202ec\nnext line")
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert shown == "<pre>a\\x1b]0;title\\x07b\\u202ec\nnext line</pre>"
