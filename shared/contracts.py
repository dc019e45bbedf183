"""Every contract value of the system, defined once: blob names and prefixes, and the closed sets
of words that cross modules and processes (modes, strategies, runners, statuses, outcomes).

docs/design.md describes each. Every module imports them from here, so a value is spelled once
and a typo is a NameError instead of a silent mismatch. This module imports nothing heavy: the
CLI's parsers read choices from it while ``prodml --help`` stays fast (no scikit-learn, pandas,
matplotlib or Beam).

The sets are ``StrEnum``s: a member *is* its string (``ServingMode.HYBRID == "hybrid"``), so it
goes into JSON, env vars and log lines as that string, and ``ServingMode("hybrid")`` parses one.
"""

from __future__ import annotations

from enum import StrEnum


def words(choices: type[StrEnum]) -> tuple[str, ...]:
    """The plain strings of a set, in order: for argparse ``choices``, whose error message shows
    each choice's repr (a member's repr is ``<TableStrategy.FULL: 'full'>``)."""
    return tuple(member.value for member in choices)


# --- blobs of the DATA bucket ----------------------------------------------------------------

INCOMING_PREFIX = "incoming/"
"""Data files land here; each "object finalized" event fires the train function."""
QUARANTINE_PREFIX = "quarantine/"
"""Bad data files, moved here (``quarantine/<name>``, ``quarantine/<name>@<generation>``)."""
REASON_SUFFIX = ".reason.json"
"""Beside each quarantined file: why (``quarantine/<name>.reason.json``)."""

FEEDBACK_INCOMING_PREFIX = "incoming/feedback/"
"""``incoming/feedback/<seq>-<ids hash>.parquet``: matured joined rows written back as an ordinary
data file (``FEEDBACK_TRAINING``; ``shared.feedback.emission``); it trains like any other."""

LABELS_PREFIX = "labels/"
"""Labels that arrive after their predictions (``id``, the label column, optional event time);
each "object finalized" event fires the train function, which validates and stores them."""

MAX_PREDICTION_ID_CHARS = 128
"""The longest prediction id a labels file may name (ids are text of 1 to this many characters)."""

# --- blobs of the PREDICTIONS bucket (no trigger: predict writes here often) -----------------

PREDICTIONS_PREFIX = "predictions/"
"""``predictions/<YYYY-MM-DD>/<instance>-<first ms>-<seq>.npz``: the prediction log, one object
per flush of one predict instance, never written twice (``shared.feedback.log_format``)."""

# --- blobs of the ARTIFACTS bucket -----------------------------------------------------------

