"""What a table build answers (for the log, the HTTP answer and the CLI), whoever built it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shared.contracts import BuildStatus
from shared.tables.format import pointer_blob

# Statuses of a BuildResult.


@dataclass
class BuildResult:
    """What a build did, for the log, the HTTP answer and the CLI."""

    status: str  # a BuildStatus
    message: str
    strategy: str | None = None
    model_version: str | None = None
    model_generation: int | None = None
    table: str | None = None  # blob name of the table written (or found current)
    rows: int = 0
    build_seconds: float | None = None
    rows_per_second: float | None = None
    expected_hit_rate: float | None = None
    pointer_switched: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return asdict(self)


def skipped_result(
    pointer: dict[str, Any], model_generation: int, strategy: str, model_version: str
) -> BuildResult:
    """The answer when the pointer already holds this build: it names the current table object."""
    return BuildResult(
        BuildStatus.SKIPPED,
        f"table {pointer.get('version')!r} of model generation {model_generation} "
        f"({strategy}) is already current; pass force to rebuild",
        strategy=strategy,
        model_version=model_version,
        model_generation=model_generation,
        table=pointer_blob(pointer),
        rows=int(pointer.get("rows", 0)),
    )
