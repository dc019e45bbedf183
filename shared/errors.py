"""The project's one exception hierarchy.

Entry points map these to HTTP status codes (see ``http_status``); every message names the bad
value so that a user reading a log line or an error body knows what to fix.
"""

from __future__ import annotations


class ProdMLError(Exception):
    """Base of every error this package raises on purpose."""

    http_status = 500


class ConfigError(ProdMLError):
    """An environment variable is missing or has a bad value."""

    http_status = 500


# --- storage -------------------------------------------------------------------------------


class StorageError(ProdMLError):
    """A bucket operation failed."""

    http_status = 503


class NotFound(StorageError):
    """The object (or bucket) does not exist."""

    http_status = 404


class PreconditionFailed(StorageError):
    """An ``if_generation_match`` precondition did not hold: someone else wrote first."""

    http_status = 412


class InvalidObjectName(StorageError):
    """An object name is malformed or would escape its bucket folder; ``rule`` says which rule."""

    http_status = 400

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule or message


# --- events and requests -------------------------------------------------------------------


class InvalidEvent(ProdMLError):
    """A CloudEvent or background event is malformed or of a foreign type."""

    http_status = 400


class BadRequest(ProdMLError):
    """An HTTP request body is malformed; ``field`` and ``index`` locate the fault."""

    http_status = 400

    def __init__(
        self,
        message: str,
        *,
        code: str = "bad_request",
        field: str | None = None,
        index: int | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field
        self.index = index
        self.http_status = status

    def to_dict(self) -> dict[str, object]:
        """The error body of docs/design.md section 5."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "index": self.index,
                "field": self.field,
            }
        }


# --- data and models -----------------------------------------------------------------------


class SchemaError(ProdMLError):
    """``schema.json`` is missing, malformed, or inconsistent."""

    http_status = 500


class ValidationFailed(ProdMLError):
    """A data file breaks the dataset contract; it goes to quarantine with ``reason``."""

    http_status = 200  # a bad file is handled (quarantined), so the platform must not retry

    def __init__(self, rule: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.details = details or {}


class ModelNotReady(ProdMLError):
    """No model has been promoted yet (serving answers 503 with Retry-After)."""

    http_status = 503
