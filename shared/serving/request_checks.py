"""Input checks of predict request bodies: every fault a ``BadRequest`` (4xx), never a crash.

A body is ``{"instances": [{feature: value, ...}, ...], "ids": ["...", ...]}`` (``ids``
optional), UTF-8 JSON. What is refused, and the ``code`` of the error body (docs/design.md
section 5):

- ``invalid_json``: not UTF-8, not JSON, NaN / Infinity / numbers that overflow to infinity
  (Python's json accepts them; JSON does not), nesting too deep to parse;
- ``invalid_body``: not an object, or with fields other than ``instances`` and ``ids``;
- ``invalid_ids``: ``ids`` not a list of one string per instance, an id empty, over
  ``MAX_ID_CHARS`` characters, holding a control character (or a lone surrogate), or the same as
  an earlier one of the request (the message names the index);
- ``missing_instances``, ``empty_instances``, ``too_many_instances`` (over ``MAX_INSTANCES``);
- ``instance_not_object``; ``unknown_feature``; ``missing_feature``;
- ``wrong_type``: a category must be a string (or an integer, compared as its text); an integer
  feature an integer (``3.0`` counts as 3); a float feature a number. ``true``/``false`` and
  ``null`` are never numbers;
- ``out_of_range``: a number outside the schema's ``[min, max]``;
- ``unknown_category``: a category outside the schema's domain. Refused rather than passed to
  the model: the schema is the contract the model was trained and checked on, and a table
  cannot answer a key it does not have.

Which features an instance must hold: in ``dynamic`` and ``hybrid`` modes every feature, except
that a feature with a schema ``default`` may be left out (it takes the default, as a table build
does); in ``static`` mode only the key features (the table answers by key alone; other features,
when given, are still checked, then ignored).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from shared.errors import BadRequest, SchemaError
from shared.schema import Feature, Scalar, Schema

Require = Literal["all", "key"]
_Check = Callable[[Any, int], Scalar]

INSTANCES_FIELD = "instances"
IDS_FIELD = "ids"
BODY_FIELDS = (INSTANCES_FIELD, IDS_FIELD)
MAX_ID_CHARS = 128
INVALID_IDS = "invalid_ids"
# Control characters (Unicode category Cc: U+0000-001F, U+007F-009F) would reach log files and
# terminals; a lone surrogate (Cs: U+D800-DFFF, which JSON's \ud800 escape can produce) cannot
# be encoded as UTF-8 by any later reader of the log. Neither is an id anyone means to send.
_REFUSED_ID_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class CheckedRequest:
    """A checked body: its normalized instances and the client's ids (None: none were sent)."""

    instances: list[dict[str, Scalar]]
    ids: list[str] | None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} overflows to infinity")
    return value