SCHEMA_BLOB = "schema.json"
"""The dataset contract."""
CURRENT_MODEL = "models/current.skops"
"""The serving model: a byte copy of one version's model, swapped by compare-and-swap."""
VERSIONS_PREFIX = "models/versions/"
"""``models/versions/<version>/{model.skops,card.json,holdout.parquet}``: every version kept."""
COMPILED_MODEL_FILE = "model.onnx"
"""``models/versions/<version>/model.onnx``: the version compiled by skl2onnx, when it converted and
agreed with the scikit-learn model (``shared.compiled``)."""
CURRENT_VERSION_METADATA = "prodml-version"
"""Custom metadata of ``models/current.skops``: the version it holds, written with its content in
the one compare-and-swap, so predict learns it from a stat without reading the skops file."""
CURRENT_FORM_METADATA = "prodml-form"
"""Custom metadata of ``models/current.skops``: which form of that version predict serves
(a ``ModelForm``)."""
EVENTS_PREFIX = "registry/events/"
"""``registry/events/<generation>.json``: one record per swap of the current model."""
SHADOW_POINTER = "models/shadow.json"
"""Which version runs in shadow beside the current model (none: ``"version": null``), swapped by
compare-and-swap like the model blob (``shared.training.shadow``)."""
SHADOW_HISTORY_PREFIX = "registry/shadow/"
"""``registry/shadow/<generation>.json``: one record per change of the shadow pointer."""
PROCESSED_PREFIX = "registry/processed/"
"""``registry/processed/<bucket>/<name>@<generation>.json``: a data file version is done."""
CLAIMS_PREFIX = "registry/claims/"
"""``registry/claims/<bucket>/<name>@<generation>.json``: who works on a data file version."""
TABLE_PREFIX = "tables/"
"""``tables/<model version>/<strategy>-<build id>.npz``: one object per table build."""
TABLE_POINTER = "tables/current.json"
"""Names the table object being served; switched by compare-and-swap."""
MONITORING_PREFIX = "monitoring/"
"""``monitoring/<name>@<generation>.json``: the live model's quality and drift on each file."""
TRAFFIC_PREFIX = "traffic/"
"""Requested keys counted by predict instances (the advisor and top-K builds read them)."""
VALIDATION_REPORT_PREFIX = "pipelines/validate/"
"""Reports of the bulk validation pipeline."""
JOIN_REPORT_PREFIX = "pipelines/join/"
"""The Beam join's runs: ``pipelines/join/<run id>.json``, its live report, and
``pipelines/join/<run id>/rows-<shard>.parquet``, the joined rows (``shared.pipelines.join_pipeline``)."""
STORED_LABELS_PREFIX = "feedback/labels/"
"""``feedback/labels/<bucket>/<name>@<generation>.npz``: one accepted labels file, normalized
(``shared.feedback.labels``), written once; the join reads every one of them."""
EMITTED_PREFIX = "feedback/emitted/"
"""``feedback/emitted/<seq>.npz`` (the rows of one emission, written first: its reservation) and
``feedback/emitted/<seq>.json`` (the emission record, written once its data file is): which
matured joined rows went back into training, so none goes twice (``shared.feedback.emission``)."""
FEEDBACK_SOURCE = "feedback"
"""A lineage entry's ``source`` when its data file was written by the loop from served rows."""
LIVE_REPORT_BLOB = "feedback/live.json"
"""The live quality report (what ``prodml live --json`` prints), written after each labels file."""


# --- words of the data ----------------------------------------------------------------------

LABEL_NAMES: tuple[str, ...] = ("label", "target", "y")
"""Column names (any case) `prodml schema infer` takes as the label when none is named."""


# --- closed sets of words --------------------------------------------------------------------
# Where two sets share a word (a promoted event promotes a card), the later set takes the earlier
# one's value, so each word is spelled once and the two can never drift apart.


class StorageBackend(StrEnum):
    """Where buckets live (``STORAGE_BACKEND``)."""

    LOCAL = "local"
    GCS = "gcs"


class LogFormat(StrEnum):
    """How log lines are written (``LOG_FORMAT``)."""

    AUTO = "auto"  # json when the stream is not a terminal, else text
    JSON = "json"
    TEXT = "text"


class UnseenCategoryPolicy(StrEnum):
    """What a category value outside the schema's domain does to a file (``UNSEEN_CATEGORY_POLICY``)."""

    QUARANTINE = "quarantine"
    ACCEPT = "accept"


class DriftPolicy(StrEnum):
    """What drift over the threshold does to a file (``DRIFT_POLICY``)."""

    WARN = "warn"
    QUARANTINE = UnseenCategoryPolicy.QUARANTINE.value


class LeakagePolicy(StrEnum):
    """What a feature that alone predicts the label does to a file (``LEAKAGE_POLICY``)."""

    WARN = DriftPolicy.WARN.value
    QUARANTINE = UnseenCategoryPolicy.QUARANTINE.value


LEAKAGE_RULE = "leakage"
"""The quarantine rule of a file with a leaking feature (``LEAKAGE_POLICY=quarantine``)."""


