"""``prodml shadow start|status|promote|stop``: the shadow challenger (issue 16; docs/feedback.md)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from shared.config import Settings, get_settings
from shared.contracts import CardStatus, ShadowChange
from shared.display import printable, render_table
from shared.errors import ShadowError

if TYPE_CHECKING:
    from shared.storage import Bucket
    from shared.training.card import ModelCard

NOT_STARTABLE = (CardStatus.REJECTED, CardStatus.SUPERSEDED)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``prodml shadow``."""
    parser = subparsers.add_parser(
        "shadow",
        help="the shadow challenger: start, status, promote, stop",
        description=(
            "One version at a time runs in shadow beside the serving model (models/shadow.json): "
            "predict scores it on the same requests and logs its score beside the answer, which is "
            "always the champion's. Under PROMOTION_POLICY=shadow the train function starts every "
            "challenger that passes the offline gate in shadow, and promotes it once it is not "
            "worse on SHADOW_MIN_LABELS matured live rows (stops it when worse, or after "
            "SHADOW_MAX_AGE). Every change is recorded under registry/shadow/."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser(
        "start",
        help="run a version in shadow (default: the most recent challenger)",
        description=(
            "Put VERSION in shadow beside the current model, replacing the running shadow if any. "
            "Without VERSION: the most recent challenger, the newest version that is not the "
            "current model and was not rejected or superseded."
        ),
    )
    start.add_argument("version", nargs="?", help="the version to run in shadow (see `prodml models`)")
    start.add_argument("--json", action="store_true", help="print the pointer as JSON")
    start.set_defaults(func=run_start)
    status = actions.add_parser(
        "status",
        help="the running shadow, its age, the policy, the live comparison, the history",
        description="The fields of --json are in docs/feedback.md (Shadow challengers).",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=run_status)
    promote = actions.add_parser(
        "promote",
        help="make the shadow the serving model now, whatever the live numbers say",
        description="The same compare-and-swap as every promotion; then the shadow run ends, promoted.",
    )
    promote.add_argument("--json", action="store_true", help="print the pointer as JSON")
    promote.set_defaults(func=run_promote)
    stop = actions.add_parser(
        "stop",
        help="end the shadow run; the version is neither promoted nor rejected",
        description=(
            "End the shadow run by hand; its card goes back to pending, saying it was stopped. A "
            "models/shadow.json that is not a pointer is replaced by an ended one saying so."
        ),
    )
    stop.add_argument("--reason", default="stopped by hand", help="why, recorded in the history")
    stop.add_argument("--json", action="store_true", help="print the pointer as JSON")
    stop.set_defaults(func=run_stop)


def run_start(args: argparse.Namespace) -> int:
    """Start the version asked for (or the most recent challenger) in shadow."""
    from shared.storage import artifacts_bucket
    from shared.training import shadow_policy

    artifacts = artifacts_bucket(get_settings())
    current = _current_version(artifacts)
    card = _card_to_start(artifacts, args.version, current)
    pointer = shadow_policy.start(
        artifacts, card, champion=current, by="prodml shadow start", reason="started by hand"
    )
    return _print_pointer(pointer.to_dict() | {"generation": pointer.generation}, args.json)


def _card_to_start(artifacts: Bucket, version: str | None, current: str | None) -> ModelCard:
    """The card of ``version``, or of the most recent challenger; ``ShadowError`` when none fits."""
    from shared.errors import NotFound
    from shared.training import registry

    if version is not None:
        if version == current:
            raise ShadowError(f"version {version} is the current model: nothing to shadow it against")
        try:
            return registry.read_card(artifacts, version)
        except NotFound:
            raise ShadowError(f"no model version {version!r} (see `prodml models`)") from None
    candidates = [
        c for c in registry.list_cards(artifacts) if c.version != current and c.status not in NOT_STARTABLE
    ]
    if not candidates:
        raise ShadowError("no challenger to run in shadow: every version is current, rejected or superseded")
    return candidates[-1]


def _current_version(artifacts: Bucket) -> str | None:
    """The serving model's version (None: none yet)."""
    from shared.training import shadow_policy

    return shadow_policy.current_model(artifacts)[0]


def run_status(args: argparse.Namespace) -> int:
    """Print the pointer, the policy, the live comparison and the history."""
    settings = get_settings()
    body = status(settings)
    print(json.dumps(body, indent=2) if args.json else render_status(body))
    return 0


def status(
    settings: Settings,
    artifacts: Bucket | None = None,
    known: tuple[dict[str, Any] | None, str | None] | None = None,
) -> dict[str, Any]:
    """What ``prodml shadow status --json`` prints (docs/feedback.md).

    ``known``: the comparison and why there is none, when already computed (the dashboard takes
    them from the live report, which holds no predictions bucket's rows); else computed now."""
    from shared.storage import artifacts_bucket
    from shared.training import shadow

    artifacts = artifacts if artifacts is not None else artifacts_bucket(settings)
    pointer = shadow.read_pointer(artifacts)
    comparison, problem = None, None
    if pointer is not None and pointer.running:
        comparison, problem = known if known is not None else _compare_now(settings, artifacts, pointer)
        if comparison is not None and comparison.get("version") != pointer.version:
            comparison, problem = None, "the live report was written before this shadow started"
    return {
        "pointer": None if pointer is None else pointer.to_dict() | {"generation": pointer.generation},
        "running": pointer.version if pointer is not None else None,
        "age_seconds": shadow.age_seconds(pointer) if pointer is not None else None,
        "current": _current_version(artifacts),
        "policy": {
            "promotion_policy": settings.promotion_policy,
            "shadow_rate": settings.shadow_rate,
            "shadow_min_labels": settings.shadow_min_labels,
            "shadow_max_age_seconds": settings.shadow_max_age,
            "promotion_tolerance": settings.promotion_tolerance,
        },
        "comparison": comparison,
        "comparison_error": problem,
        "history": shadow.list_history(artifacts),
    }


def _compare_now(
    settings: Settings, artifacts: Bucket, pointer: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """The running shadow's comparison from the log and the labels now; or None and why not."""
    from shared.errors import ProdMLError
    from shared.feedback.shadow_compare import compare
    from shared.storage import predictions_bucket

    try:
        found = compare(settings, pointer, artifacts=artifacts, predictions=predictions_bucket(settings))
    except ProdMLError as exc:  # the join over JOIN_MAX_ROWS, no schema: said, not fatal
        return None, str(exc)
    return found.to_dict(), None


def run_promote(args: argparse.Namespace) -> int:
    """Promote the running shadow now, by hand."""
    from shared.storage import artifacts_bucket
    from shared.training import shadow, shadow_policy

    artifacts = artifacts_bucket(get_settings())
    pointer = _running(shadow.read_pointer(artifacts))
    reason = "promoted by hand (prodml shadow promote), whatever the live numbers"
    ended = shadow_policy.promote(artifacts, pointer, by="prodml shadow promote", reason=reason)
    return _print_pointer(ended.to_dict() | {"generation": ended.generation}, args.json)


def run_stop(args: argparse.Namespace) -> int:
    """Stop the running shadow by hand; a malformed pointer is repaired (replaced by an ended one)."""
    from shared.storage import artifacts_bucket
    from shared.training import shadow, shadow_policy

    artifacts = artifacts_bucket(get_settings())
    state = shadow.read_state(artifacts)
    if state.problem is not None:
        ended = shadow_policy.end_malformed(artifacts, state, by="prodml shadow stop", reason=args.reason)
        return _print_pointer(ended.to_dict() | {"generation": ended.generation}, args.json)
    pointer = _running(state.pointer)
    ended = shadow_policy.stop(
        artifacts, pointer, ShadowChange.STOPPED, by="prodml shadow stop", reason=args.reason
    )
    return _print_pointer(ended.to_dict() | {"generation": ended.generation}, args.json)


def _running(pointer: Any) -> Any:
    if pointer is None or not pointer.running:
        raise ShadowError("no version runs in shadow (see `prodml shadow status`)")
    return pointer


def _print_pointer(pointer: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(pointer, indent=2))
        return 0
    print(_change_line(pointer))
    return 0


def _change_line(record: dict[str, Any]) -> str:
    """One pointer change as a sentence, every value from the bucket escaped."""
    change = record["change"]
    if change in (ShadowChange.STARTED, ShadowChange.REPLACED):
        replaced = f", replacing {printable(record['previous'])}" if record.get("previous") else ""
        champion = printable(record.get("champion") or "no model")
        return f"{printable(record['version'])} in shadow beside {champion}{replaced}"
    return (
        f"{printable(record.get('previous') or 'no shadow')}: {printable(change)} "
        f"({printable(record.get('reason'))})"
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else printable(value)


def render_status(body: dict[str, Any]) -> str:
    """The status as lines and tables, every value from the bucket escaped."""
    policy = body["policy"]
    lines = [
        f"policy {policy['promotion_policy']}: SHADOW_RATE {policy['shadow_rate']:g}, SHADOW_MIN_LABELS "
        f"{policy['shadow_min_labels']}, SHADOW_MAX_AGE {policy['shadow_max_age_seconds']:g} s, "
        f"PROMOTION_TOLERANCE {policy['promotion_tolerance']:g}",
        f"serving model: {printable(body['current'] or 'none')}",
    ]
    pointer = body["pointer"]
    if pointer is None or pointer["version"] is None:
        lines.append("no version runs in shadow")
    else:
        age = body["age_seconds"]
        lines.append(
            f"in shadow: {printable(pointer['version'])} beside {printable(pointer['champion'] or 'none')}, "
            f"form {printable(pointer['form'])}, {'?' if age is None else f'{age:.0f}'} s old"
        )
    lines += _comparison_lines(body["comparison"], body["comparison_error"])
    if body["history"]:
        table = [("generation", "time", "change", "version", "by", "reason")]
        table += [
            (
                r["generation"],
                r["time"],
                r["change"],
                r["version"] or r["previous"] or "-",
                r["by"],
                r["reason"],
            )
            for r in body["history"]
        ]
        lines += ["", "history:", render_table(table)]
    return "\n".join(lines)


def _comparison_lines(comparison: dict[str, Any] | None, problem: str | None) -> list[str]:
    if problem is not None:
        return [f"no comparison: {printable(problem)}"]
    if comparison is None:
        return []
    table = [("source", "rows", "mean |difference|", "flipped share")]
    table += [
        (source, a["rows"], _fmt(a["mean_abs_difference"]), _fmt(a["flipped_share"]))
        for source, a in comparison["agreement"].items()
    ]
    live = comparison["live"]
    return [
        "agreement with the champion's answers:",
        render_table(table),
        f"live ({live['metric']}, {live['rows']} matured rows, at least {live['min_rows']}): champion "
        f"{_fmt(live['champion_metric'])}, shadow {_fmt(live['shadow_metric'])}; {live['decision']}: "
        f"{printable(live['reason'])}",
    ]
