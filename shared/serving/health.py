"""The ages of what predict serves and the warnings ``/health`` shows about them (issue 15).

A model goes stale when no new data promotes a new one; a table goes stale when its rebuild
stalls (the table build failed, or the schedule stopped): in hybrid mode a table built from an
older model is not used at all, so every request then costs a model call. ``/health`` says so in
``warnings`` (codes: ``shared.contracts.HealthWarning``), against ``MODEL_AGE_WARNING_SECONDS``
and ``TABLE_AGE_WARNING_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings
from shared.contracts import HealthWarning
from shared.tables.format import Table, build_id_of

_BUILD_ID_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class TableFacts:
    """What the ages need of a table: from a loaded table (predict) or the pointer (the live report)."""

    blob: str
    model_version: str
    built_at: Any  # the build's ``built_at`` as written (ISO text), or None

    @classmethod
    def of(cls, table: Table) -> TableFacts:
        """The facts of a loaded table."""
        return cls(table.blob, table.model_version, table.meta.get("built_at"))


def table_built_at(table: TableFacts) -> datetime | None:
    """When ``table`` was built: its ``built_at``, else the time in its build id."""
    built_at = table.built_at
    if isinstance(built_at, str):
        try:
            moment = datetime.fromisoformat(built_at)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        except ValueError:
            pass
    build_id = build_id_of(table.blob)
    if build_id is None:
        return None
    try:
        return datetime.strptime(build_id.split("-", 1)[0], _BUILD_ID_STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _warning(code: HealthWarning, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def ages_and_warnings(
    settings: Settings, model_version: str, model_age: float, table: TableFacts | None, now: datetime
) -> tuple[float | None, list[dict[str, str]]]:
    """The table's age in seconds (None: no table, or no build time) and the warnings to show."""
    warnings = []
    if model_age > settings.model_age_warning_seconds:
        warnings.append(
            _warning(
                HealthWarning.MODEL_OLD,
                f"model {model_version!r} is {model_age:.0f} s old, over "
                f"MODEL_AGE_WARNING_SECONDS={settings.model_age_warning_seconds:g}: no newer model "
                "was promoted (no new data, or every challenger was rejected; see `prodml monitor`)",
            )
        )
    if table is None:
        return None, warnings
    built = table_built_at(table)
    table_age = round((now - built).total_seconds(), 3) if built is not None else None
    if table.model_version != model_version:
        warnings.append(
            _warning(
                HealthWarning.TABLE_FROM_OTHER_MODEL,
                f"table {table.blob!r} was built from model {table.model_version!r}, not the served "
                f"{model_version!r}: its rebuild has not happened or stalled (`prodml table build`)",
            )
        )
    if table_age is not None and table_age > settings.table_age_warning_seconds:
        warnings.append(
            _warning(
                HealthWarning.TABLE_OLD,
                f"table {table.blob!r} is {table_age:.0f} s old, over "
                f"TABLE_AGE_WARNING_SECONDS={settings.table_age_warning_seconds:g}",
            )
        )
    return table_age, warnings