class ServingMode(StrEnum):
    """How predict answers (``SERVING_MODE``); also what the advisor recommends."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    HYBRID = "hybrid"


class HealthWarning(StrEnum):
    """What predict's ``/health`` warns of (its ``warnings``, each a code and a message)."""

    MODEL_OLD = "model_old"  # the served model is older than MODEL_AGE_WARNING_SECONDS
    TABLE_OLD = "table_old"  # the table is older than TABLE_AGE_WARNING_SECONDS
    TABLE_FROM_OTHER_MODEL = "table_from_other_model"  # a rebuild for the served model is missing


class TableStrategy(StrEnum):
    """Which keys a table build scores (a build plan holds FULL or TOP_K, never AUTO)."""

    AUTO = "auto"
    FULL = "full"
    TOP_K = "top_k"


class BuildStatus(StrEnum):
    """How a table build ended (``BuildResult.status``, the build functions' answers)."""

    BUILT = "built"
    SKIPPED = "skipped"  # this model generation's table is already current
    NOTHING_TO_BUILD = "nothing_to_build"  # no model, no key, or too many keys and no traffic


class ModelForm(StrEnum):
    """Which form of a model version answers: the compiled ONNX graph, or the scikit-learn object."""

    ONNX = "onnx"
    SKLEARN = "sklearn"


class CompileStatus(StrEnum):
    """What became of a version's compilation (its card's ``compiled.status``)."""

    VERIFIED = "verified"  # converted, and agrees with scikit-learn within tolerance: served compiled
    DIFFERS = "differs"  # converted, but disagrees (or is not batch-invariant): served by scikit-learn
    UNCONVERTIBLE = "unconvertible"  # skl2onnx cannot convert it: served by scikit-learn
    DISABLED = "disabled"  # COMPILE_MODELS=false: not tried


class Runner(StrEnum):
    """Where a Beam pipeline runs."""

    DIRECT = "direct"
    DATAFLOW = "dataflow"


class BuildPath(StrEnum):
    """Where a table build or a bulk validation runs: in the function, or a pipeline runner."""

    FUNCTION = "function"
    DIRECT = Runner.DIRECT.value
    DATAFLOW = Runner.DATAFLOW.value


RUNNER_AUTO = "auto"
"""``PIPELINE_RUNNER`` and ``--runner``: let the decision pick a ``BuildPath``."""


class LaunchStatus(StrEnum):
    """The status of a pipeline run that was started elsewhere instead of finished here."""

    LAUNCHED = "launched"  # a Dataflow job was submitted; its result comes later
    DRY_RUN = "dry_run"  # the launch request was only shown (``--dry-run``)


class Pipeline(StrEnum):
    """The Beam pipelines (``python -m shared.pipelines.run --pipeline``, the Flex Template)."""

    TABLE = "table"
    VALIDATE = "validate"
    JOIN = "join"


STATIC_STRATEGY = "static"
"""The training strategy a card of static training (`prodml train`) records (not a setting)."""


class TrainingStrategy(StrEnum):
    """How a challenger is trained (``TRAINING_STRATEGY``)."""

    FULL = TableStrategy.FULL.value
    INCREMENTAL = "incremental"


class CardStatus(StrEnum):
    """The gate's decision on a version, in its card."""

    PENDING = "pending"  # written, not yet swapped in (or a crash kept the card from saying so)
    PROMOTED = "promoted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # another model was promoted first; the work was redone on top of it
    SHADOW = "shadow"  # passed the offline gate; scored in shadow on live traffic, not yet promoted


class EventOutcome(StrEnum):
    """What the train function made of one data file event."""

    IGNORED = "ignored"  # not under incoming/ of the data bucket
    DUPLICATE = "duplicate"  # that file version was done before
    CLAIMED = "claimed"  # another delivery works on it
    NO_SCHEMA = "no_schema"  # left in place for `prodml replay`
    GONE = "gone"  # that object or generation is not in the bucket
    QUARANTINED = "quarantined"
    PROMOTED = CardStatus.PROMOTED.value
    REJECTED = CardStatus.REJECTED.value
    ALREADY_TRAINED = "already_trained"  # the current model's lineage holds it
    MODEL_ERROR = "model_error"  # the current model cannot be loaded; left for replay
    ERROR = "error"  # a non-transient error, recorded; left for replay
    TRAINED_BY_CLI = "trained_by_cli"  # no event: the done marker `prodml train` writes
    LABELS_STORED = "labels_stored"  # a labels file, accepted and stored for the join
    SHADOW = CardStatus.SHADOW.value  # passed the gate; runs in shadow (PROMOTION_POLICY=shadow)


