"""Reading data files (CSV, JSON Lines, Parquet) into a DataFrame, with limits, as values.

``read_frame`` picks the parser (``shared.data.file_readers``) by the object name's extension and
reads in chunks (pandas
chunks for CSV and JSON Lines, pyarrow record batches for Parquet), so a file with too many rows
is refused as soon as the limit is passed instead of after reading it all. Every failure is a
``ValidationFailed`` with its own rule (``unknown_format``, ``unreadable``, ``empty``,
``too_many_rows``, ``duplicate_columns``, ``too_many_columns``), so the file can be quarantined
with a reason a person can act on.

Columns are checked on the header as the file writes it, before its rows are parsed: the CSV
header line, the Parquet footer, each JSON Lines object's keys. Duplicate names are refused
(``age`` twice: which value counts would be a guess; pandas would quietly rename the second
``age.1``, and a JSON object with a key twice quietly keeps the last), and so is a file with more
than ``max_columns`` columns. ``read_table`` can read only the ``wanted`` columns (the schema's):
a re-read of an accepted file then costs what training uses, however many extra columns it has.

CSV cells are missing only when empty: pandas' default list of missing markers would turn a
category value such as ``"NA"`` (Namibia) or ``"None"`` into a missing value. What a cell then
means (a category's string, a number, text in a number column) is ``shared.data.values``'s.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shared.data import file_readers
from shared.data.fault_details import MAX_NAMES_LISTED, details, names_listed
from shared.data.file_readers import ColumnHeader, refuse_duplicates
from shared.errors import ValidationFailed

FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_SNIFF_BYTES = 64 * 1024


def file_format(object_name: str) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from the name's extension; ``unknown_format`` otherwise."""
    suffix = Path(object_name).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise ValidationFailed(
            "unknown_format",
            f"{object_name!r}: unknown file extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(sorted(FORMATS))}",
            details(samples=[suffix]),
        ) from None


@dataclass(frozen=True)
class FileTable:
    """A data file as read: ``frame`` (only the wanted columns, when asked) and ``columns``, every
    column the file has, in the file's order."""

    frame: pd.DataFrame
    columns: list[str]


def read_frame(path: Path, object_name: str, max_rows: int) -> pd.DataFrame:
    """Read the data file at ``path`` (named ``object_name`` in its bucket) into a DataFrame.

    The index is 0..n-1, so data row ``i + 1`` (1-based, header not counted) is index ``i``.
    Raises ``ValidationFailed`` with rule ``unknown_format``, ``empty``, ``unreadable`` (naming
    the parser's complaint), ``duplicate_columns`` or ``too_many_rows`` (as soon as ``max_rows``
    is passed).
    """
    return read_table(path, object_name, max_rows).frame


def read_table(
    path: Path,
    object_name: str,
    max_rows: int,
    *,
    max_columns: int | None = None,
    wanted: Collection[str] | None = None,
    text_columns: Collection[str] = (),
) -> FileTable:
    """``read_frame``, plus ``too_many_columns`` over ``max_columns``, and only ``wanted`` columns.

    ``text_columns``: columns a CSV file's reader keeps as text, never inferring numbers (ids).

    With ``wanted``, the other columns are not parsed at all (a re-read of an accepted file).
    For CSV that also means pandas does not check that a row has no more fields than the header
    (with ``usecols`` it drops extra fields silently): a first read of a file passes no ``wanted``.
    """
    fmt = file_format(object_name)
    size = path.stat().st_size
    if size == 0:
        raise ValidationFailed("empty", f"{object_name!r} is empty (0 bytes)", details(count=0))
    if fmt != "parquet":
        _refuse_binary(path, object_name)
    header = ColumnHeader(object_name, max_columns)
    chunks = _read_chunks(path, object_name, fmt, max_rows, header, wanted, frozenset(text_columns))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else (chunks[0] if chunks else None)
    columns = header.names or ([] if frame is None else [str(c) for c in frame.columns])
    if frame is None or len(frame) == 0:
        raise ValidationFailed(
            "empty",
            f"{object_name!r} has no data rows"
            + (f" (only a header: {names_listed(columns)})" if columns else ""),
            details(columns=columns[:MAX_NAMES_LISTED], count=0),
        )
    frame.columns = [str(c) for c in frame.columns]
    refuse_duplicates(object_name, list(frame.columns), "its columns")  # whatever a reader missed
    return FileTable(frame.reset_index(drop=True), columns)


def _read_chunks(
    path: Path,
    object_name: str,
    fmt: str,
    max_rows: int,
    header: ColumnHeader,
    wanted: Collection[str] | None,
    text_columns: frozenset[str] = frozenset(),
) -> list[pd.DataFrame]:
    """The file's chunks, by its format's reader; ``too_many_rows`` as soon as ``max_rows`` is
    passed, and any parser's complaint as ``unreadable``."""
    wanted_set = frozenset(wanted) if wanted is not None else None
    # Looked up on the module at each read, so that a test can spy on one reader.
    readers: dict[str, Callable[..., Iterator[pd.DataFrame]]] = {
        "csv": functools.partial(file_readers.csv_chunks, text_columns=text_columns),
        "jsonl": file_readers.jsonl_chunks,
        "parquet": file_readers.parquet_chunks,
    }
    chunks: list[pd.DataFrame] = []
    rows = 0
    try:
        for chunk in readers[fmt](path, object_name, max_rows, header, wanted_set):
            rows += len(chunk)
            if rows > max_rows:
                raise ValidationFailed(
                    "too_many_rows",
                    f"{object_name!r} has more than MAX_ROWS={max_rows} rows (stopped reading at {rows})",
                    details(count=rows, max_rows=max_rows),
                )
            chunks.append(chunk)
    except ValidationFailed:
        raise
    except (
        ValueError,
        UnicodeDecodeError,
        OSError,
        ArithmeticError,
        pd.errors.ParserError,
        csv.Error,
    ) as exc:
        # pyarrow's ArrowInvalid is a ValueError; pandas' ParserError too; csv.Error: the header.
        raise _unreadable(object_name, fmt, exc) from None
    return chunks


def _unreadable(object_name: str, fmt: str, exc: BaseException) -> ValidationFailed:
    complaint = " ".join(str(exc).split())[:300] or type(exc).__name__
    return ValidationFailed(
        "unreadable",
        f"{object_name!r} is not readable as {fmt}: {complaint}",
        details(samples=[complaint]),
    )


def _refuse_binary(path: Path, object_name: str) -> None:
    """Text formats: a NUL byte or invalid UTF-8 in the first block means binary junk.

    Checked first because pandas can read some binary files as one odd column without error.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    nul = head.find(b"\x00")
    if nul >= 0:
        raise ValidationFailed(
            "unreadable",
            f"{object_name!r} is binary, not text: NUL byte at offset {nul}",
            details(samples=[head[max(0, nul - 8) : nul + 8].hex()], offset=nul),
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character cut by the end of a full block is not an error.
        if len(head) < _SNIFF_BYTES or exc.start < len(head) - 4:
            raise ValidationFailed(
                "unreadable",
                f"{object_name!r} is not UTF-8 text: {exc.reason} at byte offset {exc.start}",
                details(samples=[head[exc.start : exc.start + 8].hex()], offset=exc.start),
            ) from None
