"""Which keys a table holds, and the one way to score them.

A table key is one value per key feature of the schema (``Schema.key``). This module enumerates
keys without touching storage, so the table build function and a batch pipeline share it:

- ``full_chunks``: every key of the key space, as consecutive codes ``range(cardinality)`` (the
  mixed-radix codes of ``shared.tables.codec.encode_keys``) cut into chunks and decoded to columns;
- ``top_k``: the K most requested keys of a traffic count, keeping only keys valid under the
  schema;
- ``score_keys``: the serving form's scores for key columns (``Scorer.score_columns``: the ONNX
  graph of a compiled version, else the scikit-learn model), the very call the predict function
  makes, so a table score is the model's score for the same instance.

Features outside the key take a fixed value in every table row (static serving answers by key
alone), chosen by ``non_key_defaults``: the feature's ``default`` from the schema; when it has
none, the first value of a category's domain, the middle of a number's range (rounded down for
integers), the one bound given, or 0 for an unbounded number. Give every non-key feature an
explicit ``default`` in ``schema.json`` when these guesses are not what requests usually carry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.model import frame_from_columns
from shared.schema import Feature, Scalar, Schema
from shared.scoring import Scorer
from shared.tables.codec import decode_codes, encode_keys, parse_key_string

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class KeyChunk:
    """A run of keys: their codes and one column of values per key feature (same order).

    Category columns are object arrays of strings, integer columns int64 arrays (see ``decode_keys``).
    """

    codes: np.ndarray  # int64
    columns: dict[str, Any]

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class TopKeys:
    """The most requested valid keys of a traffic count, most requested first."""

    codes: np.ndarray  # int64, in rank order (count descending, then code ascending)
    counts: np.ndarray  # int64, the request count of each code
    total_requests: int  # every counted request, valid or not
    invalid_requests: int  # requests for keys outside the schema's key space
    distinct_valid_keys: int  # valid keys seen, before cutting to K

    @property
    def covered_requests(self) -> int:
        """Requests whose key is among the chosen keys."""
        return int(self.counts.sum())

    @property
    def hit_rate(self) -> float | None:
        """Share of all counted requests a table of these keys answers (None without traffic)."""
        return self.covered_requests / self.total_requests if self.total_requests else None


def default_value(feature: Feature) -> Scalar:
    """The value a non-key feature takes in every table row (rules in the module docstring)."""
    if feature.default is not None:
        return feature.default
    if feature.type == "category":
        return feature.domain[0]
    low, high = feature.min, feature.max
    if low is not None and high is not None:
        return (int(low) + int(high)) // 2 if feature.type == "integer" else (low + high) / 2
    bound = low if low is not None else high
    if bound is not None:
        return int(bound) if feature.type == "integer" else float(bound)
    return 0 if feature.type == "integer" else 0.0


def non_key_defaults(schema: Schema) -> dict[str, Scalar]:
    """The fixed value of every feature outside the key, by feature name."""
    keyed = set(schema.key)
    return {f.name: default_value(f) for f in schema.features if f.name not in keyed}


def decode_keys(schema: Schema, codes: np.ndarray) -> dict[str, Any]:
    """The key columns of ``codes`` (the inverse of ``shared.tables.codec.encode_keys``).

    Category columns are object arrays of the domain's strings, which ``instance_frame`` and
    ``to_frame`` pass through without converting (measured in bench/bench_table.py).
    """
    return decode_codes(schema, codes)


def full_chunks(
    schema: Schema, chunk_rows: int, start: int = 0, stop: int | None = None
) -> Iterator[KeyChunk]:
    """Every key with code in ``[start, stop)`` (default: the whole key space), ``chunk_rows`` at a time.

    Only one chunk's codes and columns exist at once; codes ascend, so concatenating the chunks'
    codes gives a sorted array.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    stop = schema.key_cardinality if stop is None else stop
    for begin in range(start, stop, chunk_rows):
        codes = np.arange(begin, min(begin + chunk_rows, stop), dtype=np.int64)
        yield KeyChunk(codes, decode_keys(schema, codes))


def code_chunks(schema: Schema, codes: np.ndarray, chunk_rows: int) -> Iterator[KeyChunk]:
    """The given key codes, decoded ``chunk_rows`` at a time (in the order given)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows!r}")
    for begin in range(0, len(codes), chunk_rows):
        part = np.asarray(codes[begin : begin + chunk_rows], dtype=np.int64)
        yield KeyChunk(part, decode_keys(schema, part))


def valid_key_counts(schema: Schema, counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """Aggregate traffic counts by key code: ``(codes ascending, counts, invalid requests)``.

    A key string that does not parse, has the wrong number of values, or holds a value outside a
    key feature's domain counts as invalid. Two spellings of one key (``[7]`` and ``["7"]`` for a
    category) add up under the same code.
    """
    names = list(schema.key)
    parsed: list[list[object]] = []
    weights: list[int] = []
    invalid = 0
    for key, count in counts.items():
        try:
            values = parse_key_string(key)
        except (ValueError, TypeError):
            invalid += int(count)
            continue
        if not isinstance(values, list | tuple) or len(values) != len(names):
            invalid += int(count)
            continue
        parsed.append(list(values))
        weights.append(int(count))
    if not parsed:
        return np.empty(0, np.int64), np.empty(0, np.int64), invalid
    columns = {name: np.array([row[i] for row in parsed], dtype=object) for i, name in enumerate(names)}
    codes = np.asarray(encode_keys(schema, columns), dtype=np.int64)
    weight = np.asarray(weights, dtype=np.int64)
    valid = codes >= 0
    invalid += int(weight[~valid].sum())
    unique, inverse = np.unique(codes[valid], return_inverse=True)
    summed = np.bincount(inverse, weights=weight[valid], minlength=len(unique)).astype(np.int64)
    return unique.astype(np.int64), summed, invalid


def rank_keys(codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Order of ``codes`` by count descending, ties by code ascending (deterministic)."""
    return np.lexsort((codes, -counts))


def top_k(schema: Schema, counts: Mapping[str, int], k: int) -> TopKeys:
    """The ``k`` most requested keys valid under ``schema`` (fewer if fewer were seen)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    codes, weights, invalid = valid_key_counts(schema, counts)
    order = rank_keys(codes, weights)[:k]
    return TopKeys(
        codes=codes[order],
        counts=weights[order],
        total_requests=int(weights.sum()) + invalid,
        invalid_requests=invalid,
        distinct_valid_keys=len(codes),
    )


def key_instance_columns(schema: Schema, key_columns: Mapping[str, Any]) -> dict[str, Any]:
    """The model input for keys, by column: key columns plus each non-key feature's default."""
    n = len(next(iter(key_columns.values()))) if key_columns else 0
    defaults = non_key_defaults(schema)
    return {
        f.name: key_columns[f.name] if f.name in key_columns else np.full(n, defaults[f.name])
        for f in schema.features
    }


def instance_frame(schema: Schema, key_columns: Mapping[str, Any]) -> pd.DataFrame:
    """The model input for keys as a frame made by ``to_frame`` (for scikit-learn)."""
    return frame_from_columns(schema, key_instance_columns(schema, key_columns))


def score_keys(scorer: Scorer, schema: Schema, key_columns: Mapping[str, Any]) -> np.ndarray:
    """The serving form's scores for these keys (see ``Scorer.score_columns`` for the shape)."""
    return scorer.score_columns(key_instance_columns(schema, key_columns))


def score_width(scorer: Scorer) -> int:
    """Scores per key: one (binary, regression) or one per class (multiclass)."""
    label = scorer.schema.label
    return len(label.classes) if label.task == "multiclass" else 1
