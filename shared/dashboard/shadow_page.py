"""The shadow page: which version runs in shadow, how it agrees with the champion, how it compares
on matured live labels, and every change of the shadow pointer (issue 16).

The facts are ``prodml shadow status --json``'s (``shared.cli.shadow_cmd.status``); the comparison
is the one the live report holds (``feedback/live.json``'s ``shadow``, computed on the report's
rows after each labels file), so the page needs no join; `prodml shadow status` computes it anew.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.dashboard import common
from shared.dashboard.common import code, empty, section
from shared.dashboard.formatting import number, seconds
from shared.dashboard.html import Child, Markup, definition_list, document, element, table
from shared.dashboard.registry_pages import version_link
from shared.dashboard.sources import Sources, read_at
from shared.errors import ShadowError

HISTORY_SHOWN = 50  # newest changes of the pointer a page lists


def shadow_page(sources: Sources) -> Markup:
    """The running shadow, its agreement and live comparison, the policy, the history."""
    try:
        status = sources.shadow()
    except ShadowError as exc:  # a malformed models/shadow.json: said, the page still renders
        problem = section("shadow", empty(f"the shadow pointer cannot be read: {exc}"))
        return document("shadow", common.NAV, common.SHADOW, problem)
    body: list[Child] = [section("shadow", *_running(status))]
    if status.get("running"):
        body.append(section("agreement with the champion (at once)", _agreement(status.get("comparison"))))
        body.append(section("on matured live labels", *_live(status)))
    body.append(section("policy", _policy(status["policy"])))
    body.append(section("history of the shadow pointer", _history(status.get("history") or [])))
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("shadow", common.NAV, common.SHADOW, *body)


def _running(status: Mapping[str, Any]) -> list[Child]:
    pointer = status.get("pointer")
    if not status.get("running"):
        last = f" (last change: {pointer['change']} of {pointer.get('previous') or '-'})" if pointer else ""
        return [
            empty(
                f"no shadow running{last}: `prodml shadow start [VERSION]`, or PROMOTION_POLICY=shadow "
                "puts each challenger that passes the gate in shadow"
            )
        ]
    assert pointer is not None
    return [
        definition_list(
            [
                ("in shadow", version_link(pointer.get("version"))),
                ("beside champion", version_link(pointer.get("champion"))),
                ("serving now", version_link(status.get("current"))),
                ("form", str(pointer.get("form") or "-")),
                ("started", str(pointer.get("started") or "-")),
                ("running for", seconds(status.get("age_seconds"))),
                ("started by", str(pointer.get("by") or "-")),
                ("why", str(pointer.get("reason") or "-")),
                ("promote by hand", code("prodml shadow promote")),
                ("stop by hand", code("prodml shadow stop")),
            ]
        )
    ]


def _agreement(comparison: Mapping[str, Any] | None) -> Child:
    if comparison is None:
        return empty(
            "no comparison yet: the live report holds it after the next labels file "
            "(`prodml shadow status` computes it now)"
        )
    rows = [
        [source, number(a["rows"]), number(a["mean_abs_difference"]), number(a["flipped_share"])]
        for source, a in comparison["agreement"].items()
    ]
    return table(("source", "rows", "mean |shadow - champion|", "flipped labels"), rows)


def _live(status: Mapping[str, Any]) -> list[Child]:
    comparison = status.get("comparison")
    if comparison is None:
        problem = status.get("comparison_error")
        return [empty(f"no live comparison: {problem}" if problem else "no live comparison yet")]
    live = comparison["live"]
    facts: list[tuple[Child, Child]] = [
        ("decision", element("strong", None, str(live["decision"]))),
        ("matured rows both scored", number(live["rows"])),
        ("needed (SHADOW_MIN_LABELS)", number(live["min_rows"])),
        (f"champion {live['metric']}", number(live["champion_metric"])),
        (f"shadow {live['metric']}", number(live["shadow_metric"])),
    ]
    facts += [(name, number(value)) for name, value in (live.get("numbers") or {}).items()]
    return [definition_list(facts), element("p", None, str(live["reason"]))]


def _policy(policy: Mapping[str, Any]) -> Child:
    return definition_list(
        [
            ("PROMOTION_POLICY", code(policy["promotion_policy"])),
            ("SHADOW_RATE", number(policy["shadow_rate"])),
            ("SHADOW_MIN_LABELS", number(policy["shadow_min_labels"])),
            ("SHADOW_MAX_AGE", seconds(policy["shadow_max_age_seconds"])),
            ("PROMOTION_TOLERANCE", number(policy["promotion_tolerance"])),
        ]
    )


def _history(records: list[Mapping[str, Any]]) -> Child:
    if not records:
        return empty("no shadow ever ran")
    shown = list(reversed(records))[:HISTORY_SHOWN]
    return table(
        ("generation", "change", "version", "previous", "time", "by", "reason"),
        [
            [
                number(r.get("generation")),
                str(r.get("change")),
                version_link(r.get("version")),
                version_link(r.get("previous")),
                str(r.get("time") or "-"),
                str(r.get("by") or "-"),
                str(r.get("reason") or "-"),
            ]
            for r in shown
        ],
    )
