"""Keys of the static table and their codec: key values to int64 codes and back, key strings.

A table maps a **key** (the values of the schema's key features, in key order) to the model's
score for that key. Keys are stored as **codes**: the mixed-radix number whose digits are the
index of each key feature's value in ``Feature.values()`` (first key feature most significant),
so sorted codes are the keys in lexicographic order and a code fits an int64.

Key strings (``key_string``) name a key in traffic counts and in the advisor: the compact JSON
list of the key values, categories as their domain strings and integers as ints, e.g.
``["us",7]``. JSON quoting makes them unambiguous for any category text.

Used by the table build (``shared.tables.build``), serving (``shared.serving.predictor``) and
traffic counting, so no module of those stages owns another's codec.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.errors import SchemaError
from shared.schema import Scalar, Schema

if TYPE_CHECKING:
    import pandas as pd

_SMALL = 16  # rows up to which encode_columns loops over dicts instead of using pandas
_MAX_CODE = 2**62  # keeps every code and every product of radixes inside int64

# --- key strings -------------------------------------------------------------------------------


def key_string(values: Sequence[Any]) -> str:
    """The key as traffic and the advisor name it: compact JSON list of the key values.

    Pass categories as their domain strings and integers as Python ints (``KeyCodec.key_values``
    normalizes a request's values), so the same key always gives the same string.
    """
    return json.dumps(
        [v.item() if isinstance(v, np.generic) else v for v in values],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def parse_key_string(s: str) -> list[Any]:
    """The key values named by ``key_string``; ``ValueError`` if ``s`` is not such a string."""
    values = json.loads(s)
    if not isinstance(values, list):
        raise ValueError(f"key string {s!r} is not a JSON list")
    return values


# --- codes ---------------------------------------------------------------------------------------


class KeyCodec:
    """Encodes key values to codes and back for one schema.

    Built once per schema: one dict per key feature for single instances (the request path) and
    ``pandas.Index`` lookups for columns (the table build), made on first use so that a predict
    process never imports pandas.
    """

    def __init__(self, schema: Schema) -> None:
        self.key: tuple[str, ...] = tuple(schema.key)
        self.features = schema.key_features
        self.radixes = [int(f.cardinality or 0) for f in self.features]
        self.cardinality = math.prod(self.radixes) if self.radixes else 0
        if self.cardinality > _MAX_CODE:
            raise SchemaError(
                f"key {list(self.key)} has {self.cardinality} distinct values: more than a table can index "
                f"({_MAX_CODE}); drop a key feature"
            )
        # stride of feature i = product of the radixes after it (first feature most significant)
        self.strides = [math.prod(self.radixes[i + 1 :]) for i in range(len(self.radixes))]
        self._index: list[dict[Any, int]] = []
        self._pd_index: list[pd.Index] | None = None
        for f in self.features:
            values = f.values()
            if f.type == "category":
                self._index.append({str(v): i for i, v in enumerate(values)})
            else:
                self._index.append({int(v): i for i, v in enumerate(values)})

    def _column_index(self) -> list[pd.Index]:
        """One ``pandas.Index`` of the domain per key feature (made once, on the first big batch)."""
        import pandas as pd

        if self._pd_index is None:
            self._pd_index = [
                pd.Index([str(v) for v in f.values()] if f.type == "category" else f.values())
                for f in self.features
            ]
        return self._pd_index

    def key_values(self, instance: Mapping[str, Any]) -> list[Scalar]:
        """The normalized key values of one instance: category strings, integer ints."""
        out: list[Scalar] = []
        for f in self.features:
            v = instance[f.name]
            out.append(str(v) if f.type == "category" else int(v))
        return out

    def encode_one(self, values: Sequence[Any]) -> int:
        """The code of one key (values in key order), or -1 if any value is outside its domain."""
        code = 0
        for index, stride, f, v in zip(self._index, self.strides, self.features, values, strict=True):
            if f.type == "category":
                i = index.get(str(v))
            else:
                i = index.get(v) if isinstance(v, int) and not isinstance(v, bool) else _int_index(index, v)
            if i is None:
                return -1
            code += i * stride
        return code

    def encode_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray | pd.Series]) -> np.ndarray:
        """Codes of every row of ``columns`` (one sequence per key feature), -1 outside the domain."""
        for f in self.features:
            if f.name not in columns:
                raise SchemaError(f"key feature {f.name!r} is missing from the columns {sorted(columns)}")
        lengths = {len(columns[f.name]) for f in self.features}
        if lengths and max(lengths) <= _SMALL:  # a request's few rows: dicts beat pandas by ~100x
            rows = zip(*(list(columns[f.name]) for f in self.features), strict=True)
            return np.array([self.encode_one(values) for values in rows], dtype=np.int64)
        import pandas as pd

        codes: np.ndarray | None = None
        bad: np.ndarray | None = None
        for f, pidx, stride in zip(self.features, self._column_index(), self.strides, strict=True):
            raw = columns[f.name]
            if f.type == "category":
                idx = pidx.get_indexer(pd.Index(np.asarray(raw, dtype=object)).astype(str))
            else:
                idx = _integer_positions(np.asarray(raw), int(f.min or 0), len(pidx))
            idx = np.asarray(idx, dtype=np.int64)
            part = idx * stride
            codes = part if codes is None else codes + part
            miss = idx < 0
            bad = miss if bad is None else (bad | miss)
        if codes is None or bad is None:
            return np.zeros(0, dtype=np.int64)
        codes[bad] = -1
        return codes

    def decode(self, codes: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The key columns of ``codes``: categories as object arrays of str, integers int64."""
        rest = np.asarray(codes, dtype=np.int64)
        if rest.size and (rest.min() < 0 or rest.max() >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got {rest.min()}..{rest.max()}")
        out: dict[str, np.ndarray] = {}
        parts = zip(self.features, self._column_index(), self.strides, self.radixes, strict=True)
        for f, pidx, stride, radix in parts:
            idx = (rest // stride) % radix
            if f.type == "category":
                out[f.name] = np.asarray(pidx.to_numpy(dtype=object)[idx], dtype=object)
            else:
                out[f.name] = idx + int(f.min or 0)
        return out


def _int_index(index: dict[Any, int], v: Any) -> int | None:
    """Index of an integer-valued number (3.0 counts as 3) or None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float | np.floating) and math.isfinite(v) and float(v).is_integer():
        return index.get(int(v))
    if isinstance(v, np.integer):
        return index.get(int(v))
    if isinstance(v, str):  # as the vectorized path (pd.to_numeric) reads "3" or "3.0"
        try:
            number = float(v)
        except ValueError:
            return None
        return index.get(int(number)) if math.isfinite(number) and number.is_integer() else None
    return None


def _integer_positions(values: np.ndarray, low: int, size: int) -> np.ndarray:
    """Position of each integer value in ``range(low, low + size)``, -1 outside or not integral."""
    if values.dtype.kind in "iu":
        pos = values.astype(np.int64) - low
        return np.where((pos >= 0) & (pos < size), pos, -1)
    import pandas as pd

    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(numeric) & (np.floor(numeric) == numeric)
    pos = np.where(ok, numeric - low, -1)
    pos = np.where((pos >= 0) & (pos < size), pos, -1)
    return pos.astype(np.int64)


_codecs: dict[Schema, KeyCodec] = {}


def codec_for(schema: Schema) -> KeyCodec:
    """The (cached) ``KeyCodec`` of ``schema``."""
    codec = _codecs.get(schema)
    if codec is None:
        if len(_codecs) > 16:  # schemas rarely change; keep the cache from growing without bound
            _codecs.clear()
        codec = _codecs[schema] = KeyCodec(schema)
    return codec


def encode_keys(schema: Schema, columns: Mapping[str, Sequence[Any] | np.ndarray | pd.Series]) -> np.ndarray:
    """Mixed-radix int64 code of each row; -1 where any key value is outside its domain.

    Categories are compared as strings (``7`` and ``"7"`` are one category).
    """
    return codec_for(schema).encode_columns(columns)


def decode_codes(schema: Schema, codes: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """The key feature columns of ``codes`` (inverse of ``encode_keys``)."""
    return codec_for(schema).decode(codes)
