"""The model card: what one version is (``models/versions/<version>/card.json``), read and
written here only.

Every module that reads a card reads a ``ModelCard``'s attributes; ``from_dict`` and ``to_dict``
are the one place that knows its JSON keys. ``from_dict`` is tolerant of cards written before:
a field they lack takes its default, a key this module does not know is kept (``extra``) and
written back, and a card whose ``strategy`` still carries the reason of a fallback
(``"full (the current model has no partial_fit)"``, as cards did before ``fallback_reason``
existed) reads as ``strategy="full"`` with that reason.

This module imports nothing heavy: ``prodml models`` reads cards without scikit-learn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shared.compiled.form import CompiledForm
from shared.contracts import CardStatus

CARD_FORMAT = "prodml-card/1"


@dataclass(frozen=True)
class Decision:
    """The gate's decision on a version, and when it was taken or last changed."""

    status: CardStatus
    reason: str = ""
    time: str = ""

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Decision:
        """A decision as stored; ``ValueError`` for a status that is none of ``CardStatus``."""
        return cls(CardStatus(body["status"]), str(body.get("reason", "")), str(body.get("time", "")))

    def to_dict(self) -> dict[str, str]:
        """The decision as stored in the card."""
        return {"status": str(self.status), "reason": self.reason, "time": self.time}


@dataclass(frozen=True)
class ModelCard:
    """One version's card. ``lineage`` entries, ``metrics``, ``reference`` and ``event`` stay
    JSON objects: they are passed along whole (to monitoring, to the next card) more than read."""

    version: str
    created: str = ""
    by: str = ""
    parent: str | None = None  # the current model when this one was trained
    task: str = ""
    # "full", "incremental" (shared.contracts.TrainingStrategy) or ``STATIC_STRATEGY`` (`prodml train`).
    strategy: str = ""
    fallback_reason: str | None = None  # why an incremental training fell back to full
    estimator: str = ""
    event: dict[str, Any] | None = None  # the data file event it was trained for, if any
    lineage: list[dict[str, Any]] = field(default_factory=list)  # every file accumulated into it
    trained_on: list[str] = field(default_factory=list)  # file keys whose rows it was fitted on
    training_rows: int | None = None
    skipped_files: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None  # training statistics, the baseline of drift checks
    holdout_cache: str | None = None  # the blob of its held-out rows, for its successors' gate
    libraries: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    training_seconds: float = 0.0
    decision: Decision | None = None
    compiled: CompiledForm | None = None  # its ONNX form: served or not, and why (None: not tried)
    # Label leakage and served share of the file it was trained for (shared.feedback.pitfalls);
    # None when trained without an event (static training) or before the checks existed.
    data_checks: dict[str, Any] | None = None
    # PROMOTION_POLICY=shadow: the generation of models/shadow.json its carried lineage was read at
    # (0: none written); it is started in shadow only against that very pointer. None: not read.
    shadow_pointer_generation: int | None = None
    format: str = CARD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other writers, kept as they are

    @property
    def status(self) -> CardStatus | None:
        """The decision's status; None for a card without a decision."""
        return self.decision.status if self.decision is not None else None

    def decided(self, status: CardStatus, reason: str, time: str) -> ModelCard:
        """This card with a new decision."""
        return dataclasses.replace(self, decision=Decision(status, reason, time))

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ModelCard:
        """A card as stored (see the module doc); ``ValueError`` when it is not a card."""
        if not isinstance(body.get("version"), str):
            raise ValueError("a card needs a string 'version'")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        decision = values.pop("decision", None)
        values["decision"] = Decision.from_dict(decision) if isinstance(decision, dict) else None
        compiled = values.pop("compiled", None)
        values["compiled"] = CompiledForm.from_dict(compiled) if isinstance(compiled, dict) else None
        strategy = str(values.get("strategy") or "")
        if values.get("fallback_reason") is None and strategy.endswith(")") and " (" in strategy:
            # Written before fallback_reason: "full (why incremental could not be done)".
            values["strategy"], reason = strategy.split(" (", 1)
            values["fallback_reason"] = reason[:-1]
        for name in ("lineage", "trained_on", "skipped_files"):
            values[name] = list(values.get(name) or [])
        for name in ("metrics", "libraries", "seconds"):
            values[name] = dict(values.get(name) or {})
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The card as stored: the keys of every card so far."""
        body: dict[str, Any] = {
            "format": self.format,
            "version": self.version,
            "created": self.created,
            "by": self.by,
            "parent": self.parent,
            "task": self.task,
            "strategy": self.strategy,
            "fallback_reason": self.fallback_reason,
            "estimator": self.estimator,
            "event": self.event,
            "lineage": self.lineage,
            "trained_on": self.trained_on,
            "training_rows": self.training_rows,
            "skipped_files": self.skipped_files,
            "metrics": self.metrics,
            "reference": self.reference,
            "holdout_cache": self.holdout_cache,
            "libraries": self.libraries,
            "seconds": self.seconds,
            "training_seconds": self.training_seconds,
            "decision": self.decision.to_dict() if self.decision is not None else None,
            "compiled": self.compiled.to_dict() if self.compiled is not None else None,
            "data_checks": self.data_checks,
            "shadow_pointer_generation": self.shadow_pointer_generation,
        }
        return {**body, **self.extra}
