"""The functions and their triggers, as declared once in ``infra/functions.json``.

The local router and ``prodml up`` read it here; Terraform reads the same file with
``jsondecode``. A trigger names its bucket by role (``data`` or ``artifacts``), resolved to the
configured bucket name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings, get_settings
from shared.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
DECLARATION = REPO_ROOT / "infra" / "functions.json"


@dataclass(frozen=True)
class FunctionSpec:
    """One deployable entry point."""

    name: str
    source: Path  # folder holding main.py
    entry_point: str
    signature: str  # "http" or "cloudevent"
    port_setting: str  # the env var naming its local port

    def port(self, settings: Settings) -> int:
        """The local port of this function under ``settings``."""
        return int(getattr(settings, self.port_setting.lower()))


@dataclass(frozen=True)
class TriggerSpec:
    """A storage trigger: objects finalized in ``bucket`` fire ``function``."""

    function: str
    bucket_role: str  # "data" or "artifacts"
    event_type: str
    retry: bool

    def bucket(self, settings: Settings) -> str:
        """The configured name of the trigger's bucket."""
        return settings.data_bucket if self.bucket_role == "data" else settings.artifacts_bucket


@dataclass(frozen=True)
class ScheduleSpec:
    """A periodic HTTP call of a function (Cloud Scheduler on GCP, a loop locally)."""

    function: str
    interval_setting: str
    cron: str
    body: dict[str, object]


@dataclass(frozen=True)
class Declaration:
    """Everything ``infra/functions.json`` declares."""

    functions: dict[str, FunctionSpec]
    triggers: list[TriggerSpec]
    schedules: list[ScheduleSpec]


def load_declaration(path: Path = DECLARATION) -> Declaration:
    """Read and check the declaration; ``ConfigError`` names what is wrong."""
    try:
        raw = json.loads(path.read_text())
        functions = {
            name: FunctionSpec(
                name=name,
                source=REPO_ROOT / spec["source"],
                entry_point=spec["entry_point"],
                signature=spec["signature"],
                port_setting=spec["port_setting"],
            )
            for name, spec in raw["functions"].items()
        }
        triggers = [
            TriggerSpec(t["function"], t["bucket"], t["event_type"], bool(t["retry"]))
            for t in raw["triggers"]
        ]
        schedules = [
            ScheduleSpec(s["function"], s["interval_setting"], s["cron"], dict(s["body"]))
            for s in raw.get("schedules", [])
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the function declaration: {exc!r}") from None
    for t in triggers:
        if t.function not in functions or t.bucket_role not in ("data", "artifacts"):
            raise ConfigError(f"{path}: trigger {t} names an unknown function or bucket role")
    return Declaration(functions, triggers, schedules)


def subscribers(bucket: str, settings: Settings | None = None) -> list[tuple[TriggerSpec, FunctionSpec]]:
    """The triggers (and their functions) that objects finalized in ``bucket`` fire."""
    settings = settings or get_settings()
    declaration = load_declaration()
    return [
        (t, declaration.functions[t.function]) for t in declaration.triggers if t.bucket(settings) == bucket
    ]
