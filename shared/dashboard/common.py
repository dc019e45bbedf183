"""What every dashboard page shares: the routes' names, the nav bar, paging, empty states."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shared.dashboard.html import Child, Markup, element, join, link, table
from shared.errors import BadRequest

T = TypeVar("T")

PAGE_SIZE = 50
"""Rows a paged list shows at a time (versions, monitoring records, quarantined files)."""

OVERVIEW, VERSIONS, MONITORING, LIVE, SHADOW, QUARANTINE, TABLE, STYLE = (
    "/",
    "/versions",
    "/monitoring",
    "/live",
    "/shadow",
    "/quarantine",
    "/table",
    "/style.css",
)
NAV = (
    (OVERVIEW, "overview"),
    (VERSIONS, "versions"),
    (MONITORING, "monitoring"),
    (LIVE, "live"),
    (SHADOW, "shadow"),
    (QUARANTINE, "quarantine"),
    (TABLE, "table and traffic"),
)


def page_number(query: Mapping[str, Sequence[str]]) -> int:
    """``?page=N`` (default 1); a 400 for anything but one positive integer."""
    values = query.get("page") or []
    if not values:
        return 1
    raw = values[0]
    if len(values) > 1 or not raw.isascii() or not raw.isdigit() or int(raw) < 1 or len(raw) > 9:
        raise BadRequest(
            f"page must be one positive integer, not {', '.join(repr(v[:40]) for v in values)}",
            code="invalid_page",
            field="page",
        )
    return int(raw)


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows and where it sits among the others."""

    rows: list[object]
    number: int
    pages: int
    total: int


def paginate(items: Sequence[T], number: int) -> tuple[list[T], Page]:
    """Rows ``(number - 1) * PAGE_SIZE`` on; a page past the last is empty (and says so)."""
    pages = max(1, -(-len(items) // PAGE_SIZE))
    start = (number - 1) * PAGE_SIZE
    rows = list(items[start : start + PAGE_SIZE])
    return rows, Page(list(rows), number, pages, len(items))


def pager(path: str, page: Page) -> Markup:
    """ "page N of M (T in all)" with previous and next links where there are such pages."""
    parts: list[Child] = [f"page {page.number} of {page.pages} ({page.total} in all)"]
    if page.number > 1:
        parts += [" · ", link(path, "previous", page=min(page.number - 1, page.pages))]
    if page.number < page.pages:
        parts += [" · ", link(path, "next", page=page.number + 1)]
    return element("p", {"class": "pager"}, *parts)


def paged_table(
    path: str, page: Page, header: Sequence[Child], rows: Sequence[Sequence[Child]], none_here: str
) -> list[Child]:
    """One page of a list: the pager, the rows' table (or ``none_here`` past the last page), the
    pager again."""
    shown: Child = table(header, rows) if rows else empty(none_here)
    return [pager(path, page), shown, pager(path, page)]


def empty(text: Child) -> Markup:
    """A section's empty state: why there is nothing to show, and what would fill it."""
    return element("p", {"class": "empty"}, text)


def section(title: str, *body: Child) -> Markup:
    """An ``<h2>`` section."""
    return element("section", None, element("h2", None, title), *body)


def code(text: object) -> Markup:
    """A command or a name to copy, as ``<code>``."""
    return element("code", None, str(text))


def warnings_list(messages: Sequence[str]) -> Markup:
    """A list of warnings, or the sentence that there are none."""
    if not messages:
        return empty("no warnings")
    return element("ul", {"class": "warnings"}, [element("li", None, m) for m in messages])


def read_note(moment: str, ttl: float) -> Markup:
    """When the page's facts were read (they may be up to ``DASHBOARD_CACHE_SECONDS`` old)."""
    return element(
        "p",
        {"class": "note"},
        join(
            [
                f"rendered {moment}; facts are refreshed in the background every {ttl:g} s "
                "(DASHBOARD_CACHE_SECONDS), so they may be that much older, plus one refresh"
                if ttl > 0
                else f"rendered {moment} from facts read for this request (DASHBOARD_CACHE_SECONDS=0)"
            ]
        ),
    )
