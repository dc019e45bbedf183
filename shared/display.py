"""Text for people: values from data and names shown safely, and aligned tables.

Object names, messages and values that come from data may hold control characters (GCS allows
ESC, BEL and C1 codes in object names): printed raw, they drive the terminal (set its title,
clear it, hide a line behind a carriage return). ``printable`` escapes them the way Python
writes them (``\\x1b``, ``\\r``, ``\\u202e``), as do every table (``render_table``), every log
line in text format (``shared.logs``) and, as a last guard, everything the ``prodml`` command
writes (``EscapingWriter``). JSON output needs none of this: JSON escapes control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TextIO

# C0 and C1 controls, DEL, the bidirectional overrides and isolates (they reorder what is shown),
# and lone surrogates (a file name that is not UTF-8, decoded by os.fsdecode: unprintable).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_BUT_LINE_ENDS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def printable_lines(text: str) -> str:
    """``text`` with every control character escaped but line ends (a block of lines stays one)."""
    return _UNSAFE_BUT_LINE_ENDS.sub(_escape, text)


def printable(value: object) -> str:
    """``value`` as text with every control character escaped (line ends too: one value, one line)."""
    return _UNSAFE.sub(_escape, value if isinstance(value, str) else str(value))


def render_table(rows: Iterable[Sequence[object]]) -> str:
    """Rows of the same length (the first is the header) as aligned columns, every cell ``printable``."""
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(column) for column in columns) for columns in zip(*cells, strict=True)]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    return "\n".join(lines)


class EscapingWriter:
    """A text stream that escapes control characters, but line ends, on their way to ``stream``.

    The ``prodml`` command writes through it, so no line of any command drives the terminal,
    whatever it prints.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` escaped; returns the length of ``text``, as a stream does."""
        self.stream.write(printable_lines(text))
        return len(text)

    def flush(self) -> None:
        """Flush the stream beneath."""
        self.stream.flush()

    def isatty(self) -> bool:
        """Whether the stream beneath is a terminal (logging picks text or JSON by it)."""
        return self.stream.isatty()

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)  # encoding, fileno, ...: those of the stream beneath
