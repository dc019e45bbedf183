"""The overview, the versions timeline and one version's card (docs/design.md section 5, dashboard)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.dashboard import common
from shared.dashboard.common import code, empty, section
from shared.dashboard.formatting import number, seconds
from shared.dashboard.html import Child, Markup, definition_list, document, element, link, table
from shared.dashboard.sources import Sources, read_at
from shared.errors import ShadowError

NO_MODEL = "no model yet: train one with `prodml train FILE`"


def rollback_command(version: str) -> str:
    """The exact command that makes ``version`` current again (the dashboard itself writes nothing)."""
    return f"prodml rollback {version}"


def version_link(version: str | None) -> Child:
    """A link to a version's card, or ``-``."""
    return link(f"{common.VERSIONS}/{version}", version) if version else "-"


# --- overview ------------------------------------------------------------------------------


def overview(sources: Sources) -> Markup:
    """The serving model and its age, mode, table, live headline and warnings."""
    ages = sources.ages()
    models = sources.models()
    live = sources.live()
    body = [
        section("serving model", *_serving(sources, ages, models)),
        section("table", *_table(sources, ages)),
        section("live quality", *_live_headline(live, (ages.get("model") or {}).get("version"))),
        section("warnings", common.warnings_list(overview_warnings(sources, ages, live))),
        common.read_note(read_at(), sources.settings.dashboard_cache_seconds),
    ]
    return document("overview", common.NAV, common.OVERVIEW, *body)


def _serving(sources: Sources, ages: Mapping[str, Any], models: Mapping[str, Any]) -> list[Child]:
    model = ages.get("model")
    mode = ("mode (SERVING_MODE)", code(sources.settings.serving_mode))
    if model is None:
        return [empty(NO_MODEL), definition_list([mode, ("versions", number(len(models["versions"])))])]
    return [
        definition_list(
            [
                ("version", version_link(model.get("version"))),
                ("age", seconds(model.get("age_seconds"))),
                ("generation", number(model.get("generation"))),
                mode,
                ("versions in the registry", number(len(models["versions"]))),
            ]
        )
    ]


def _table(sources: Sources, ages: Mapping[str, Any]) -> list[Child]:
    pointer = sources.pointer()
    if pointer is None:
        return [empty("no table yet: the build runs after each promotion, or `prodml table build`")]
    cardinality = sources.cardinality()
    rows = pointer.get("rows")
    coverage = rows / cardinality if isinstance(rows, int) and cardinality else None
    table_age = (ages.get("table") or {}).get("age_seconds")
    return [
        definition_list(
            [
                ("object", code(pointer.get("blob"))),
                ("built from model", version_link(pointer.get("model_version"))),
                ("age", seconds(table_age)),
                ("rows", number(rows)),
                ("coverage of the key space", number(coverage)),
                ("strategy", str(pointer.get("strategy") or "-")),
            ]
        ),
        link(common.TABLE, "table and traffic"),
    ]


def _live_headline(live: Mapping[str, Any] | None, current: str | None) -> list[Child]:
    if live is None:
        return [
            empty("no live report yet: it is written after each labels file (labels/), or run `prodml live`")
        ]
    versions = {v["version"]: v for v in live.get("versions", [])}
    chosen = versions.get(current or "") or (live.get("versions") or [None])[-1]
    if chosen is None:
        return [empty("no predictions logged yet: the live report has no version that served")]
    counts, metrics = chosen["counts"], chosen.get("metrics") or {}
    items: list[tuple[Child, Child]] = [("version", version_link(chosen["version"]))]
    items += [(k, number(counts.get(k))) for k in ("served", "labelled", "defaulted", "pending")]
    items += [(k, number(v)) for k, v in metrics.items()]
    return [definition_list(items), link(common.LIVE, "live quality")]


def overview_warnings(sources: Sources, ages: Mapping[str, Any], live: Mapping[str, Any] | None) -> list[str]:
    """The ages' warnings (as ``/health``), the last file's drift, the serving skew, the shadow."""
    messages = [str(w.get("message")) for w in ages.get("warnings", [])]
    records = [r for r in sources.monitoring() if r.get("metrics") is not None or r.get("psi")]
    if records and records[-1].get("drifted"):
        last = records[-1]
        drifted = ", ".join(str(f) for f in last["drifted"])
        messages.append(f"drift: {last.get('object')}@{last.get('generation')} drifted on {drifted}")
    current = (ages.get("model") or {}).get("version")
    for version in (live or {}).get("versions", []):
        if version.get("version") != current:
            continue
        skewed = [
            name for name, f in (version.get("skew") or {}).get("features", {}).items() if f.get("skewed")
        ]
        if skewed:
            messages.append(f"serving skew: version {current} serves skewed {', '.join(skewed)}")
    try:
        running = shadow_warning(sources.shadow())
    except ShadowError as exc:
        running = f"shadow: {exc}"
    if running is not None:
        messages.append(running)
    return messages


# --- versions ------------------------------------------------------------------------------

