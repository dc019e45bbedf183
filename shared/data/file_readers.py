"""One chunked reader per data file format, and the column checks they share.

``shared.data.files.read_table`` picks one by the object name's extension. Each reader yields
DataFrame chunks of at most ``CHUNK_ROWS`` rows (so the caller can stop at ``max_rows``) and
hands every column name it meets, before parsing the rows under it, to a ``ColumnHeader``,
which refuses duplicate names and more than ``max_columns`` columns. With ``wanted``, a reader
parses only those columns. A parser's own complaint propagates as the exception it raises; the
caller turns it into ``unreadable``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shared.data.fault_details import MAX_NAMES_LISTED, details, names_listed
from shared.errors import ValidationFailed

DUPLICATE_COLUMNS = "duplicate_columns"
TOO_MANY_COLUMNS = "too_many_columns"
CHUNK_ROWS = 50_000


@dataclass
class ColumnHeader:
    """The columns of a file as its reader meets them; refuses duplicates and too many."""

    object_name: str
    max_columns: int | None
    names: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, names: list[str], where: str) -> None:
        """Take the column names ``names`` (of the header, or of one JSON object) found ``where``."""
        refuse_duplicates(self.object_name, names, where)
        new = [n for n in names if n not in self.seen]
        if not new:
            return
        self.names += new
        self.seen.update(new)
        if self.max_columns is not None and len(self.names) > self.max_columns:
            count = len(self.names)
            raise ValidationFailed(
                TOO_MANY_COLUMNS,
                f"{self.object_name!r} has {count} columns ({where}), more than MAX_COLUMNS="
                f"{self.max_columns}; drop the columns the schema does not name, or raise MAX_COLUMNS",
                details(count=count, max_columns=self.max_columns),
            )


def refuse_duplicates(object_name: str, names: list[str], where: str) -> None:
    """``duplicate_columns`` when a column name occurs twice in ``names``.

    Empty names are left out: pandas calls such columns "Unnamed: <position>", never mistaken
    for a feature (a header with trailing commas has several).
    """
    counts = Counter(n for n in names if n != "")
    duplicated = [n for n, c in counts.items() if c > 1]
    if not duplicated:
        return
    raise ValidationFailed(
        DUPLICATE_COLUMNS,
        f"{object_name!r} names column(s) {names_listed(duplicated)} more than once ({where}): "
        "which of the values counts would be a guess; give every column its own name",
        details(columns=duplicated, count=len(duplicated), samples=[counts[n] for n in duplicated]),
    )


def _csv_head(path: Path) -> tuple[list[str], list[str] | None]:
    """The first two records of the CSV file as written: the header and the first data row.

    Only those are read (the csv module reads a line at a time), with pandas' options; pandas
    would rename a duplicate ``age.1``. A header name over the csv module's field size limit
    (128 KiB) makes the file ``unreadable``.
    """
    records: list[list[str]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for record in csv.reader(f, skipinitialspace=True):
            if record:  # pandas skips blank lines too
                records.append(record)
                if len(records) == 2:
                    break
    if not records:
        return [], None
    return records[0], (records[1] if len(records) > 1 else None)


def _refuse_rows_wider_than_header(header: list[str], first_row: list[str] | None, object_name: str) -> None:
    """``unreadable`` when the first data row has one field more than the header.

    pandas then silently takes the first column as the index, and every value lands one column
    to the left (a delimiter at the end of each data row does this). A guess either way could
    train on the wrong columns, so the file is refused, saying what to fix. (A later row with a
    field too many is refused by pandas itself: "Expected N fields".)
    """
    if first_row is None or len(first_row) != len(header) + 1:
        return
    raise ValidationFailed(
        "unreadable",
        f"{object_name!r}: its first data row has {len(first_row)} fields, one more than its header's "
        f"{len(header)} columns (a delimiter at the end of each row?); remove it, or name the column",
        details(columns=header[:MAX_NAMES_LISTED], count=len(first_row)),
    )


def csv_chunks(
    path: Path,
    object_name: str,
    max_rows: int,
    header: ColumnHeader,
    wanted: frozenset[str] | None,
    *,
    text_columns: frozenset[str] = frozenset(),
) -> Iterator[pd.DataFrame]:
    """A CSV file in chunks, its header checked first (as written, before pandas renames).

    ``text_columns`` are read as written, never as numbers: pandas infers a CSV column's type,
    and an identifier such as ``00123`` would come back as the number 123 (a labels file's ids).
    """
    names, first_row = _csv_head(path)
    header.add(names, "in its header")
    _refuse_rows_wider_than_header(names, first_row, object_name)
    # Only empty cells are missing (see the module docstring).
    with pd.read_csv(
        path,
        chunksize=min(CHUNK_ROWS, max_rows + 1),
        keep_default_na=False,
        na_values=[""],
        skipinitialspace=True,
        encoding="utf-8-sig",
        usecols=(lambda name: name in wanted) if wanted is not None else None,
        dtype=dict.fromkeys(text_columns, str) or None,
    ) as reader:
        try:
            yield from reader
        except pd.errors.EmptyDataError:
            return


class _DuplicateKeys(dict[str, Any]):
    """A JSON object that had a key more than once (``duplicates``); the last value is kept."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last value of a repeated key without a word: keep the pairs' word for it.
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    flagged = _DuplicateKeys(record)
    counts = Counter(key for key, _ in pairs)
    flagged.duplicates = [key for key, count in counts.items() if count > 1]
    return flagged


_JSON_OBJECTS = json.JSONDecoder(object_pairs_hook=_object_pairs)


def jsonl_chunks(
    path: Path, object_name: str, max_rows: int, header: ColumnHeader, wanted: frozenset[str] | None
) -> Iterator[pd.DataFrame]:
    """A JSON Lines file in chunks; each line must be an object, its keys are its columns."""
    # Parsed line by line (not pandas.read_json) to name the bad line and to insist on objects.
    batch: list[dict[str, Any]] = []
    limit = min(CHUNK_ROWS, max_rows + 1)
    with open(path, encoding="utf-8-sig") as f:  # -sig: a leading byte-order mark is not data
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = _JSON_OBJECTS.decode(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: {exc.msg} (column {exc.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"line {number}: expected a JSON object, got {type(record).__name__}")
            if isinstance(record, _DuplicateKeys):
                header.add([*record, *record.duplicates], f"line {number}")
            if not header.seen.issuperset(record):
                header.add(list(record), f"by line {number}")
            if wanted is not None:
                record = {k: v for k, v in record.items() if k in wanted}
            batch.append(record)
            if len(batch) >= limit:
                yield pd.DataFrame.from_records(batch)
                batch = []
    if batch:
        yield pd.DataFrame.from_records(batch)


def parquet_chunks(
    path: Path, object_name: str, max_rows: int, header: ColumnHeader, wanted: frozenset[str] | None
) -> Iterator[pd.DataFrame]:
    """A Parquet file in record batches; columns and row count come from its footer first."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        names = list(parquet.schema_arrow.names)
        header.add(names, "in its schema")  # the footer knows: no row read yet
        total = parquet.metadata.num_rows
        if total > max_rows:
            raise ValidationFailed(
                "too_many_rows",
                f"{object_name!r} has {total} rows, more than MAX_ROWS={max_rows}",
                details(count=total, max_rows=max_rows),
            )
        columns = [n for n in names if n in wanted] if wanted is not None else None
        if total == 0:
            yield parquet.schema_arrow.empty_table().select(columns or names).to_pandas()
            return
        for batch in parquet.iter_batches(batch_size=min(CHUNK_ROWS, max_rows + 1), columns=columns):
            yield batch.to_pandas()
