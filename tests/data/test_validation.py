"""Validation against the dataset contract: each broken rule is refused with its own reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.config import load_settings
from shared.data.validation import ValidatedData, check_size, validate_file
from shared.errors import ConfigError, ValidationFailed
from shared.schema import Schema

SCHEMA = Schema.from_dict(
    {
        "features": [
            {"name": "country", "type": "category", "domain": ["NA", "de", "kr", "us"]},
            {"name": "hour", "type": "integer", "min": 0, "max": 23},
            {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5},
        ],
        "label": {"name": "clicked", "type": "category", "classes": [0, 1]},
        "key": ["country", "hour"],
    }
)
REGRESSION = Schema.from_dict({**SCHEMA.to_dict(), "label": {"name": "clicked", "type": "float"}})
TEXT_CLASSES = Schema.from_dict(
    {**SCHEMA.to_dict(), "label": {"name": "clicked", "type": "category", "classes": ["no", "yes", "maybe"]}}
)
SETTINGS = load_settings({})
ACCEPT = load_settings({"UNSEEN_CATEGORY_POLICY": "accept"})


def good_rows(n: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "country": str(rng.choice(["NA", "de", "kr", "us"])),
            "hour": int(rng.integers(0, 24)),
            "bid": round(float(rng.uniform(0, 10)), 3),
            "clicked": int(rng.integers(0, 2)),
        }
        for _ in range(n)
    ]


def write_csv(tmp_path: Path, text: str, name: str = "day.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def write_rows(tmp_path: Path, rows: list[dict[str, Any]], ext: str = ".csv") -> Path:
    path = tmp_path / f"day{ext}"
    frame = pd.DataFrame(rows)
    if ext == ".csv":
        frame.to_csv(path, index=False)
    elif ext == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return path


def refused(path: Path, schema: Schema = SCHEMA, settings: Any = SETTINGS) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate_file(path, f"incoming/{path.name}", schema, settings)
    return info.value


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_a_good_file_gives_the_model_frame(tmp_path: Path, ext: str) -> None:
    rows = good_rows()
    for row in rows[:3]:
        row["comment"] = "extra column"
    data = validate_file(write_rows(tmp_path, rows, ext), f"incoming/day{ext}", SCHEMA, SETTINGS)
    assert isinstance(data, ValidatedData)
    assert data.rows == len(rows) == len(data.frame) and data.dropped_rows == 0
    assert list(data.frame.columns) == ["country", "hour", "bid", "clicked"]
    assert data.frame["clicked"].dtype == "int64" and data.frame["hour"].dtype == "int64"
    assert data.frame["bid"].dtype == "float64"
    assert data.frame["country"].tolist() == [r["country"] for r in rows]  # "NA" stays a country
    assert data.frame["clicked"].tolist() == [r["clicked"] for r in rows]
    assert data.extra_columns == ["comment"]
    assert data.format == {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}[ext]
    assert data.null_shares == {"country": 0.0, "hour": 0.0, "bid": 0.0, "clicked": 0.0}
    assert data.unseen_categories == {}


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_an_id_column_is_kept_beside_the_frame_row_for_row(tmp_path: Path, ext: str) -> None:
    rows = good_rows(40)
    for i, row in enumerate(rows):
        row["id"] = f"imp-{i}"
    rows[4]["bid"] = None  # an incomplete row is dropped: its id goes with it
    data = validate_file(write_rows(tmp_path, rows, ext), f"incoming/day{ext}", SCHEMA, SETTINGS)
    assert data.ids is not None and data.dropped_rows == 1
    assert data.ids.tolist() == [f"imp-{i}" for i in range(40) if i != 4]
    assert data.frame["bid"].tolist() == [r["bid"] for r in rows if r["bid"] is not None]
    assert "id" not in data.frame.columns and data.extra_columns == ["id"]
    assert (
        validate_file(write_rows(tmp_path, good_rows(), ext), "incoming/x" + ext, SCHEMA, SETTINGS).ids
        is None
    )


def test_missing_label_column(tmp_path: Path) -> None:
    failure = refused(write_csv(tmp_path, "country,hour,bid\nde,1,2.0\n"))
    assert failure.rule == "missing_label"
    assert "'clicked'" in failure.message and failure.details["columns"] == ["clicked"]


def test_missing_feature_column(tmp_path: Path) -> None:
    failure = refused(write_csv(tmp_path, "country,bid,clicked\nde,2.0,1\n"))
    assert failure.rule == "missing_columns"
    assert failure.details["columns"] == ["hour"] and "'hour'" in failure.message


def test_text_in_a_number_column_is_a_wrong_type(tmp_path: Path) -> None:
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\nde,1,2.0,1\nkr,2,cheap,0\nus,3,1.0,1\n"))
    assert failure.rule == "wrong_type"
    assert failure.details["columns"] == ["bid"]
    assert failure.details["rows"] == [2] and failure.details["samples"] == ["cheap"]
    assert "'bid'" in failure.message and "'cheap'" in failure.message


def test_booleans_in_a_number_column_are_a_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text('{"country": "de", "hour": true, "bid": 1.0, "clicked": 1}\n')
    failure = refused(path)
    assert failure.rule == "wrong_type" and failure.details["columns"] == ["hour"]


def test_fractions_in_an_integer_column(tmp_path: Path) -> None:
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\nde,1,2.0,1\nkr,2.5,1.0,0\n"))
    assert failure.rule == "not_integer"
    assert failure.details["samples"] == [2.5] and "'hour'" in failure.message


def test_infinite_feature_values(tmp_path: Path) -> None:
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\nde,1,inf,1\nkr,2,1.0,0\n"))
    assert failure.rule == "non_finite"
    assert failure.details["columns"] == ["bid"] and failure.details["rows"] == [1]


def test_out_of_range_numbers_name_the_range_and_values(tmp_path: Path) -> None:
    rows = good_rows(10)
    rows[3]["bid"] = 12.5
    rows[7]["hour"] = 24
    failure = refused(write_rows(tmp_path, rows))
    assert failure.rule == "out_of_range"
    assert failure.details["columns"] == ["hour", "bid"]
    assert failure.details["rows"] == [8] and failure.details["samples"] == [24]
    assert failure.details["ranges"] == {"hour": [0, 23], "bid": [0.0, 10.0]}
    assert "'hour'" in failure.message and "[0, 23]" in failure.message


def test_unseen_category_is_quarantined_by_default(tmp_path: Path) -> None:
    rows = good_rows(10)
    rows[4]["country"] = "fr"
    failure = refused(write_rows(tmp_path, rows))
    assert failure.rule == "unseen_category"
    assert failure.details["samples"] == ["fr"] and failure.details["rows"] == [5]
    assert "'country'" in failure.message and "'fr'" in failure.message


def test_unseen_category_is_accepted_and_recorded_under_accept(tmp_path: Path) -> None:
    rows = good_rows(10)
    rows[4]["country"] = "fr"
    rows[6]["country"] = "br"
    data = validate_file(write_rows(tmp_path, rows), "incoming/day.csv", SCHEMA, ACCEPT)
    assert data.unseen_categories == {"country": ["br", "fr"]}
    assert len(data.frame) == 10 and data.frame["country"].iloc[4] == "fr"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("de,1,2.0,\n", "missing"),
        ("de,1,2.0,NaN\n", "missing"),
        ("de,1,2.0,2\n", "classes"),
        ("de,1,2.0,yes\n", "classes"),
    ],
)
def test_bad_classification_labels(tmp_path: Path, text: str, what: str) -> None:
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\nkr,2,1.0,0\n" + text))
    assert failure.rule == "invalid_label"
    assert failure.details["columns"] == ["clicked"] and failure.details["rows"] == [2]
    assert what in failure.message


@pytest.mark.parametrize(
    ("value", "what"), [("NaN", "missing or NaN"), ("inf", "finite"), ("-inf", "finite")]
)
def test_nan_or_infinite_regression_labels(tmp_path: Path, value: str, what: str) -> None:
    failure = refused(
        write_csv(tmp_path, f"country,hour,bid,clicked\nkr,2,1.0,0.5\nde,1,2.0,{value}\n"), REGRESSION
    )
    assert failure.rule == "invalid_label"
    assert what in failure.message and failure.details["rows"] == [2]


def test_nan_label_in_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text('{"country": "de", "hour": 1, "bid": 1.0, "clicked": 0.5}\n')
    path.write_text(path.read_text() + '{"country": "de", "hour": 1, "bid": 1.0, "clicked": NaN}\n')
    assert refused(path, REGRESSION).rule == "invalid_label"


def test_text_classes_keep_their_strings(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "country,hour,bid,clicked\nkr,2,1.0,yes\nde,1,2.0,maybe\nus,3,3.0,no\n")
    data = validate_file(path, "incoming/day.csv", TEXT_CLASSES, SETTINGS)
    assert data.frame["clicked"].tolist() == ["yes", "maybe", "no"]
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\nkr,2,1.0,Yes\n"), TEXT_CLASSES)
    assert failure.rule == "invalid_label" and failure.details["samples"] == ["Yes"]


def test_regression_label_is_float(tmp_path: Path) -> None:
    data = validate_file(
        write_csv(tmp_path, "country,hour,bid,clicked\nkr,2,1.0,3\nde,1,2.0,0.25\n"),
        "incoming/day.csv",
        REGRESSION,
        SETTINGS,
    )
    assert data.frame["clicked"].dtype == "float64" and data.frame["clicked"].tolist() == [3.0, 0.25]


def test_null_share_over_the_limit_names_the_column(tmp_path: Path) -> None:
    rows = good_rows(20)
    rows[2]["bid"] = None
    rows[9]["bid"] = None  # 2 of 20 = 10% > 5%
    failure = refused(write_rows(tmp_path, rows))
    assert failure.rule == "null_share"
    assert failure.details["columns"] == ["bid"] and failure.details["rows"] == [3, 10]
    assert failure.details["shares"] == {"bid": 0.1}
    assert "'bid' (10.0%)" in failure.message


def test_rows_with_few_missing_values_are_dropped(tmp_path: Path) -> None:
    rows = good_rows(40)
    rows[5]["bid"] = None
    rows[6]["country"] = None  # each 1 of 40 = 2.5% <= 5%
    data = validate_file(write_rows(tmp_path, rows), "incoming/day.csv", SCHEMA, SETTINGS)
    assert data.rows == 40 and data.dropped_rows == 2 and len(data.frame) == 38
    assert data.null_shares["bid"] == 0.025 and data.null_shares["country"] == 0.025
    kept = [r for i, r in enumerate(rows) if i not in (5, 6)]
    assert data.frame["bid"].tolist() == [r["bid"] for r in kept]


def test_check_size_refuses_a_file_over_the_limit() -> None:
    settings = load_settings({"MAX_FILE_BYTES": "1000"})
    check_size(1000, settings)
    with pytest.raises(ValidationFailed) as info:
        check_size(1001, settings)
    assert info.value.rule == "too_large"
    assert "1001 bytes" in info.value.message and "MAX_FILE_BYTES=1000" in info.value.message


def test_a_file_bigger_than_announced_is_refused_too(tmp_path: Path) -> None:
    path = write_rows(tmp_path, good_rows(100))
    settings = load_settings({"MAX_FILE_BYTES": str(path.stat().st_size - 1)})
    assert refused(path, settings=settings).rule == "too_large"


def test_too_many_rows(tmp_path: Path) -> None:
    failure = refused(write_rows(tmp_path, good_rows(30)), settings=load_settings({"MAX_ROWS": "29"}))
    assert failure.rule == "too_many_rows" and "MAX_ROWS=29" in failure.message


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("day.csv", b"", "empty"),
        ("day.csv", b"country,hour,bid,clicked\n", "empty"),
        ("day.csv", bytes(range(256)) * 8, "unreadable"),
        ("day.xlsx", b"PK\x03\x04", "unknown_format"),
    ],
)
def test_unreadable_files_are_refused_before_any_rule(
    tmp_path: Path, name: str, content: bytes, rule: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert refused(path).rule == rule


# --- duplicate column names (issue 12, item 4) ---------------------------------------------


def _duplicate_hour_file(tmp_path: Path, ext: str) -> Path:
    """Two columns named ``hour`` with conflicting values: which one is the hour is a guess."""
    path = tmp_path / f"dup{ext}"
    if ext == ".csv":
        path.write_text("country,hour,bid,clicked,hour\nde,3,1.5,1,20\nus,4,2.5,0,21\n")
    elif ext == ".jsonl":
        path.write_text(
            '{"country": "de", "hour": 3, "bid": 1.5, "clicked": 1}\n'
            '{"country": "us", "hour": 4, "bid": 2.5, "clicked": 0, "hour": 21}\n'
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = [["de", "us"], [3, 4], [1.5, 2.5], [1, 0], [20, 21]]
        names = ["country", "hour", "bid", "clicked", "hour"]
        pq.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], names=names), path)
    return path


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_duplicate_column_names_are_refused_naming_them(tmp_path: Path, ext: str) -> None:
    failure = refused(_duplicate_hour_file(tmp_path, ext))
    assert failure.rule == "duplicate_columns"
    assert failure.details["columns"] == ["hour"]
    assert "'hour'" in failure.message
    if ext == ".jsonl":
        assert "line 2" in failure.message


def test_a_column_that_only_looks_like_a_renamed_duplicate_is_fine(tmp_path: Path) -> None:
    # pandas names a second "hour" "hour.1": the check is on the header as written, so a real
    # column of that name is just an extra column.
    path = write_csv(tmp_path, "country,hour,bid,clicked,hour.1\nde,3,1.5,1,20\n")
    data = validate_file(path, "incoming/day.csv", SCHEMA, SETTINGS)
    assert data.frame["hour"].tolist() == [3] and data.extra_columns == ["hour.1"]


# --- too many columns (issue 12, item 14) --------------------------------------------------


def _wide_file(tmp_path: Path, ext: str, extra: int) -> Path:
    """A good row plus ``extra`` extra columns, then a broken rest that no parser would take."""
    path = tmp_path / f"wide{ext}"
    names = [f"x{i}" for i in range(extra)]
    if ext == ".csv":
        header = ",".join(["country", "hour", "bid", "clicked", *names])
        row = ",".join(["de", "3", "1.5", "1"] + ["0"] * extra)
        path.write_text(f"{header}\n{row}\n1,2\n3,4,5,6,7,8,9,10,11,12\n")
    elif ext == ".jsonl":
        first = {"country": "de", "hour": 3, "bid": 1.5, "clicked": 1, **{n: 0 for n in names}}
        path.write_text(json.dumps(first) + '\n{"country": "us", broken\n')
    else:
        row = {"country": "de", "hour": 3, "bid": 1.5, "clicked": 1, **{n: 0 for n in names}}
        frame = pd.DataFrame([row])
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_a_file_over_max_columns_is_refused_from_its_header(tmp_path: Path, ext: str) -> None:
    # The rows after the header are broken: the rule is decided before any of them is parsed.
    failure = refused(_wide_file(tmp_path, ext, 3), settings=load_settings({"MAX_COLUMNS": "6"}))
    assert failure.rule == "too_many_columns"
    assert "7 columns" in failure.message and "MAX_COLUMNS=6" in failure.message
    assert failure.details["count"] == 7 and failure.details["max_columns"] == 6


def test_json_lines_whose_keys_add_up_past_max_columns_are_refused(tmp_path: Path) -> None:
    rows = [{**row, f"x{i}": 0} for i, row in enumerate(good_rows(5))]  # a new key on every line
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    failure = refused(path, settings=load_settings({"MAX_COLUMNS": "6"}))
    assert failure.rule == "too_many_columns" and "line 3" in failure.message


def test_max_columns_below_the_schemas_own_columns_is_a_config_error(tmp_path: Path) -> None:
    path = write_rows(tmp_path, good_rows(5))
    with pytest.raises(ConfigError) as info:
        validate_file(path, "incoming/day.csv", SCHEMA, load_settings({"MAX_COLUMNS": "3"}))
    assert "MAX_COLUMNS=3" in str(info.value) and "4 columns" in str(info.value)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_a_reread_of_an_accepted_file_reads_only_the_schemas_columns(tmp_path: Path, ext: str) -> None:
    path = _wide_file(tmp_path, ext, 50)
    if ext == ".csv":  # the broken rest is there to stop a first read; an accepted file has none
        path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    elif ext == ".jsonl":
        path.write_text(path.read_text().splitlines()[0] + "\n")
    from shared.data.files import read_table  # here: before issue 12 there was no read_table

    table = read_table(path, path.name, 10, max_columns=100, wanted=[*SCHEMA.feature_names, "clicked"])
    assert list(table.frame.columns) == ["country", "hour", "bid", "clicked"]
    assert len(table.columns) == 54 and table.columns[-1] == "x49"
    data = validate_file(path, f"incoming/{path.name}", SCHEMA, SETTINGS, schema_columns_only=True)
    assert data.extra_columns == [f"x{i}" for i in range(50)]
    assert data.frame.to_dict("records") == [{"country": "de", "hour": 3, "bid": 1.5, "clicked": 1}]


# --- rows wider than the header -----------------------------------------------------------


def test_rows_with_a_field_beyond_the_header_are_refused_not_shifted(tmp_path: Path) -> None:
    # pandas reads "de,3,1.5,1," under a 4-name header by taking "de" as the row's index: every
    # value would land one column to the left (hour <- 1.5, clicked <- empty), silently.
    rows = "".join(f"{r['country']},{r['hour']},{r['bid']},{r['clicked']},\n" for r in good_rows())
    failure = refused(write_csv(tmp_path, "country,hour,bid,clicked\n" + rows))
    assert failure.rule == "unreadable"
    assert "one more than its header's 4 columns" in failure.message


def test_a_header_with_the_same_trailing_delimiter_is_read_in_place(tmp_path: Path) -> None:
    # Header and rows both end with a comma: an unnamed empty fifth column, the values in place.
    rows = good_rows(5)
    text = "country,hour,bid,clicked,\n" + "".join(
        f"{r['country']},{r['hour']},{r['bid']},{r['clicked']},\n" for r in rows
    )
    data = validate_file(write_csv(tmp_path, text), "incoming/day.csv", SCHEMA, SETTINGS)
    assert data.frame["hour"].tolist() == [r["hour"] for r in rows]
    assert data.frame["clicked"].tolist() == [r["clicked"] for r in rows]
