"""The one exception hierarchy (shared/errors.py) and its one retry policy, ``is_transient``."""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import shared
from shared import errors
from shared.errors import (
    BadRequest,
    ConfigError,
    InvalidMetadata,
    InvalidObjectName,
    ModelNotReady,
    NotFound,
    ObjectChanged,
    PreconditionFailed,
    ProdMLError,
    RetryLater,
    SchemaError,
    StorageError,
    TableError,
    ValidationFailed,
    is_transient,
)

_BEAM = "apache_beam"  # the pipelines' modules import it; the test venv does not have it


def _shared_modules() -> tuple[list[ModuleType], list[Path]]:
    """Every module of the ``shared`` package, imported; and the files of those needing Beam."""
    imported: list[ModuleType] = []
    need_beam: list[Path] = []
    for info in pkgutil.walk_packages(shared.__path__, "shared."):
        try:
            imported.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith(_BEAM):
                raise
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None
            need_beam.append(Path(spec.origin))
    return imported, need_beam


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    """The exception classes ``module`` defines itself (not those it imports)."""
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]


def _is_exception_name(name: str) -> bool:
    known = getattr(builtins, name, None) or getattr(errors, name, None)
    return isinstance(known, type) and issubclass(known, BaseException)


def test_every_exception_class_in_shared_is_a_prodml_error_of_errors_py_with_its_status_and_code() -> None:
    modules, need_beam = _shared_modules()
    assert len(modules) > 40 and all("pipelines" in path.parts for path in need_beam), need_beam
    found = [cls for module in modules for cls in _exception_classes(module)]
    assert {c.__name__ for c in found} >= {"RetryLater", "TableError", "DemoError", "ModelChanged"}
    for cls in found:
        assert issubclass(cls, ProdMLError), (
            f"{cls.__module__}.{cls.__name__} does not derive from ProdMLError"
        )
        assert cls.__module__ == "shared.errors", (
            f"{cls.__module__}.{cls.__name__} is defined outside errors.py"
        )
        assert "code" in vars(cls), f"{cls.__name__} names no code of its own"
        assert isinstance(cls.code, str) and cls.code.isidentifier() and cls.code.islower(), cls
        assert isinstance(cls.http_status, int) and 100 <= cls.http_status <= 599, cls
    codes = [cls.code for cls in found]
    assert len(codes) == len(set(codes)), f"two classes share a code: {sorted(codes)}"
    # The modules that need Beam cannot be imported here: read them instead.
    for path in need_beam:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                assert not any(_is_exception_name(b) for b in bases), f"{path}: class {node.name}"


def test_table_error_is_no_schema_error() -> None:
    assert not issubclass(TableError, SchemaError) and issubclass(TableError, ProdMLError)


def test_every_error_answers_the_error_body_with_its_own_code() -> None:
    body = ConfigError("PIPELINE_PYTHON='x' does not exist").to_dict()
    assert body == {
        "error": {
            "code": "misconfigured",
            "message": "PIPELINE_PYTHON='x' does not exist",
            "index": None,
            "field": None,
        }
    }
    refused = BadRequest("no", code="unknown_category", field="country", index=2, status=422)
    assert refused.to_dict()["error"] == {
        "code": "unknown_category",
        "message": "no",
        "index": 2,
        "field": "country",
    }
    assert refused.http_status == 422 and BadRequest.http_status == 400  # per instance, not per class
    assert ModelNotReady("none yet").to_dict()["error"]["code"] == "not_ready"
    assert ProdMLError("boom").to_dict()["error"]["code"] == "internal" and ProdMLError.http_status == 500


TRANSIENT = [
    StorageError("the bucket answered 503"),
    PreconditionFailed("someone else wrote first"),
    ObjectChanged("replaced while read"),
    RetryLater("other trainers kept promoting first"),
    OSError("I/O error"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
]
NOT_TRANSIENT = [
    NotFound("tables/v1/full-x.npz not found"),
    InvalidObjectName("'../x' escapes the bucket"),
    InvalidMetadata("metadata key '' must not be empty"),
    ModelNotReady("no model yet"),
    SchemaError("schema.json is not JSON"),
    TableError("codes are not sorted"),
    ConfigError("ESTIMATOR='x' must be 'module:function'"),
    ValidationFailed("wrong_type", "column 'bid' is not a number"),
    BadRequest("body is not JSON"),
    ProdMLError("a bad setting"),
    RuntimeError("a bug"),
    ValueError("a bug"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_infrastructure_faults_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_statements_about_the_content_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_the_serving_reloader_uses_the_one_policy() -> None:
    from shared.serving import state

    assert state.is_transient is errors.is_transient
