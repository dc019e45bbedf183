"""The demo's feedback-loop chapter (docs/feedback.md): impressions served with ids, a stream
with one feature shifted, their outcomes arriving later as a labels file, and (FEEDBACK_TRAINING)
the matured joined rows trained into a new version.

The impressions are rows of a synthetic day (``shared.local.synth.day_frame``) that no model was
trained on: predict sees their features, and their ``converted`` column is the outcome that a
labels file reports later, as an ad server's conversion feed would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from shared.contracts import EMITTED_PREFIX
from shared.errors import DemoError
from shared.local.demo.probe import wait_for
from shared.local.synth import LABEL, day_frame
from shared.schema import Schema
from shared.storage import Bucket
from shared.training.card import ModelCard

BATCH = 50  # instances per request
SHIFTED_FEATURE = "bid"  # the skewed stream's one shifted feature: bids 2.5 times higher
SHIFT_FACTOR = 2.5
UNKNOWN_IDS = ("imp-from-another-system-1", "imp-from-another-system-2")  # labelled, never served


@dataclass(frozen=True)
class Impressions:
    """Instances to serve, one id each, and the outcome each will turn out to have."""

    ids: list[str]
    instances: list[dict[str, Any]]
    outcomes: list[int]


def impressions(seed: int, day: int, rows: int, prefix: str, drift: bool = False) -> Impressions:
    """``rows`` rows of synthetic day ``day`` (``drift``: drawn from the drifted population) as
    request instances with ids ``<prefix>-<n>``."""
    frame = day_frame(seed, day, rows, drift)
    outcomes = [int(v) for v in frame.pop(LABEL)]
    instances = [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    return Impressions([f"{prefix}-{n}" for n in range(rows)], instances, outcomes)


def write_day(folder: Path, seed: int, day: int, rows: int, drift: bool = False) -> Path:
    """Write synthetic day ``day`` as ``day-<dd>.csv`` in ``folder`` (a day file like the others;
    ``drift``: drawn from the drifted population, as the drift day is)."""
    path = folder / f"day-{day:02d}.csv"
    day_frame(seed, day, rows, drift).to_csv(path, index=False)
    return path


def shifted(served: Impressions, schema: Schema) -> Impressions:
    """The same impressions with ``SHIFTED_FEATURE`` times ``SHIFT_FACTOR``, kept in the schema's
    range (predict refuses a value outside it), every other feature as it was."""
    feature = schema.feature(SHIFTED_FEATURE)
    top = float(feature.max) if feature.max is not None else float("inf")
    moved = [
        {**i, SHIFTED_FEATURE: round(min(top, i[SHIFTED_FEATURE] * SHIFT_FACTOR), 2)}
        for i in served.instances
    ]
    return Impressions(served.ids, moved, served.outcomes)


def serve_with_ids(url: str, served: Impressions) -> list[dict[str, Any]]:
    """POST the impressions ``BATCH`` at a time with their ids; every answered prediction, each
    with the version that answered it. ``DemoError`` on a non-200 answer."""
    session = requests.Session()
    answers: list[dict[str, Any]] = []
    for start in range(0, len(served.ids), BATCH):
        body = {
            "instances": served.instances[start : start + BATCH],
            "ids": served.ids[start : start + BATCH],
        }
        response = session.post(url, json=body, timeout=30)
        if response.status_code != 200:
            raise DemoError(f"predict answered {response.status_code}: {response.text[:300]}")
        answer = response.json()
        answers += [{**p, "model_version": answer["model_version"]} for p in answer["predictions"]]
    return answers


def wait_log_flushed(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll predict's ``/health`` until no logged prediction waits to be written; its log state."""

    def flushed() -> dict[str, Any] | None:
        try:
            state = requests.get(f"{url}/health", timeout=10).json().get("prediction_log")
        except (requests.RequestException, ValueError):
            return None
        if state is None:
            raise DemoError("predict has no prediction log (PREDICTION_LOG_RATE=0?)")
        return dict(state) if state["waiting"] == 0 else None

    return wait_for(flushed, "predict to write its prediction log", timeout)