class PromotionPolicy(StrEnum):
    """What a challenger that passes the offline gate becomes (``PROMOTION_POLICY``)."""

    OFFLINE = "offline"  # the serving model at once
    SHADOW = "shadow"  # the shadow; promoted on matured live labels (shared.training.shadow_policy)


class ShadowChange(StrEnum):
    """What one change of the shadow pointer did (its history record's ``change``)."""

    STARTED = "started"  # a version began to run in shadow
    REPLACED = "replaced"  # a newer challenger took the place of the running shadow
    PROMOTED = "promoted"  # the shadow became the serving model
    REJECTED = "rejected"  # worse than the champion on matured live labels: stopped
    EXPIRED = "expired"  # older than SHADOW_MAX_AGE without a decision: stopped
    STOPPED = "stopped"  # stopped by hand (`prodml shadow stop`) or the champion changed under it


class MonitoringDecision(StrEnum):
    """The decision a file's monitoring record carries (what `prodml monitor` shows)."""

    ACCEPTED = "accepted"
    WARNING = "warning"  # drift, leakage or a served share over its threshold, under a warn policy
    QUARANTINED = EventOutcome.QUARANTINED.value
    ERROR = EventOutcome.ERROR.value
    MODEL_ERROR = EventOutcome.MODEL_ERROR.value
    NOT_PROCESSED = "not processed"  # `prodml monitor`'s row of a file with no record yet


class ValidationStatus(StrEnum):
    """What the bulk validation pipeline made of one object (its report counts each)."""

    ACCEPTED = MonitoringDecision.ACCEPTED.value
    QUARANTINED = EventOutcome.QUARANTINED.value
    GONE = EventOutcome.GONE.value  # that generation was replaced or deleted before it was read


class ReplayStatus(StrEnum):
    """How `prodml replay` ended for one file (an in-process replay gives an ``EventOutcome``)."""

    DELIVERED = "delivered"
    DEAD_LETTERED = "dead-lettered"
    SKIPPED_PROCESSED = "skipped: processed"  # its done marker exists (unless --include-processed)
    NOT_PROCESSED = MonitoringDecision.NOT_PROCESSED.value  # delivered and answered, not finished
    REFUSED = "refused"  # a file no object name reaches: it can never fire
    FAILED = "failed"  # the in-process run raised


class LabelsRule(StrEnum):
    """Why a labels file (``labels/``) is quarantined, beside the reading rules it shares with data
    files (``too_large``, ``unknown_format``, ``unreadable``, ``empty``, ``too_many_rows``,
    ``duplicate_columns``, ``too_many_columns``)."""

    MISSING_ID = "missing_id"  # no ``id`` column
    INVALID_ID = "invalid_id"  # an id missing, empty, or over 128 characters
    MISSING_LABEL = "missing_label"  # no column named as the schema's label
    INVALID_LABEL = "invalid_label"  # a label missing, not a class, not a finite number
    INVALID_EVENT_TIME = "invalid_event_time"  # an event_time neither ISO 8601 nor epoch seconds


class PredictionSource(StrEnum):
    """What answered one prediction (the log's ``source`` column)."""

    TABLE = "table"
    MODEL = "model"
    MISS = "miss"  # static mode, a key not in the table: no score was served


class LabelState(StrEnum):
    """Where one logged prediction stands with its label (docs/feedback.md, maturity)."""

    LABELLED = "labelled"  # its label arrived
    DEFAULTED = "defaulted"  # no label, older than LABEL_WINDOW: counts as LABEL_DEFAULT
    PENDING = "pending"  # no label yet, and none assumed