def parse_json(body: bytes) -> Any:
    """Parse a request body as strict JSON; ``BadRequest`` (invalid_json) names what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8: {exc}", code="invalid_json") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest("body is nested too deeply to parse", code="invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, our refusals, int digits limit
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )


def _check_for(feature: Feature) -> _Check:
    """A function that checks and normalizes one value of ``feature``."""
    return _category_check(feature) if feature.type == "category" else _number_check(feature)


def _bad(name: str, code: str, message: str, index: int) -> BadRequest:
    return BadRequest(message, code=code, field=name, index=index)


def _category_check(feature: Feature) -> _Check:
    """The check of a category value: a string (or an integer, as its text) of the domain."""
    name = feature.name
    domain = frozenset(feature.domain)

    def check_category(value: Any, index: int) -> Scalar:
        if isinstance(value, str):
            text = value
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        else:
            raise _bad(
                name,
                "wrong_type",
                f"feature {name!r} must be a string, got {_type_name(value)} {_describe(value)}",
                index,
            )
        if text not in domain:
            shown = sorted(domain)[:10]
            more = f" (and {len(domain) - 10} more)" if len(domain) > 10 else ""
            raise _bad(
                name,
                "unknown_category",
                f"feature {name!r} has no category {_describe(value)}; known: {shown}{more}",
                index,
            )
        return text

    return check_category


def _number_check(feature: Feature) -> _Check:
    """The check of a number value: finite, whole for an integer feature, within [min, max]."""
    name = feature.name
    low, high = feature.min, feature.max
    is_integer = feature.type == "integer"

    def check_number(value: Any, index: int) -> Scalar:
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an integer" if is_integer else "a number"
            raise _bad(
                name,
                "wrong_type",
                f"feature {name!r} must be {kind}, got {_type_name(value)} {_describe(value)}",
                index,
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(name, "wrong_type", f"feature {name!r} must be finite, got {value!r}", index)
        if is_integer and isinstance(value, float) and not value.is_integer():
            message = f"feature {name!r} must be an integer, got {_describe(value)}"
            raise _bad(name, "wrong_type", message, index)
        # Compare before converting: a huge JSON integer is exact in Python, float() may overflow.
        if (low is not None and value < low) or (high is not None and value > high):
            raise _bad(
                name,
                "out_of_range",
                f"feature {name!r} must lie in [{low}, {high}], got {_describe(value)}",
                index,
            )
        if is_integer:
            # Beyond int64 an integer is no feature value a model or a log column can hold
            # (ONNX Runtime's and numpy's number types stop there): refused, not passed on.
            if not -(2**63) <= value < 2**63:
                message = f"feature {name!r} is too large: {_describe(value)}"
                raise _bad(name, "out_of_range", message, index)
            return int(value)
        try:
            return float(value)
        except OverflowError:
            message = f"feature {name!r} is too large: {_describe(value)}"
            raise _bad(name, "out_of_range", message, index) from None

    return check_number


def _bad_id(message: str, index: int | None = None) -> BadRequest:
    return BadRequest(message, code=INVALID_IDS, field=IDS_FIELD, index=index)


def check_ids(ids: Any, count: int) -> list[str]:
    """The request's ``ids``, checked: one string per instance, each 1..``MAX_ID_CHARS``
    characters without control characters, none repeated; ``BadRequest`` (invalid_ids) naming
    the index of the first bad one."""
    if not isinstance(ids, list):
        raise _bad_id(f"'ids' must be a list of strings, got {_type_name(ids)}")
    if len(ids) != count:
        raise _bad_id(f"'ids' holds {len(ids)} ids for {count} instances; send one id per instance")
    seen: dict[str, int] = {}
    for index, value in enumerate(ids):
        if not isinstance(value, str):
            raise _bad_id(f"id {index} must be a string, got {_type_name(value)} {_describe(value)}", index)
        if not 1 <= len(value) <= MAX_ID_CHARS:
            message = f"id {index} must be 1 to {MAX_ID_CHARS} characters long, got {len(value)}"
            raise _bad_id(message, index)
        bad = _REFUSED_ID_CHARACTER.search(value)
        if bad is not None:
            character = f"U+{ord(bad.group()):04X}"
            raise _bad_id(f"id {index} holds {character}, a control character or lone surrogate", index)
        if value in seen:
            message = f"id {index} repeats id {seen[value]} ({_describe(value)}); ids must be unique"
            raise _bad_id(message, index)
        seen[value] = index
    return ids


class InstanceChecker:
    """Checks request bodies against one schema; built once per served schema."""

    def __init__(self, schema: Schema, max_instances: int) -> None:
        self.schema = schema
        self.max_instances = max_instances
        self._checks: dict[str, _Check] = {f.name: _check_for(f) for f in schema.features}
        self._defaults: dict[str, Scalar] = {}
        for f in schema.features:
            if f.default is not None:
                try:
                    self._defaults[f.name] = self._checks[f.name](f.default, -1)
                except BadRequest as exc:
                    raise SchemaError(f"schema: default of feature {f.name!r} is invalid: {exc}") from None
        self._key = list(schema.key)
        self._names = schema.feature_names

    def parse(self, body: bytes, require: Require) -> list[dict[str, Scalar]]:
        """The checked instances of a body, each a dict of normalized values.

        ``require="all"``: every feature, defaults filled in. ``require="key"``: the key
        features (other given features are checked, then dropped).
        """
        return self.check(body, require).instances

    def check(self, body: bytes, require: Require) -> CheckedRequest:
        """The checked instances of a body (as ``parse``) and its checked ``ids``, if any."""
        raw = parse_json(body)
        if not isinstance(raw, dict):
            raise BadRequest(
                f'body must be a JSON object {{"instances": [...]}}, got {_type_name(raw)}',
                code="invalid_body",
            )
        extra = sorted(k for k in raw if k not in BODY_FIELDS)
        if extra:
            raise BadRequest(
                f"body has unknown fields {extra[:5]}; only 'instances' and 'ids' are allowed",
                code="invalid_body",
                field=extra[0],
            )
        if "instances" not in raw:
            raise BadRequest("body has no 'instances' list", code="missing_instances", field="instances")
        instances = raw["instances"]
        if not isinstance(instances, list):
            raise BadRequest(
                f"'instances' must be a list, got {_type_name(instances)}",
                code="missing_instances",
                field="instances",
            )
        if not instances:
            raise BadRequest("'instances' is empty", code="empty_instances", field="instances")
        if len(instances) > self.max_instances:
            raise BadRequest(
                f"'instances' holds {len(instances)} instances, more than MAX_INSTANCES={self.max_instances}",
                code="too_many_instances",
                field="instances",
            )
        ids = check_ids(raw[IDS_FIELD], len(instances)) if IDS_FIELD in raw else None
        wanted = self._names if require == "all" else self._key
        checked = [self._instance(i, instance, wanted) for i, instance in enumerate(instances)]
        return CheckedRequest(checked, ids)

    def _instance(self, index: int, instance: Any, wanted: list[str]) -> dict[str, Scalar]:
        if not isinstance(instance, dict):
            raise BadRequest(
                f"instance {index} must be an object of features, got {_type_name(instance)}",
                code="instance_not_object",
                index=index,
            )
        checks = self._checks
        for name in instance:
            if name not in checks:
                raise BadRequest(
                    f"instance {index} has unknown feature {name[:60]!r}; known: {self._names}",
                    code="unknown_feature",
                    field=name[:200],
                    index=index,
                )
        out: dict[str, Scalar] = {}
        for name in wanted:
            if name in instance:
                out[name] = checks[name](instance[name], index)
            elif name in self._defaults:
                out[name] = self._defaults[name]
            else:
                raise BadRequest(
                    f"instance {index} lacks feature {name!r}",
                    code="missing_feature",
                    field=name,
                    index=index,
                )
        if len(out) < len(instance):  # static mode: check the given non-key features too
            for name, value in instance.items():
                if name not in out:
                    # Kept, though the table answers by key alone: the prediction log records the
                    # features as the client sent them (a default would read as serving skew).
                    out[name] = checks[name](value, index)
        return out
