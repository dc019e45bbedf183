"""The project's one exception hierarchy, and the one policy on which faults a retry can fix.

Every error this package raises on purpose derives from ``ProdMLError`` and carries two class
attributes: ``http_status``, the status an entry point answers it with, and ``code``, the stable
machine name in its error body (``to_dict``: docs/design.md section 5). Every message names the
bad value, so that a user reading a log line or an error body knows what to fix.

``is_transient`` decides, for the three entry points and the serving reloader alike, whether a
fault is worth a retry (a redelivery, a reload) or is a statement about the content.

The classes are grouped by the stage that raises them; they live here, not beside their raise
sites, so that an entry point can map any of them without importing the stage (and its heavy
dependencies: this module imports nothing).
"""

from __future__ import annotations


class ProdMLError(Exception):
    """Base of every error this package raises on purpose."""

    http_status = 500
    code = "internal"

    def to_dict(self) -> dict[str, object]:
        """The error body of docs/design.md section 5 (no ``index`` or ``field`` to point at)."""
        return {"error": {"code": self.code, "message": str(self), "index": None, "field": None}}


class ConfigError(ProdMLError):
    """An environment variable is missing or has a bad value."""

    # 409, not 5xx: no retry can fix a setting, and a scheduler or the platform retries a 5xx.
    http_status = 409
    code = "misconfigured"


# --- storage -------------------------------------------------------------------------------


class StorageError(ProdMLError):
    """A bucket operation failed."""

    http_status = 503
    code = "storage_fault"


class NotFound(StorageError):
    """The object (or bucket) does not exist."""

    http_status = 404
    code = "not_found"


class PreconditionFailed(StorageError):
    """An ``if_generation_match`` precondition did not hold: someone else wrote first."""

    http_status = 412
    code = "precondition_failed"


class InvalidObjectName(StorageError):
    """An object name is malformed or would escape its bucket folder; ``rule`` says which rule."""

    http_status = 400
    code = "invalid_object_name"

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule or message


class InvalidMetadata(StorageError):
    """An object's custom metadata breaks GCS's rules (``shared.storage.metadata``); ``rule`` says
    which. Nothing was written."""

    http_status = 400
    code = "invalid_metadata"

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule or message


class ObjectChanged(StorageError):
    """A local bucket file changed while the store looked at it: the operation starts over.

    Raised and caught inside ``shared.storage.local`` (its read loop); it never reaches a caller.
    """

    code = "object_changed"


# --- events and requests -------------------------------------------------------------------


class InvalidEvent(ProdMLError):
    """A CloudEvent or background event is malformed or of a foreign type."""

    http_status = 400
    code = "invalid_event"


class BadRequest(ProdMLError):
    """An HTTP request body is malformed; ``field`` and ``index`` locate the fault.

    ``code`` and ``status`` are per instance: one class for every way a body can be refused
    (``unknown_category`` 400, ``body_too_large`` 413, ...).
    """

    http_status = 400
    code = "bad_request"

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


# --- data in -------------------------------------------------------------------------------


class SchemaError(ProdMLError):
    """``schema.json`` is missing, malformed, or inconsistent."""

    http_status = 500
    code = "invalid_schema"


