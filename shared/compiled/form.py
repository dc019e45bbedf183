"""What a version's card says of its compiled form (``card.json``'s ``compiled``): whether it is
served, why (not), and the evidence: the largest difference from scikit-learn on the rows checked.

Imports nothing heavy: ``prodml models`` and the card read it without scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.contracts import CompileStatus


@dataclass(frozen=True)
class CompiledForm:
    """The outcome of compiling one version (see ``shared.compiled.compile``)."""

    status: CompileStatus
    reason: str
    blob: str | None = None  # models/versions/<v>/model.onnx, when it was written
    precision: str | None = None  # "float32" or "float64": the graph's number inputs
    max_abs_difference: float | None = None  # largest |compiled - scikit-learn| on the rows checked
    tolerance: str | None = None  # what it had to stay within, e.g. "1e-06 absolute"
    rows_checked: int = 0  # held-out rows + sampled keys scored by both forms
    batch_invariant: bool | None = None  # a row scores the same bits alone as in a batch
    onnx_bytes: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)  # skl2onnx and onnxruntime versions
    seconds: float = 0.0

    @property
    def served(self) -> bool:
        """Whether predict and the table build use the compiled form of this version."""
        return self.status == CompileStatus.VERIFIED and self.blob is not None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in the card."""
        return {
            "status": str(self.status),
            "reason": self.reason,
            "blob": self.blob,
            "precision": self.precision,
            "max_abs_difference": self.max_abs_difference,
            "tolerance": self.tolerance,
            "rows_checked": self.rows_checked,
            "batch_invariant": self.batch_invariant,
            "onnx_bytes": self.onnx_bytes,
            "opsets": dict(self.opsets),
            "libraries": dict(self.libraries),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> CompiledForm:
        """A record as stored; ``ValueError`` for a status that is none of ``CompileStatus``."""
        return cls(
            status=CompileStatus(body["status"]),
            reason=str(body.get("reason", "")),
            blob=body.get("blob"),
            precision=body.get("precision"),
            max_abs_difference=body.get("max_abs_difference"),
            tolerance=body.get("tolerance"),
            rows_checked=int(body.get("rows_checked") or 0),
            batch_invariant=body.get("batch_invariant"),
            onnx_bytes=int(body.get("onnx_bytes") or 0),
            opsets={str(k): int(v) for k, v in dict(body.get("opsets") or {}).items()},
            libraries={str(k): str(v) for k, v in dict(body.get("libraries") or {}).items()},
            seconds=float(body.get("seconds") or 0.0),
        )
