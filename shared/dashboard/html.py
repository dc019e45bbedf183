"""A tiny HTML builder that escapes every interpolated value by default.

The dashboard shows object names, category values, reason messages and card fields that anyone
who can drop a file controls (a data file named ``<script>alert(1)</script>.csv``). So no page is
made by joining strings: every element is built by ``element``, which escapes each child that is
not already ``Markup`` and each attribute value (``html.escape`` with ``quote=True``, values always
double-quoted). ``Markup`` is made only here, from escaped text or from elements, so unescaped
data cannot reach a page by accident.

Tag and attribute names are the code's own constants, checked against a pattern; an event
handler (``on*``) or a ``style`` attribute is refused outright: the Content-Security-Policy
forbids scripts and inline styles (docs/design.md section 5, dashboard), and the builder makes
them impossible to write.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

from shared.display import printable_lines

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9:_-]*$")
_FORBIDDEN_ATTRIBUTE = re.compile(r"^(on|style$)", re.IGNORECASE)
VOID_ELEMENTS = frozenset({"meta", "link", "br", "hr", "img", "input"})

Child = object  # Markup, None (left out), an iterable of children, or any value (escaped as text)


class Markup(str):
    """Text that is already HTML: made only by this module (escaped text, or built elements)."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """``value`` as HTML text: ``Markup`` as it is, anything else ``str()``-ed and escaped, its
    control characters (but line ends) written as ``\x1b`` as the CLI writes them
    (``shared.display``): a page saved or fetched to a terminal drives nothing, and a browser
    shows what a name really holds."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(printable_lines(str(value)), quote=True))


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} name {name!r}")
    return name


def _attributes(attrs: Mapping[str, object] | None) -> str:
    parts = []
    for name, value in (attrs or {}).items():
        _check_name(name, "attribute")
        if _FORBIDDEN_ATTRIBUTE.match(name):
            # Event handlers and inline styles: the CSP forbids both, the builder refuses them.
            raise ValueError(f"attribute {name!r} is not allowed on a dashboard page")
        if value is None or value is False:
            continue
        parts.append(f' {name}="{escape(value)}"' if value is not True else f" {name}")
    return "".join(parts)


def _children(children: Iterable[Child]) -> str:
    out: list[str] = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, str):
            out.append(escape(child))
        elif isinstance(child, Iterable):
            out.append(_children(child))
        else:
            out.append(escape(child))
    return "".join(out)


def element(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Markup:
    """``<tag attrs>children</tag>``, every attribute value and non-Markup child escaped."""
    _check_name(tag, "tag")
    opening = f"<{tag}{_attributes(attrs)}>"
    if tag in VOID_ELEMENTS:
        if children:
            raise ValueError(f"<{tag}> takes no children")
        return Markup(opening)
    return Markup(f"{opening}{_children(children)}</{tag}>")


def join(children: Iterable[Child]) -> Markup:
    """Several children as one piece of markup (each escaped unless Markup)."""
    return Markup(_children(children))


def href(path: str, **query: object) -> str:
    """A link to one of the dashboard's own paths (``/versions/<v>``), its parts percent-encoded,
    with ``query`` (values that are None are left out). Never a link off the dashboard."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"a dashboard link must be a local path, not {path!r}")
    encoded = quote(path, safe="/")
    kept = {k: v for k, v in query.items() if v is not None}
    return f"{encoded}?{urlencode(kept)}" if kept else encoded


def link(path: str, text: Child, **query: object) -> Markup:
    """``<a href="path?query">text</a>`` to one of the dashboard's pages."""
    return element("a", {"href": href(path, **query)}, text)


def table(header: Iterable[Child], rows: Iterable[Iterable[Child]], *, css_class: str = "data") -> Markup:
    """A ``<table>`` with one header row and a row per item of ``rows``."""
    head = element("thead", None, element("tr", None, [element("th", {"scope": "col"}, h) for h in header]))
    body = element(
        "tbody", None, [element("tr", None, [element("td", None, c) for c in row]) for row in rows]
    )
    return element("table", {"class": css_class}, head, body)


def definition_list(items: Iterable[tuple[Child, Child]]) -> Markup:
    """A ``<dl>`` of (term, description) pairs."""
    return element(
        "dl", None, [(element("dt", None, term), element("dd", None, desc)) for term, desc in items]
    )


def document(title: str, nav: Iterable[tuple[str, str]], current: str, *body: Child) -> Markup:
    """A whole page: doctype, head (charset, title, the stylesheet), the nav bar, ``body``."""
    items = [
        element(
            "li",
            None,
            element("a", {"href": path, "aria-current": "page" if path == current else None}, label),
        )
        for path, label in nav
    ]
    head = element(
        "head",
        None,
        element("meta", {"charset": "utf-8"}),
        element("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
        element("title", None, f"{title} · prodml dashboard"),
        element("link", {"rel": "stylesheet", "href": "/style.css"}),
        # An empty inline icon (CSP img-src allows data:): a browser asks no /favicon.ico, which
        # would be a 404 in its console on every page.
        element("link", {"rel": "icon", "href": "data:,"}),
    )
    page = element(
        "html",
        {"lang": "en"},
        head,
        element(
            "body",
            None,
            element("header", None, element("nav", {"aria-label": "pages"}, element("ul", None, items))),
            element("main", None, element("h1", None, title), *body),
        ),
    )
    return Markup("<!DOCTYPE html>\n" + page + "\n")
