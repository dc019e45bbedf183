"""The dataset contract, ``schema.json`` in the artifacts bucket.

It names every feature with its type (``category`` with its domain, ``integer`` or ``float``
with its range), the label (``category`` with its classes, for binary and multiclass
classification; ``float`` for regression), and which features form the table key. Example::

    {
      "features": [
        {"name": "country", "type": "category", "domain": ["br", "de", "kr", "us"]},
        {"name": "hour", "type": "integer", "min": 0, "max": 23},
        {"name": "bid", "type": "float", "min": 0.0, "max": 10.0, "default": 1.5}
      ],
      "label": {"name": "converted", "type": "category", "classes": [0, 1]},
      "key": ["country", "hour"]
    }

Key features must be enumerable (category or integer). Features outside the key take their
``default`` when a table is built (static serving answers by key alone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.contracts import SCHEMA_BLOB
from shared.errors import NotFound, SchemaError
from shared.storage import Bucket

FeatureType = Literal["category", "integer", "float"]
Scalar = str | int | float


@dataclass(frozen=True)
class Feature:
    """One input column: its type and the values it may take."""

    name: str
    type: FeatureType
    domain: tuple[str, ...] = ()  # categories (as strings), for type "category"
    min: float | None = None  # inclusive range, for "integer" and "float"
    max: float | None = None
    default: Scalar | None = None  # the value a table build uses when not a key feature

    @property
    def cardinality(self) -> int | None:
        """How many values the feature can take, or None for floats."""
        if self.type == "category":
            return len(self.domain)
        if self.type == "integer" and self.min is not None and self.max is not None:
            return int(self.max) - int(self.min) + 1
        return None

    def values(self) -> list[Scalar]:
        """Every value of an enumerable feature, in a fixed order (the table's key order)."""
        if self.type == "category":
            return list(self.domain)
        if self.type == "integer" and self.min is not None and self.max is not None:
            return list(range(int(self.min), int(self.max) + 1))
        raise SchemaError(f"feature {self.name!r} of type {self.type!r} cannot be enumerated")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this feature."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "category":
            out["domain"] = list(self.domain)
        else:
            out["min"] = int(self.min) if self.type == "integer" and self.min is not None else self.min
            out["max"] = int(self.max) if self.type == "integer" and self.max is not None else self.max
        if self.default is not None:
            out["default"] = self.default
        return out


@dataclass(frozen=True)
class Label:
    """The target: ``category`` (classification) with its classes, or ``float`` (regression)."""

    name: str
    type: Literal["category", "float"]
    classes: tuple[Scalar, ...] = ()
    min: float | None = None
    max: float | None = None

    @property
    def task(self) -> Literal["binary", "multiclass", "regression"]:
        """The learning task this label makes."""
        if self.type == "float":
            return "regression"
        return "binary" if len(self.classes) == 2 else "multiclass"

    @property
    def positive_class(self) -> Scalar | None:
        """For binary labels, the class whose probability is the score (the second one)."""
        return self.classes[1] if self.task == "binary" else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this label."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "category":
            out["classes"] = list(self.classes)
        else:
            out["min"], out["max"] = self.min, self.max
        return out


@dataclass(frozen=True)
class Schema:
    """Features, label and key: what a data file must hold and what a request may ask."""

    features: tuple[Feature, ...]
    label: Label
    key: tuple[str, ...]
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {f.name: f for f in self.features}
        object.__setattr__(self, "_by_name", by_name)
        if len(by_name) != len(self.features):
            raise SchemaError("schema: feature names must be unique")
        if self.label.name in by_name:
            raise SchemaError(f"schema: label {self.label.name!r} is also listed as a feature")
        for name in self.key:
            if name not in by_name:
                raise SchemaError(f"schema: key feature {name!r} is not a feature")
            if by_name[name].cardinality is None:
                raise SchemaError(f"schema: key feature {name!r} must be a category or a bounded integer")

    @property
    def feature_names(self) -> list[str]:
        """Feature names in schema order (the model's column order)."""
        return [f.name for f in self.features]

    @property
    def key_features(self) -> list[Feature]:
        """The features that form the table key, in key order."""
        return [self._by_name[name] for name in self.key]

    @property
    def key_cardinality(self) -> int:
        """How many distinct keys exist: the product of the key features' cardinalities."""
        return math.prod(f.cardinality or 0 for f in self.key_features) if self.key else 0

    def feature(self, name: str) -> Feature:
        """The feature called ``name``; ``SchemaError`` if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"schema has no feature {name!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as stored in ``schema.json``."""
        return {
            "features": [f.to_dict() for f in self.features],
            "label": self.label.to_dict(),
            "key": list(self.key),
        }

    def to_json(self) -> str:
        """Pretty JSON, for a person to review."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any) -> Schema:
        """Parse and check a schema; ``SchemaError`` names the bad field and value."""
        if not isinstance(raw, dict):
            raise SchemaError(f"schema must be a JSON object, got {type(raw).__name__}")
        features_raw = _need(raw, "features", list, "schema")
        if not features_raw:
            raise SchemaError("schema: 'features' is empty")
        features = tuple(_parse_feature(i, f) for i, f in enumerate(features_raw))
        label = _parse_label(_need(raw, "label", dict, "schema"))
        key_raw = raw.get("key", [])
        if not isinstance(key_raw, list) or not all(isinstance(k, str) for k in key_raw):
            raise SchemaError(f"schema: 'key' must be a list of feature names, got {key_raw!r}")
        return cls(features=features, label=label, key=tuple(key_raw))

    @classmethod
    def from_json(cls, text: str | bytes) -> Schema:
        """Parse ``schema.json`` content."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"{SCHEMA_BLOB} is not valid JSON: {exc}") from None
        return cls.from_dict(raw)


def _need(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind):
        raise SchemaError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"{where} must be a finite number, got {value!r}")
    return value


