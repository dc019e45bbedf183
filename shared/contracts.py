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

# --- blobs of the DATA bucket ----------------------------------------------------------------

INCOMING_PREFIX = "incoming/"
"""Data files land here; each "object finalized" event fires the train function."""
QUARANTINE_PREFIX = "quarantine/"
"""Bad data files, moved here (``quarantine/<name>``, ``quarantine/<name>@<generation>``)."""
REASON_SUFFIX = ".reason.json"
"""Beside each quarantined file: why (``quarantine/<name>.reason.json``)."""

# --- blobs of the ARTIFACTS bucket -----------------------------------------------------------

SCHEMA_BLOB = "schema.json"
"""The dataset contract."""
CURRENT_MODEL = "models/current.skops"
"""The serving model: a byte copy of one version's model, swapped by compare-and-swap."""
VERSIONS_PREFIX = "models/versions/"
"""``models/versions/<version>/{model.skops,card.json,holdout.parquet}``: every version kept."""
EVENTS_PREFIX = "registry/events/"
"""``registry/events/<generation>.json``: one record per swap of the current model."""
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


# --- closed sets of words --------------------------------------------------------------------


class ServingMode(StrEnum):
    """How predict answers (``SERVING_MODE``)."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    HYBRID = "hybrid"


class TableStrategy(StrEnum):
    """Which keys a table build scores."""

    AUTO = "auto"
    FULL = "full"
    TOP_K = "top_k"


class Runner(StrEnum):
    """Where a Beam pipeline runs."""

    DIRECT = "direct"
    DATAFLOW = "dataflow"


class BuildPath(StrEnum):
    """Where a table build or a bulk validation runs: in the function, or a pipeline runner."""

    FUNCTION = "function"
    DIRECT = "direct"
    DATAFLOW = "dataflow"


class TrainingStrategy(StrEnum):
    """How a challenger is trained (``TRAINING_STRATEGY``)."""

    FULL = "full"
    INCREMENTAL = "incremental"


class CardStatus(StrEnum):
    """The gate's decision on a version, in its card."""

    PENDING = "pending"  # written, not yet swapped in (or a crash kept the card from saying so)
    PROMOTED = "promoted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # another model was promoted first; the work was redone on top of it


class EventOutcome(StrEnum):
    """What the train function made of one data file event."""

    IGNORED = "ignored"  # not under incoming/ of the data bucket
    DUPLICATE = "duplicate"  # that file version was done before
    CLAIMED = "claimed"  # another delivery works on it
    NO_SCHEMA = "no_schema"  # left in place for `prodml replay`
    GONE = "gone"  # that object or generation is not in the bucket
    QUARANTINED = "quarantined"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ALREADY_TRAINED = "already_trained"  # the current model's lineage holds it
    MODEL_ERROR = "model_error"  # the current model cannot be loaded; left for replay
    ERROR = "error"  # a non-transient error, recorded; left for replay


class MonitoringDecision(StrEnum):
    """The decision a file's monitoring record carries (what `prodml monitor` shows)."""

    ACCEPTED = "accepted"
    WARNING = "warning"  # drift over the threshold under DRIFT_POLICY=warn
    QUARANTINED = "quarantined"
    ERROR = "error"
    MODEL_ERROR = "model_error"
