"""The demo's summary (printed, and summary.json) and report (report.html with embedded PNGs):
the model's quality on each incoming file over time, the versions, table coverage and serving."""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from shared.contracts import CardStatus
from shared.local.demo import shadow
from shared.local.demo.story import Demo


def summary_rows(demo: Demo, models: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines of the summary table."""
    versions = models.get("versions", [])
    decisions = [v.get("decision") for v in versions]
    promoted = decisions.count(CardStatus.PROMOTED)
    rows = [
        ("first model (static)", str(demo.facts.get("first_version", "-"))),
        ("current model", str(models.get("current", "-"))),
        ("versions", f"{len(versions)} ({promoted} promoted, {len(versions) - promoted} not)"),
    ]
    quarantine = demo.facts.get("quarantine")
    if quarantine:
        rows.append(("quarantined", f"corrupt.csv: {quarantine.get('rule')}"))
    rollback = demo.facts.get("rollback")
    if rollback:
        rows.append(("rollback", f"{rollback['from']} -> {rollback['to']} and back"))
    drift = demo.facts.get("drift")
    if drift:
        shown = ", ".join(f"{f} {v:.2f}" for f, v in sorted(drift["psi"].items(), key=lambda kv: -kv[1]))
        rows.append(("drift (PSI)", f"{drift.get('decision')}: {shown}"))
    rows += _loop_rows(demo.facts)
    rows += _shadow_rows(demo.facts)
    advice = demo.facts.get("advice")
    if advice:
        rows.append(("advisor", f"{advice.get('recommendation')} (K={advice.get('k')})"))
    table = demo.facts.get("table")
    if table:
        rows.append(
            ("table", f"{table.get('rows')} rows ({table.get('strategy')}) for {table.get('model_version')}")
        )
    for run in demo.modes:
        rows.append(
            (
                f"serving {run.mode}",
                f"hit rate {run.hit_rate:.1%}, misses {run.miss_rate:.1%}, "
                f"p50 {run.median_ms:.2f} ms, p95 {run.percentile(95):.2f} ms",
            )
        )
    fresh = [x for x in demo.landings if x.total_seconds is not None]
    if fresh:

        def median(values: list[float | None]) -> float:
            return statistics.median([v for v in values if v is not None] or [float("nan")])

        rows.append(
            (
                "freshness (copy -> served)",
                f"median {median([x.total_seconds for x in fresh]):.1f} s: router "
                f"{median([x.router_seconds for x in fresh]):.1f} s, training "
                f"{median([x.training_seconds for x in fresh]):.1f} s, reload "
                f"{median([x.reload_seconds for x in fresh]):.1f} s",
            )
        )
    deadletters = Path(demo.env["LOCAL_DEADLETTER_DIR"])
    count = len(list(deadletters.glob("*.json"))) if deadletters.exists() else 0
    rows.append(("dead-lettered events", f"{count}" + (f" (see {deadletters}/)" if count else "")))
    return rows


def _loop_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """The feedback loop's lines: live quality of the impressions' version, its skew, and the
    version trained from the joined rows."""
    rows: list[tuple[str, str]] = []
    live = facts.get("live")
    if live:
        c, m = live["counts"], live.get("metrics") or {}
        measured = f"; log loss {m['log_loss']:.3f}, accuracy {m['accuracy']:.3f}" if m else ""
        rows.append(
            (
                "live quality",
                f"{live['version']}: served {c['served']}, labelled {c['labelled']}, pending "
                f"{c['pending']}{measured}; {live.get('unmatched_labels', 0)} labels unmatched",
            )
        )
    skew = facts.get("skew")
    if skew:
        flagged = ", ".join(f"{f} {skew['psi'][f]:.2f}" for f in skew["skewed"]) or "none"
        rows.append(("serving skew (PSI)", f"{skew['feature']} shifted -> flagged: {flagged}"))
    feedback = facts.get("feedback")
    if feedback:
        emitted, window = feedback["emission"], feedback["lineage"].get("window") or {}
        rows.append(
            (
                "back into training",
                f"{emitted['rows']} joined rows served {window.get('first')} to {window.get('last')} -> "
                f"{feedback['outcome']} {feedback['version']} (lineage: source "
                f"{feedback['lineage'].get('source')}); emitted again: {feedback['again']['new_rows']} rows",
            )
        )
    return rows


def _shadow_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """The shadow chapter's line: which version ran beside which, its agreement, the live
    comparison's numbers and what the policy decided."""
    run = facts.get("shadow")
    if not run or "change" not in run:
        return []
    agreement = run["agreement"]["all"]
    flipped = "-" if agreement["flipped_share"] is None else f"{agreement['flipped_share']:.1%}"
    difference = agreement["mean_abs_difference"]
    return [
        (
            "shadow challenger",
            f"{run['version']} beside {run['champion']}: agreement on {agreement['rows']} rows, mean "
            f"|difference| {'-' if difference is None else f'{difference:.4f}'}, flipped {flipped}; "
            f"{shadow.live_line(run['numbers'])} -> {run['change']} "
            f"({' -> '.join(run['history'])}); serving {run['current']}",
        )
    ]


def render_table(rows: list[tuple[str, str]]) -> str:
    """The summary as aligned text."""
    width = max(len(what) for what, _ in rows)
    return "\n".join(f"{what:<{width}}  {value}" for what, value in rows)


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def figures(demo: Demo, models: dict[str, Any], monitor: list[dict[str, Any]]) -> dict[str, str]:
    """Title -> base64 PNG of each plot."""
    # About 60 lines on purpose: one plot after another, each a few matplotlib calls; split up,
    # the figures would lose the order the report shows them in.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    # 1. quality of the live model on each incoming file, before training on it (test-then-train)
    checked = [r for r in monitor if r.get("metrics")]
    if checked:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        names = [Path(r["object"]).name for r in checked]
        ax.plot(names, [r["metrics"].get("log_loss") for r in checked], "o-", label="log loss")
        if all("roc_auc" in r["metrics"] for r in checked):
            ax.plot(names, [r["metrics"]["roc_auc"] for r in checked], "s-", label="ROC AUC")
        for i, r in enumerate(checked):
            if r.get("drifted"):
                ax.axvspan(i - 0.4, i + 0.4, color="orange", alpha=0.25, label="input drift")
        ax.set_title("live model's quality on each new file, before training on it")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        out["Model quality over time"] = _png(fig)
        plt.close(fig)
    # 2. versions: held-out metric of each, promoted or not, the current one marked
    versions = models.get("versions", [])
    if versions:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for i, v in enumerate(versions):
            color = "tab:green" if v.get("decision") == CardStatus.PROMOTED else "tab:red"
            ax.bar(i, v.get("challenger") or 0, color=color)
            if v.get("current"):
                ax.annotate("current", (i, v.get("challenger") or 0), ha="center", va="bottom")
        ax.set_xticks(range(len(versions)), [v["version"][-6:] for v in versions], rotation=30)
        ax.set_ylabel(versions[0].get("primary_metric") or "metric")
        ax.set_title("versions (green promoted, red rejected)")
        out["Model versions"] = _png(fig)
        plt.close(fig)
    # 3. serving: table hit rate and latency per mode
    if demo.modes:
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
        modes = [m.mode for m in demo.modes]
        bottom = [0.0] * len(modes)
        for source, color in (("table", "tab:blue"), ("model", "tab:orange"), ("miss", "tab:gray")):
            share = [m.sources.get(source, 0) / m.instances if m.instances else 0.0 for m in demo.modes]
            left.bar(modes, share, bottom=bottom, color=color, label=source)
            bottom = [b + v for b, v in zip(bottom, share, strict=True)]
        left.set_ylim(0, 1)
        left.set_title("who answered the held-out traffic")
        left.legend()
        right.bar(modes, [m.median_ms for m in demo.modes], label="p50")
        right.plot(modes, [m.percentile(95) for m in demo.modes], "kv", label="p95")
        right.set_ylabel("ms per request")
        right.set_title("latency per mode")
        right.legend()
        out["Serving modes"] = _png(fig)
        plt.close(fig)
    advice_png = demo.facts.get("advice_png")
    if advice_png and Path(advice_png).exists():
        out["Advisor: coverage by table size"] = base64.b64encode(Path(advice_png).read_bytes()).decode()
    return out


def write_report(demo: Demo, models: dict[str, Any], monitor: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write summary.json and report.html into the demo's output folder; return their paths."""
    # About 60 lines on purpose: the summary's fields and the page's sections, in the order they
    # appear in the files; one linear template reads best whole.
    rows = summary_rows(demo, models)
    summary = {
        "summary": dict(rows),
        "steps": demo.steps,
        "facts": demo.facts,
        "freshness": [
            {
                "file": x.name,
                "outcome": x.marker.get("outcome"),
                "router_seconds": x.router_seconds,
                "training_seconds": x.training_seconds,
                "reload_seconds": x.reload_seconds,
                "total_seconds": x.total_seconds,
            }
            for x in demo.landings
        ],
        "serving": [
            {
                "mode": m.mode,
                "requests": m.requests,
                "hit_rate": m.hit_rate,
                "miss_rate": m.miss_rate,
                "p50_ms": m.median_ms,
                "p95_ms": m.percentile(95),
            }
            for m in demo.modes
        ],
        "models": models,
    }
    summary_path = demo.out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    images = figures(demo, models, monitor)
    steps = "".join(
        f"<tr><td>{s['n']}</td><td>{html.escape(s['title'])}</td><td>{html.escape(str(s['detail']))}"
        + "".join(f"<br><small>{html.escape(str(m))}</small>" for m in s.get("more", []))
        + f"</td><td>{s.get('seconds', 0):.1f}</td></tr>"
        for s in demo.steps
    )
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    pictures = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        for title, data in images.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prodml demo report</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}td,th{{padding:2px 8px;
text-align:left;vertical-align:top}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}
img{{max-width:100%}}</style></head><body>
<h1>prodml demo</h1>
<h2>Summary</h2><table>{facts}</table>
{pictures}
<h2>Steps</h2><table><tr><th>#</th><th>step</th><th>what happened</th><th>s</th></tr>{steps}</table>
<p>Buckets, logs and dead letters are under {html.escape(str(demo.state))}.</p>
</body></html>
"""
    report_path = demo.out / "report.html"
    report_path.write_text(page)
    return summary_path, report_path
