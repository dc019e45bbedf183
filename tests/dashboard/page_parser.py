"""A dashboard page read with a real HTML parser (html.parser): its tags, tables and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Parsed:
    """What a test asserts on: every start tag with its attributes, every table, the text."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    tables: list[list[list[str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    definitions: dict[str, str] = field(default_factory=dict)

    def table_with(self, first_header: str) -> list[dict[str, str]]:
        """The rows of the first table whose first header cell is ``first_header``, as dicts."""
        for rows in self.tables:
            if rows and rows[0] and rows[0][0] == first_header:
                return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
        raise AssertionError(f"no table headed {first_header!r} in {[t[0] for t in self.tables if t]}")

    def all_text(self) -> str:
        """Every text node joined (what a reader sees, tags gone)."""
        return " ".join(self.text)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Parsed()
        self._tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._dt: list[str] | None = None
        self._dd: list[str] | None = None
        self._last_term = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append((tag, dict(attrs)))
        if tag == "table":
            self._tables.append([])
        elif tag == "tr" and self._tables:
            self._tables[-1].append([])
        elif tag in ("td", "th") and self._tables:
            self._cell = []
        elif tag == "dt":
            self._dt = []
        elif tag == "dd":
            self._dd = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._tables:
            self._tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._tables:
            self.page.tables.append(self._tables.pop())
        elif tag == "dt" and self._dt is not None:
            self._last_term = "".join(self._dt).strip()
            self._dt = None
        elif tag == "dd" and self._dd is not None:
            self.page.definitions.setdefault(self._last_term, " ".join("".join(self._dd).split()))
            self._dd = None

    def handle_data(self, data: str) -> None:
        self.page.text.append(data)
        for sink in (self._cell, self._dt, self._dd):
            if sink is not None:
                sink.append(data)


def parse(body: bytes | str) -> Parsed:
    """Parse a page."""
    parser = _Parser()
    parser.feed(body.decode() if isinstance(body, bytes) else body)
    parser.close()
    return parser.page


def scripts_or_handlers(page: Parsed) -> list[str]:
    """Every ``<script>`` tag and every ``on*`` or ``style`` attribute of a page (there must be none)."""
    found = [f"<{tag}>" for tag, _ in page.tags if tag == "script"]
    found += [
        f"<{tag} {name}>" for tag, attrs in page.tags for name in attrs if name.lower().startswith("on")
    ]
    found += [f"<{tag} style>" for tag, attrs in page.tags if "style" in attrs]
    return found
