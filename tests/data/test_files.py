"""Reading data files: the three formats give the same frame; every bad file gets its own rule."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.data.files import read_frame
from shared.data.values import category_strings, numeric_values
from shared.errors import ValidationFailed

ROWS = pd.DataFrame(
    {
        "country": ["NA", "de", "kr", "us"],  # "NA" is Namibia, not a missing value
        "hour": [0, 5, 23, 7],
        "bid": [0.5, 1.25, 3.0, 9.75],
        "clicked": [0, 1, 1, 0],
    }
)


def write(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as the format of ``path``'s extension."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix in (".jsonl", ".json"):
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


def refused(path: Path, name: str | None = None, max_rows: int = 1000) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        read_frame(path, name or path.name, max_rows)
    return info.value


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".json", ".parquet"])
def test_each_format_reads_the_same_values(tmp_path: Path, ext: str) -> None:
    frame = read_frame(write(ROWS, tmp_path / f"day{ext}"), f"incoming/day{ext}", max_rows=10)
    assert list(frame.columns) == list(ROWS.columns)
    assert frame.to_dict("records") == ROWS.to_dict("records")
    assert list(frame.index) == [0, 1, 2, 3]


def test_empty_file_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "day.csv"
    path.write_bytes(b"")
    failure = refused(path)
    assert failure.rule == "empty"
    assert "0 bytes" in failure.message


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_header_only_is_refused_as_empty_naming_the_columns(tmp_path: Path, ext: str) -> None:
    failure = refused(write(ROWS.iloc[:0], tmp_path / f"day{ext}"))
    assert failure.rule == "empty"
    assert "only a header" in failure.message and "country" in failure.message


def test_blank_lines_only_jsonl_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text("\n  \n\n")
    assert refused(path).rule == "empty"


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_binary_junk_is_unreadable(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"junk{ext}"
    path.write_bytes(random.Random(7).randbytes(4096))
    failure = refused(path)
    assert failure.rule == "unreadable"
    assert "junk" in failure.message


def test_non_utf8_text_is_unreadable_naming_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    data = "country,hour\nEspa\u00f1a,1\n".encode("latin-1")
    path.write_bytes(data)
    failure = refused(path)
    assert failure.rule == "unreadable"
    assert f"not UTF-8 text: invalid continuation byte at byte offset {data.index(0xF1)}" in failure.message


def test_ragged_csv_names_the_parsers_complaint(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    failure = refused(path)
    assert failure.rule == "unreadable"
    assert "Expected 2 fields in line 3, saw 3" in failure.message


def test_bad_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n')
    failure = refused(path)
    assert failure.rule == "unreadable"
    assert "line 2" in failure.message


def test_json_line_that_is_not_an_object_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    failure = refused(path)
    assert failure.rule == "unreadable"
    assert "line 2: expected a JSON object, got list" in failure.message


@pytest.mark.parametrize("name", ["day.txt", "day.xlsx", "day", "day.csv.gz"])
def test_unknown_extension_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "file"
    path.write_text("a,b\n1,2\n")
    failure = refused(path, name=f"incoming/{name}")
    assert failure.rule == "unknown_format"
    assert name in failure.message


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_too_many_rows_stops_reading_before_the_rest(tmp_path: Path, ext: str) -> None:
    # A corrupt line far past the limit: reading it all would end in "unreadable" instead.
    good = pd.DataFrame({"a": range(500), "b": range(500)})
    path = write(good, tmp_path / f"big{ext}")
    with open(path, "a") as f:
        f.write("1,2,3,4\n" if ext == ".csv" else "{broken\n")
    failure = refused(path, max_rows=100)
    assert failure.rule == "too_many_rows"
    assert "MAX_ROWS=100" in failure.message
    with pytest.raises(ValidationFailed, match="unreadable|Expected|line 501") as whole:
        read_frame(path, path.name, max_rows=10_000)
    assert whole.value.rule == "unreadable"


def test_parquet_too_many_rows_is_known_from_the_footer(tmp_path: Path) -> None:
    path = write(pd.DataFrame({"a": range(300)}), tmp_path / "big.parquet")
    failure = refused(path, max_rows=299)
    assert failure.rule == "too_many_rows"
    assert failure.details["count"] == 300
    assert len(read_frame(path, path.name, max_rows=300)) == 300


def test_category_strings_are_canonical() -> None:
    assert category_strings(pd.Series([7, 8])).tolist() == ["7", "8"]
    assert category_strings(pd.Series([7.0, np.nan, 2.5])).tolist() == ["7", None, "2.5"]
    assert category_strings(pd.Series([True, False])).tolist() == ["True", "False"]
    assert category_strings(pd.Series(["7", None, True, 3], dtype=object)).tolist() == [
        "7",
        None,
        "True",
        "3",
    ]


@pytest.mark.parametrize("dtype", [object, "str"])
def test_numeric_values_tell_text_from_missing(dtype: object) -> None:
    cells = ["1.5", " 2 ", "abc", "NaN", None, "null", True, "inf"]
    if dtype == "str":
        cells[6] = "true"  # a string column cannot hold a boolean; its text form is text too
    numbers, text = numeric_values(pd.Series(cells, dtype=dtype))
    assert text.tolist() == [False, False, True, False, False, False, True, False]
    assert numbers.tolist()[:2] == [1.5, 2.0]
    assert numbers.isna().tolist() == [False, False, True, True, True, True, True, False]
    assert numbers.iloc[7] == np.inf


def test_dates_are_not_numbers() -> None:
    numbers, text = numeric_values(pd.Series(pd.to_datetime(["2026-01-01", None])))
    assert text.tolist() == [True, False] and numbers.isna().all()


@pytest.mark.parametrize("ext", [".csv", ".jsonl"])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"excel{ext}"
    text = "a,b\n1,2\n" if ext == ".csv" else '{"a": 1, "b": 2}\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert list(read_frame(path, path.name, 10).columns) == ["a", "b"]