class ValidationFailed(ProdMLError):
    """A data file breaks the dataset contract; it goes to quarantine with ``reason``."""

    http_status = 200  # a bad file is handled (quarantined), so the platform must not retry
    code = "validation_failed"

    def __init__(self, rule: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.details = details or {}


class QuarantineFailed(ProdMLError):
    """A bad file cannot be set aside (``quarantine/`` leads out of the bucket, ...): not a fault
    a retry can fix, so the train function records it as an error where `prodml monitor` shows
    it, and the file stays in ``incoming/`` for `prodml replay` once fixed."""

    http_status = 500
    code = "quarantine_failed"


class ZipTooLarge(ProdMLError):
    """A zip file would decompress to more than its limit (or in a way that cannot be bounded).

    Its loaders turn it into their own error (``ModelNotReady``, ``TableError``) naming the blob.
    """

    code = "zip_too_large"


class PredictionLogError(ProdMLError):
    """A prediction log object that cannot be read: not a log file, or over its size bound.
    Content, not a fault: the join skips it and counts it (``shared.feedback``)."""

    http_status = 422
    code = "invalid_prediction_log"


class StoredLabelsError(ProdMLError):
    """A stored labels object (``feedback/labels/``) that cannot be read: written over by hand,
    cut short. Content, not a fault: the join skips it and counts it."""

    http_status = 422
    code = "invalid_stored_labels"


class JoinTooLarge(ProdMLError):
    """The prediction log and the labels hold more rows than JOIN_MAX_ROWS: more than the join in
    a function (or ``prodml live``) may hold in memory. Not transient: the data only grows."""

    http_status = 413
    code = "join_too_large"


class EmissionError(ProdMLError):
    """A stored emission of the feedback loop (``feedback/emitted/<seq>.npz``) that cannot be read:
    which rows it emitted is unknown, so nothing more is emitted (rows could go twice) until it is
    repaired or removed by hand. Content, not a fault."""

    http_status = 422
    code = "invalid_emission"


class LabelDefaultError(ConfigError):
    """LABEL_DEFAULT is not a label value of the schema."""

    code = "invalid_label_default"


# --- models and training -------------------------------------------------------------------


class ModelNotReady(ProdMLError):
    """No model has been promoted yet (serving answers 503 with Retry-After)."""

    http_status = 503
    code = "not_ready"


class ScikitLearnMissing(ModelNotReady):
    """A version must be served by scikit-learn (it has no compiled form that loads) and this
    process cannot import scikit-learn or skops: a predict deployed without its fallback
    (``PREDICT_SKLEARN_FALLBACK``, docs/deploy.md). Not transient: that generation is skipped
    until a new model is promoted or predict is redeployed with the fallback."""

    code = "no_sklearn_fallback"


class IncrementalUnsupported(ProdMLError):
    """The estimator cannot be updated with ``partial_fit`` on these rows (the reason says why).

    Caught by the trainer, which then fits the model in full.
    """

    code = "incremental_unsupported"


class RegistryError(ProdMLError):
    """A registry request cannot be done as asked (unknown version, nothing to roll back to)."""

    http_status = 400
    code = "registry_refused"


class ShadowError(RegistryError):
    """A shadow request cannot be done as asked (no such version, nothing in shadow, a malformed
    ``models/shadow.json``)."""

    code = "shadow_refused"


class ShadowScoreError(ProdMLError):
    """A shadow model answered with scores the prediction log cannot hold (a bad shape, a
    non-finite score): its rows keep no shadow score, and ``/health`` counts them."""

    code = "shadow_score_refused"


class ReadOnly(ProdMLError):
    """A write reached the dashboard's read-only view of a bucket: a bug, since it only reads."""

    code = "read_only"


class ClaimLost(ProdMLError):
    """This delivery's claim was taken over (it had expired): the taker does the work now."""

    http_status = 200  # handled by the trainer: the taker finishes, nothing to retry
    code = "claim_lost"


class RetryLater(ProdMLError):
    """A transient condition (other trainers kept promoting first): the event should be redelivered."""

    http_status = 503
    code = "retry_later"


# --- tables and pipelines ------------------------------------------------------------------


class TableError(ProdMLError):
    """A table blob or pointer is malformed (wrong arrays, unsorted codes, bad JSON)."""

    code = "invalid_table"


class UnusableModel(ProdMLError):
    """The stored model cannot be used for the request (its schema, or its version as a table
    name): a retry meets the same model, so the answer is a 409 that says what to fix."""

    http_status = 409
    code = "unusable_model"


class ModelChanged(ProdMLError):
    """``models/current.skops`` is not the generation the build was planned for."""

    http_status = 409  # the newer model's own build follows its promotion
    code = "model_changed"


class PipelineFailed(ProdMLError):
    """A pipeline run ended in an error; the message holds the end of its log."""

    http_status = 500
    code = "pipeline_failed"


# --- local emulation -----------------------------------------------------------------------


class DemoError(ProdMLError):
    """A step of the demo did not happen as it should (the message says which and why)."""

    code = "demo_failed"


# --- the retry policy ----------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the same work may succeed: a fault of the infrastructure, not of the content.

    Transient: ``RetryLater``, OS errors (timeouts, connection resets, I/O errors) and
    ``StorageError``s, among them ``PreconditionFailed`` (someone else wrote first: the retry
    reads what they wrote).

    Not transient, although they are ``StorageError``s: ``NotFound``, ``InvalidObjectName`` and
    ``InvalidMetadata``. An absent object, or a refused name or metadata, is an answer about what
    the bucket holds or takes, and asking again gives the same answer until someone writes; that
    write brings its own event (a new generation for the serving reloader, a new delivery for the
    trainer). Decided once, here: the reloader skips such a generation until it changes, rather
    than re-reading it on every reload, and the train function records the file as an error
    (`prodml monitor` shows it, `prodml replay` runs it) rather than have the platform redeliver
    the event for a day.
    Everything else (a bad setting, a bad file, a bug) is not transient either.
    """
    if isinstance(exc, NotFound | InvalidObjectName | InvalidMetadata):
        return False
    return isinstance(exc, StorageError | RetryLater | OSError)