VERSION_HEADER = (
    "version",
    "created",
    "current",
    "strategy",
    "files",
    "rows",
    "metric",
    "challenger",
    "champion",
    "decision",
    "reason",
    "compiled",
    "max abs difference",
    "parent",
    "rollback",
)


def version_row(row: Mapping[str, Any]) -> list[Child]:
    """One version of ``prodml models --json`` as a table row."""
    return [
        version_link(row["version"]),
        str(row.get("created") or "-"),
        "current" if row.get("current") else "",
        str(row.get("strategy") or "-"),
        number(row.get("files")),
        number(row.get("training_rows")),
        str(row.get("primary_metric") or "-"),
        number(row.get("challenger")),
        number(row.get("champion")),
        str(row.get("decision") or "-"),
        str(row.get("reason") or ""),
        str(row.get("compiled") or "-"),
        number(row.get("compiled_max_abs_difference"), 10),
        version_link(row.get("parent")),
        code(rollback_command(row["version"])),
    ]


def versions(sources: Sources, page_number: int) -> Markup:
    """The registry newest first, ``PAGE_SIZE`` a page."""
    listing = sources.models()
    newest_first: Sequence[Mapping[str, Any]] = list(reversed(listing["versions"]))
    if not newest_first:
        body: list[Child] = [empty(NO_MODEL)]
    else:
        rows, page = common.paginate(newest_first, page_number)
        shown = [version_row(r) for r in rows]
        body = [
            element("p", None, "current: ", version_link(listing.get("current"))),
            *common.paged_table(common.VERSIONS, page, VERSION_HEADER, shown, "no versions on this page"),
        ]
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("versions", common.NAV, common.VERSIONS, *body)


def card(sources: Sources, version: str) -> Markup:
    """One version's card: what it is, its gate, compiled form, lineage and checks."""
    found = sources.card(version)
    decision = found.decision
    metrics = found.metrics or {}
    names = sorted({*(metrics.get("challenger") or {}), *(metrics.get("champion") or {})})
    gate = table(
        ("metric", "challenger", "champion"),
        [
            [
                n,
                number((metrics.get("challenger") or {}).get(n)),
                number((metrics.get("champion") or {}).get(n)),
            ]
            for n in names
        ],
    )
    compiled = found.compiled.to_dict() if found.compiled is not None else None
    lineage = table(
        ("file", "generation", "source", "rows"),
        [
            [
                str(e.get("name", e.get("object", "-"))),
                number(e.get("generation")),
                str(e.get("source") or "data"),
                number(e.get("rows")),
            ]
            for e in found.lineage
        ],
    )
    body = [
        definition_list(
            [
                ("version", found.version),
                ("created", found.created or "-"),
                ("by", found.by or "-"),
                ("parent", version_link(found.parent)),
                ("task", found.task or "-"),
                ("strategy", found.strategy or "-"),
                ("fallback reason", found.fallback_reason or "-"),
                ("estimator", found.estimator or "-"),
                ("training rows", number(found.training_rows)),
                ("decision", decision.status if decision else "-"),
                ("reason", decision.reason if decision else "-"),
                ("decided", decision.time if decision else "-"),
                ("rollback", code(rollback_command(found.version))),
            ]
        ),
        section(
            f"gate ({metrics.get('primary') or 'no primary metric'})", gate if names else empty("no metrics")
        ),
        section("compiled form", _compiled(compiled)),
        section("lineage", lineage if found.lineage else empty("no data files (a card written by hand?)")),
        section("data checks", _checks(found.data_checks)),
    ]
    return document(f"version {found.version}", common.NAV, common.VERSIONS, *body)


def _compiled(compiled: Mapping[str, Any] | None) -> Markup:
    if compiled is None:
        return empty("never compiled: a version written before compiled serving")
    keys = (
        "status",
        "reason",
        "precision",
        "max_abs_difference",
        "tolerance",
        "rows_checked",
        "batch_invariant",
        "onnx_bytes",
        "blob",
    )
    return definition_list(
        [(k, number(compiled.get(k), 10) if k != "reason" else str(compiled.get(k) or "-")) for k in keys]
    )


def _checks(checks: Mapping[str, Any] | None) -> Markup:
    if not checks:
        return empty("none recorded (static training, or a version from before these checks)")
    warnings = [str(w) for w in checks.get("warnings") or []]
    return element(
        "div",
        None,
        definition_list(
            [
                ("object", str(checks.get("object") or "-")),
                ("served share", number(checks.get("served_share"))),
            ]
        ),
        common.warnings_list(warnings),
        element("pre", None, json.dumps(checks.get("leakage"), indent=1, default=str)[:4000]),
    )


def shadow_warning(status: Mapping[str, Any]) -> str | None:
    """The overview's line about a running shadow: what runs beside what, and where it stands."""
    if not status.get("running"):
        return None
    live = (status.get("comparison") or {}).get("live") or {}
    stands = str(live.get("reason") or "no live comparison yet")
    return f"shadow: {status['running']} runs beside {status.get('current')} ({stands})"