def _parse_feature(index: int, raw: Any) -> Feature:
    where = f"schema: features[{index}]"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be an object, got {raw!r}")
    name = _need(raw, "name", str, where)
    where = f"schema: feature {name!r}"
    kind = raw.get("type")
    if kind == "category":
        domain = _need(raw, "domain", list, where)
        if not domain or len(set(map(str, domain))) != len(domain):
            raise SchemaError(f"{where}: 'domain' must be a non-empty list of distinct values")
        return Feature(name, "category", domain=tuple(str(v) for v in domain), default=raw.get("default"))
    if kind in ("integer", "float"):
        low, high = _number(raw.get("min"), f"{where} min"), _number(raw.get("max"), f"{where} max")
        if low is not None and high is not None and low > high:
            raise SchemaError(f"{where}: min {low!r} is above max {high!r}")
        default = _number(raw.get("default"), f"{where} default")
        return Feature(name, kind, min=low, max=high, default=default)
    raise SchemaError(f"{where}: 'type' must be category, integer or float, got {kind!r}")


def _parse_label(raw: dict[str, Any]) -> Label:
    name = _need(raw, "name", str, "schema: label")
    where = f"schema: label {name!r}"
    kind = raw.get("type")
    if kind == "category":
        classes = _need(raw, "classes", list, where)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise SchemaError(f"{where}: 'classes' must list at least 2 distinct values, got {classes!r}")
        if not all(isinstance(c, str) for c in classes) and not all(
            isinstance(c, int) and not isinstance(c, bool) for c in classes
        ):
            raise SchemaError(f"{where}: 'classes' must be all strings or all integers, got {classes!r}")
        return Label(name, "category", classes=tuple(sorted(classes)))
    if kind == "float":
        return Label(
            name,
            "float",
            min=_number(raw.get("min"), f"{where} min"),
            max=_number(raw.get("max"), f"{where} max"),
        )
    raise SchemaError(f"{where}: 'type' must be category or float, got {kind!r}")


def load_schema(artifacts: Bucket) -> Schema:
    """Read ``schema.json``; a clear ``SchemaError`` when there is none yet."""
    try:
        return Schema.from_json(artifacts.read(SCHEMA_BLOB))
    except NotFound:
        raise SchemaError(
            f"no {SCHEMA_BLOB} in bucket {artifacts.name!r}: write one with "
            f"`prodml schema infer FILE` and review it"
        ) from None


def save_schema(artifacts: Bucket, schema: Schema) -> int:
    """Write ``schema.json``; return its generation."""
    return artifacts.write(SCHEMA_BLOB, schema.to_json().encode(), content_type="application/json")
