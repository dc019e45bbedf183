"""The live page (the feedback loop's report) and the table and traffic page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.dashboard import common
from shared.dashboard.common import empty, section
from shared.dashboard.formatting import number
from shared.dashboard.html import Child, Markup, definition_list, document, element, table
from shared.dashboard.registry_pages import version_link
from shared.dashboard.sources import Sources, read_at
from shared.dashboard.svg import Series, bar_chart, coverage_curve, line_chart

COUNTS = ("served", "labelled", "defaulted", "pending", "matured")
TOP_KEYS = 20


def _metric_names(quality: list[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for q in quality:
        for name in q.get("metrics") or {}:
            if name not in names:
                names.append(name)
    return names


def quality_table(version: Mapping[str, Any]) -> Markup:
    """Counts and metrics overall, by source and by day, one row each."""
    rows = [("all", version), *((f"source {s}", q) for s, q in version.get("by_source", {}).items())]
    rows += [(f"day {d['day']}", d) for d in version.get("by_day", [])]
    names = _metric_names([q for _, q in rows])
    return table(
        ("", *COUNTS, *names),
        [
            [
                what,
                *(number(q["counts"].get(c)) for c in COUNTS),
                *(number((q.get("metrics") or {}).get(n)) for n in names),
            ]
            for what, q in rows
        ],
    )


def _by_day_chart(version: Mapping[str, Any]) -> list[Child]:
    days = version.get("by_day") or []
    if not days:
        return []
    labels = [str(d["day"]) for d in days]
    names = _metric_names(days)
    charts: list[Child] = [
        bar_chart(
            f"served per day, version {version['version']}",
            labels,
            [float(d["counts"]["served"]) for d in days],
            "day (UTC)",
            "served",
        ),
    ]
    if names:
        series = [Series(n, [(d.get("metrics") or {}).get(n) for d in days]) for n in names]
        charts.append(
            line_chart(
                f"live metrics per day, version {version['version']}", labels, series, "day (UTC)", "metric"
            )
        )
    return charts


def _skew(skew: Mapping[str, Any]) -> Child:
    if not skew.get("reference"):
        return empty(f"no training reference to compare with: {skew.get('note') or 'its card has none'}")
    return table(
        ("feature", "psi", "skewed"),
        [
            [name, number(f.get("psi")), "SKEWED" if f.get("skewed") else "-"]
            for name, f in skew["features"].items()
        ],
    )


def live(sources: Sources) -> Markup:
    """Per version and source: counts and metrics, over days (SVG); skew per feature."""
    report = sources.live()
    if report is None:
        body: list[Child] = [
            empty(
                "no live report yet: no labels file has arrived (labels/), so nothing is "
                "joined to the prediction log; `prodml live` computes it on demand"
            )
        ]
    else:
        log, labels = report.get("log", {}), report.get("labels", {})
        body = [
            definition_list(
                [
                    ("generated at", str(report.get("generated_at") or "-")),
                    ("log rows", number(log.get("rows"))),
                    ("log objects", number(log.get("objects"))),
                    ("label rows", number(labels.get("rows"))),
                    ("labels matched", number(labels.get("matched"))),
                    ("labels unmatched", number(labels.get("unmatched"))),
                ]
            )
        ]
        versions = report.get("versions") or []
        if not versions:
            body.append(
                empty("no predictions logged yet: the prediction log is empty (PREDICTION_LOG_RATE=0?)")
            )
        for version in versions:
            body.append(
                section(
                    f"version {version['version']}",
                    element("p", None, version_link(version["version"])),
                    quality_table(version),
                    *_by_day_chart(version),
                    element("h3", None, "serving skew (PSI against the training data)"),
                    _skew(version.get("skew") or {}),
                )
            )
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("live", common.NAV, common.LIVE, *body)


def top_keys(counts: Mapping[str, int], n: int = TOP_KEYS) -> list[tuple[str, int, float]]:
    """The ``n`` most requested keys (as the traffic files name them), count and share."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [(key, count, count / total if total else 0.0) for key, count in ranked]


def _key_text(key: str) -> str:
    try:
        return ", ".join(str(v) for v in json.loads(key))
    except (ValueError, TypeError):
        return key


def table_page(sources: Sources) -> Markup:
    """The pointer and its meta, the advisor's facts, the coverage curve and the top keys."""
    pointer = sources.pointer()
    advice = sources.advice()
    counts = sources.traffic()
    body: list[Child] = []
    if pointer is None:
        body.append(
            section(
                "table", empty("no table yet: the build runs after each promotion, or `prodml table build`")
            )
        )
    else:
        keys = ("blob", "version", "model_version", "strategy", "built_at", "rows", "k", "expected_hit_rate")
        body.append(section("table", definition_list([(k, number(pointer.get(k))) for k in keys])))
    if advice is None:
        body.append(section("advisor", empty("no schema.json yet: the advisor needs the key space")))
    else:
        top = advice.get("top_share") or {}
        facts = [
            ("recommendation", str(advice.get("recommendation"))),
            ("K", number(advice.get("k"))),
            ("expected hit rate", number(advice.get("expected_hit_rate"))),
            ("cardinality", number(advice.get("cardinality"))),
            ("requests", number(advice.get("requests"))),
            ("invalid requests", number(advice.get("invalid_requests"))),
            ("distinct keys seen", number(advice.get("distinct_keys_seen"))),
            ("top 1% share", number(top.get("1%"))),
            ("top 10% share", number(top.get("10%"))),
        ]
        curve = advice.get("held_out") or []
        body.append(
            section(
                "advisor (peakedness)",
                definition_list(facts),
                element("p", None, str(advice.get("reason") or "")),
                coverage_curve("held-out coverage of the top K keys", curve)
                if curve
                else empty("no traffic counted yet: predict writes key counts to traffic/"),
            )
        )
    ranked = top_keys(counts)
    body.append(
        section(
            "top keys (traffic/)",
            table(("key", "requests", "share"), [[_key_text(k), number(c), number(s)] for k, c, s in ranked])
            if ranked
            else empty("no traffic counted yet: predict writes key counts to traffic/"),
        )
    )
    body.append(common.read_note(read_at(), sources.settings.dashboard_cache_seconds))
    return document("table and traffic", common.NAV, common.TABLE, *body)