def write_labels(path: Path, served: Impressions, share: float, unknown: Sequence[str]) -> int:
    """A labels CSV of the outcomes of the first ``share`` of the impressions (the rest are still
    unknown) and of ``unknown`` ids predict never served; the number of rows written."""
    known = int(len(served.ids) * share)
    lines = ["id,converted"]
    lines += [f"{i},{o}" for i, o in zip(served.ids[:known], served.outcomes[:known], strict=True)]
    lines += [f"{i},1" for i in unknown]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def version_facts(report: dict[str, Any], version: str) -> dict[str, Any]:
    """What the live report says of one version: counts, metrics, calibration, per source, skew."""
    entry = next((v for v in report["versions"] if v["version"] == version), None)
    if entry is None:
        raise DemoError(f"`prodml live` shows no predictions of version {version}")
    skew = entry["skew"]
    return {
        "version": version,
        "counts": entry["counts"],
        "metrics": entry["metrics"],
        "calibration": entry["calibration"],
        "by_source": {
            s: {"counts": q["counts"], "metrics": q["metrics"]} for s, q in entry["by_source"].items()
        },
        "skewed": list(skew["skewed"]),
        "psi": {name: f["psi"] for name, f in skew["features"].items()},
    }


def quality_line(what: str, quality: dict[str, Any]) -> str:
    """``what``: served, labelled, pending, and the metrics of the matured rows, on one line."""
    c, m = quality["counts"], quality.get("metrics")
    line = f"{what}: served {c['served']:,}, labelled {c['labelled']:,}, pending {c['pending']:,}"
    if m:
        auc = "-" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f}"
        line += f"; log loss {m['log_loss']:.3f}, ROC AUC {auc}, accuracy {m['accuracy']:.3f}"
    calibration = quality.get("calibration")
    if calibration:
        line += (
            f", predicted {calibration['mean_predicted']:.3f} vs observed {calibration['observed_rate']:.3f}"
        )
    return line


def report_lines(report: dict[str, Any]) -> list[str]:
    """One line per version that served (and per source of it), then the labels' bookkeeping."""
    lines = []
    for entry in report["versions"]:
        lines.append(quality_line(f"version {entry['version']}", entry))
        lines += [quality_line(f"  source {s}", q) for s, q in entry["by_source"].items()]
    labels = report["labels"]
    lines.append(
        f"labels: {labels['rows']:,} rows, {labels['matched']:,} matched, {labels['unmatched']} unmatched "
        f"(ids predict never served), {labels['duplicates']} duplicates"
    )
    return lines


def skew_line(facts: dict[str, Any], threshold: float) -> str:
    """The skew of one version: the flagged features with their PSI, the largest of the others."""
    psi = facts["psi"]
    flagged = ", ".join(f"{name} PSI {psi[name]:.2f}" for name in facts["skewed"]) or "no feature"
    calm = [name for name in psi if name not in facts["skewed"]]
    rest = f"; largest of the others {max(psi[n] for n in calm):.3f}" if calm else ""
    return f"skewed (PSI > {threshold:g}): {flagged}{rest}"


def emission_record(artifacts: Bucket) -> dict[str, Any] | None:
    """The newest emission record (``feedback/emitted/<seq>.json``: which rows the loop wrote back
    as which data file), or None when the loop emitted nothing."""
    records = sorted(i.name for i in artifacts.list(EMITTED_PREFIX) if i.name.endswith(".json"))
    return dict(json.loads(artifacts.read(records[-1]))) if records else None


def trained_facts(card: ModelCard, file: str) -> dict[str, Any]:
    """What the card of the version trained for the emitted ``file`` says: its lineage entry of
    that file, and the gate's numbers and verdict."""
    entry = next((e for e in card.lineage if e.get("name") == file), None)
    if entry is None:
        raise DemoError(f"the card of {card.version} has no lineage entry for {file}")
    metrics = card.metrics
    primary = metrics.get("primary")
    gate = {
        "primary": primary,
        "challenger": (metrics.get("challenger") or {}).get(primary),
        "champion": (metrics.get("champion") or {}).get(primary),
        "rows": (metrics.get("gate") or {}).get("rows"),
        "reason": card.decision.reason if card.decision is not None else None,
    }
    return {"version": card.version, "lineage": entry, "gate": gate}


def lineage_line(entry: dict[str, Any]) -> str:
    """A lineage entry of an emitted file, as the card holds it, on one line."""
    window = entry.get("window") or {}
    return (
        f"lineage: {entry['name']}: source {entry.get('source')}, {entry.get('emission')}, "
        f"served {window.get('first')} to {window.get('last')}, {entry.get('emitted_rows')} rows emitted, "
        f"{entry.get('rows')} trained on"
    )


def again_line(again: dict[str, Any]) -> str:
    """What a second ``prodml feedback emit`` did, on one line."""
    return (
        f"prodml feedback emit again: {again['note']} ({again['matured']:,} matured, "
        f"{again['emitted_before']:,} emitted before, {again['new_rows']:,} new)"
    )
