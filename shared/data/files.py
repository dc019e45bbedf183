"""Reading data files (CSV, JSON Lines, Parquet) into a DataFrame, with limits, as values.

``read_frame`` picks the parser by the object name's extension and reads in chunks (pandas
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

Two value helpers give every module the same reading of a column:

- ``category_strings``: the canonical string of each value (``7``, ``7.0`` and ``"7"`` are all
  ``"7"``; booleans ``"True"``/``"False"``, as ``str()`` gives them for a JSON request), with
  missing values as ``None``.
- ``numeric_values``: the column as float64 plus a mask of cells holding text (or booleans)
  instead of a number; ``"NaN"``, ``"null"``, ``"NA"`` and friends are missing, not text.

CSV cells are missing only when empty: pandas' default list of missing markers would turn a
category value such as ``"NA"`` (Namibia) or ``"None"`` into a missing value.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from shared.errors import ValidationFailed
from shared.record_caps import cut_text, cut_value

DUPLICATE_COLUMNS = "duplicate_columns"
TOO_MANY_COLUMNS = "too_many_columns"
MAX_NAMES_LISTED = 20  # column names quoted in one message
FORMATS: dict[str, str] = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
CHUNK_ROWS = 50_000
# Text that means "no value" in a numeric column (compared lower-cased, stripped).
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-nan"})
_SNIFF_BYTES = 64 * 1024


def details(
    columns: list[str] | None = None,
    rows: list[int] | None = None,
    samples: list[Any] | None = None,
    count: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The ``details`` of a ``ValidationFailed``: where the fault is and what it looks like."""
    # Names and sample values come from the file: cut, so that one huge cell cannot make a huge
    # reason (caps.MAX_VALUE_CHARS).
    return {
        "columns": [cut_text(str(c)) for c in (columns or [])],
        "rows": rows or [],
        "samples": [cut_value(jsonable(v)) for v in (samples or [])],
        "count": count,
        **extra,
    }


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (numpy scalars unwrapped; NaN and infinities as strings), deeply."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


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


def names_listed(columns: Collection[Any]) -> str:
    """Column names for a message: the first ``MAX_NAMES_LISTED``, each cut, quoted."""
    listed = [str(c) for c in columns]
    shown = ", ".join(repr(cut_text(c)) for c in listed[:MAX_NAMES_LISTED])
    return f"[{shown}{', ...' if len(listed) > MAX_NAMES_LISTED else ''}]"


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
) -> FileTable:
    """``read_frame``, plus ``too_many_columns`` over ``max_columns``, and only ``wanted`` columns.

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
    header = _Header(object_name, max_columns)
    wanted_set = frozenset(wanted) if wanted is not None else None
    readers = {"csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}
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
    _refuse_duplicates(object_name, list(frame.columns), "its columns")  # whatever a reader missed
    return FileTable(frame.reset_index(drop=True), columns)


@dataclass
class _Header:
    """The columns of a file as its reader meets them; refuses duplicates and too many."""

    object_name: str
    max_columns: int | None
    names: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, names: list[str], where: str) -> None:
        """Take the column names ``names`` (of the header, or of one JSON object) found ``where``."""
        _refuse_duplicates(self.object_name, names, where)
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


def _refuse_duplicates(object_name: str, names: list[str], where: str) -> None:
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


def _csv_chunks(
    path: Path, object_name: str, max_rows: int, header: _Header, wanted: frozenset[str] | None
) -> Iterator[pd.DataFrame]:
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


def _jsonl_chunks(
    path: Path, object_name: str, max_rows: int, header: _Header, wanted: frozenset[str] | None
) -> Iterator[pd.DataFrame]:
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


def _parquet_chunks(
    path: Path, object_name: str, max_rows: int, header: _Header, wanted: frozenset[str] | None
) -> Iterator[pd.DataFrame]:
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


# --- value helpers -------------------------------------------------------------------------


def category_strings(values: pd.Series) -> pd.Series:
    """Canonical strings of a category column (object dtype), ``None`` where missing."""
    if values.dtype == object and infer_dtype(values, skipna=False) == "string":
        # Already Python strings with nothing missing (a validated frame): each value is its own
        # canonical string, and mapping them one by one cost most of an event's drift statistics.
        return values.copy()
    missing = values.isna()
    if pd.api.types.is_bool_dtype(values.dtype):
        out = values.map({True: "True", False: "False"})
    elif pd.api.types.is_integer_dtype(values.dtype):
        out = values.astype(str)
    elif pd.api.types.is_float_dtype(values.dtype):
        out = values.map(_one_string)
    elif pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        out = values.astype(object)
    else:
        out = values.map(_one_string)
    out = out.astype(object)
    out[missing] = None
    return out


def _one_string(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float | np.floating):
        if value != value:
            return None
        if np.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return str(float(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def numeric_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(numbers, text)``: the column as float64 (NaN where missing or not a number) and a
    boolean mask of cells that hold something other than a number (text, booleans)."""
    dtype = values.dtype
    if (
        pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
    ):
        return pd.Series(np.nan, index=values.index), values.notna()
    if pd.api.types.is_numeric_dtype(dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        # Only strings (or missing): parse each distinct value once (category-like columns
        # repeat a few values), then spread the results back by code; code -1 is missing.
        codes, uniques = pd.factorize(values)
        lowered = pd.Series(uniques, dtype=object).str.strip().str.lower()
        token = lowered.isin(MISSING_TOKENS).to_numpy(dtype=bool)
        parsed = pd.to_numeric(lowered.where(~token), errors="coerce").to_numpy(dtype="float64")
        parsed_text = ~token & np.isnan(parsed)
        present = codes >= 0
        safe = np.where(present, codes, 0)
        if len(parsed) == 0:  # every cell missing
            return pd.Series(np.nan, index=values.index), pd.Series(False, index=values.index)
        number_cells = np.where(present, parsed[safe], np.nan)
        text_cells = present & parsed_text[safe]
        return pd.Series(number_cells, index=values.index), pd.Series(text_cells, index=values.index)
    raw = values.astype(object)
    is_bool = raw.map(lambda v: isinstance(v, bool | np.bool_)).astype(bool)
    as_text = raw.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    missing_token = as_text.map(lambda v: isinstance(v, str) and v in MISSING_TOKENS).astype(bool)
    candidates = as_text.where(~(is_bool | missing_token), None)
    numbers = pd.to_numeric(candidates, errors="coerce").astype("float64")
    text = (raw.notna() & ~missing_token & numbers.isna()) | is_bool
    return numbers, text.astype(bool)
