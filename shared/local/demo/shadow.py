"""The demo's shadow chapter (issue 16; docs/feedback.md "Shadow challengers"): one more day
trained under ``PROMOTION_POLICY=shadow`` runs in shadow beside the champion, predict scores it
on impressions served with ids, and their labels, arriving later, decide on live evidence.

The train function is started again with ``SHADOW_SETTINGS`` (``LocalStack.reconfigure``, as
redeploying one function with a changed setting does), so every earlier chapter ran under the
offline policy as before. The step lines say what the live comparison found, with its numbers,
whichever way it went: a shadow that is only "not worse" or is rejected is said to be so.
"""

from __future__ import annotations

from typing import Any

import requests

from shared.contracts import PromotionPolicy, ShadowChange
from shared.display import printable
from shared.local.demo.probe import wait_for

# The train function's settings in this chapter. FEEDBACK_TRAINING off: with it, the labels file
# would also emit its matured rows into incoming/feedback/, and that file would train one more
# challenger into shadow beside the just promoted version, a second story told at once.
SHADOW_SETTINGS = {"PROMOTION_POLICY": PromotionPolicy.SHADOW.value, "FEEDBACK_TRAINING": "false"}
IMPRESSION_DAY = 102  # the synthetic day the shadow chapter's impressions are drawn from
IMPRESSION_PREFIX = "imp-shadow"  # their ids: imp-shadow-0, imp-shadow-1, ...


def wait_scored(url: str, version: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll predict's ``/health`` until it scores ``version`` in shadow; its ``shadow`` section."""

    def scored() -> dict[str, Any] | None:
        try:
            health = requests.get(f"{url}/health", timeout=10).json().get("shadow") or {}
        except (requests.RequestException, ValueError):
            return None
        return dict(health) if health.get("scoring") and health.get("version") == version else None

    return wait_for(scored, f"predict to score {version} in shadow", timeout)


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def agreement_lines(agreement: dict[str, Any]) -> list[str]:
    """One line per source (and ``all``): rows, mean absolute score difference, flipped share."""
    return [
        f"agreement, {printable(source)}: {a['rows']:,} rows, mean |score difference| "
        f"{_number(a['mean_abs_difference'])}, flipped labels "
        f"{'-' if a['flipped_share'] is None else format(a['flipped_share'], '.1%')}"
        for source, a in agreement.items()
    ]


def verdict(numbers: dict[str, Any]) -> str:
    """How the shadow did, in words, from the live numbers: better, the same, or worse (by the
    metric alone; whether that was enough to promote is the policy's decision, said beside it)."""
    shadow, champion = numbers.get("shadow_metric"), numbers.get("champion_metric")
    if shadow is None or champion is None:
        return "not measured"
    if shadow < champion:
        return f"the shadow is better by {champion - shadow:.4f}"
    if shadow == champion:
        return "the shadow and the champion are equal"
    return f"the shadow is worse by {shadow - champion:.4f}"


def live_line(numbers: dict[str, Any]) -> str:
    """The live comparison a decision rested on, on one line."""
    return (
        f"{numbers.get('metric')} shadow {_number(numbers.get('shadow_metric'))} vs champion "
        f"{_number(numbers.get('champion_metric'))} on {numbers.get('rows')} matured live rows "
        f"(SHADOW_MIN_LABELS={numbers.get('min_rows')}): {verdict(numbers)}"
    )


def history_changes(history: list[dict[str, Any]]) -> list[str]:
    """The pointer's changes, oldest first (``started``, ``promoted``, ...)."""
    return [str(record["change"]) for record in history]


def decision_facts(status: dict[str, Any], version: str) -> dict[str, Any]:
    """What ``prodml shadow status --json`` says of ``version``'s run once labels were judged: the
    pointer's last change, its reason and numbers (the live comparison's, when it decided), and
    the history. A run still undecided keeps the live comparison of the status instead."""
    pointer = status["pointer"] or {}
    decided = pointer.get("version") is None and pointer.get("previous") == version
    if decided:
        change, reason, numbers = pointer["change"], pointer.get("reason"), dict(pointer.get("numbers") or {})
    else:
        live = (status.get("comparison") or {}).get("live") or {}
        change, reason = "waiting", live.get("reason")
        numbers = {k: live.get(k) for k in ("rows", "min_rows", "metric", "champion_metric", "shadow_metric")}
    return {
        "change": change,
        "promoted": change == ShadowChange.PROMOTED,
        "reason": reason,
        "numbers": numbers,
        "history": history_changes(status["history"]),
        "current": status["current"],
    }
