"""A registry as a long-running deployment has it, written fast: 1,000 versions and 10,000
monitoring records in local buckets, for the dashboard's page timings (bench/bench_dashboard.py,
issue 17: each page <= 300 ms with that much history) and for tests that need a long history.

One version is real: a model trained statically (``shared.training.static.train_files``) on a
synthetic day, promoted, so ``models/current.skops``, ``schema.json`` and its card are what a
deployment holds and the overview renders. The others are cards only (no model is fitted for
them, which is what makes this fast): copies of the real card written through
``shared.training.registry.write_card``, each with its own version id and time (an hour apart,
before the real one), parent, lineage (the files accumulated so far, with generations), metrics
of challenger and champion near the real ones, and a gate decision (mostly promoted, some
rejected with the gate's numbers, some superseded). The monitoring records are written through
``shared.data.monitoring.write_record``, one per data file, spread over the versions: the live
model's quality on the file, PSI per feature (a few files drifted), the decision and what the
trainer did with the file.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shared.compiled.form import CompiledForm
from shared.config import Settings, load_settings
from shared.contracts import INCOMING_PREFIX, CardStatus, EventOutcome, MonitoringDecision
from shared.data.monitoring import make_record, write_record
from shared.data.schema_infer import infer_schema
from shared.local.synth import LABEL, synthesize
from shared.local.synth_keys import KEY
from shared.schema import save_schema
from shared.storage.local import LocalBucket
from shared.training.card import ModelCard
from shared.training.registry import compiled_name, iso, new_version_id, write_card
from shared.training.static import train_files

T = TypeVar("T")

VERSIONS = 1000
RECORDS = 10_000
REAL_ROWS = 2000  # rows of the one real model's training day
DRIFT_PSI = 0.25  # a file whose PSI of a feature is over this is drifted (DRIFT_PSI's default)
WRITERS = 8  # parallel writes while seeding
FILE_ROWS = 3000.0  # rows of each synthetic data file
HOLDOUT_ROWS = 600.0  # held-out rows the gate compares challenger and champion on
FIRST_GENERATION = 1_764_000_000_000_000  # of GCS's magnitude (microseconds since the epoch)


@dataclass(frozen=True)
class SeededRegistry:
    """What ``seed_registry`` wrote, and where."""

    buckets_root: Path
    settings: Settings  # local storage at ``buckets_root``, every other setting its default
    current_version: str  # the one real, promoted model
    versions: list[str]  # every version id, oldest first (the real one last)
    records: int


def seed_registry(
    buckets_root: Path, versions: int = VERSIONS, records: int = RECORDS, seed: int = 0
) -> SeededRegistry:
    """Write ``versions`` versions (one real) and ``records`` monitoring records under ``buckets_root``."""
    settings = load_settings({"STORAGE_BACKEND": "local", "LOCAL_BUCKETS_ROOT": str(buckets_root)})
    artifacts = LocalBucket(buckets_root, settings.artifacts_bucket)
    real = _train_real_model(settings, artifacts, seed)
    rng = np.random.default_rng(seed)
    created = datetime.fromisoformat(real.created.replace("Z", "+00:00"))
    synthetic = _write_synthetic_versions(artifacts, real, versions - 1, created, rng)
    all_versions = [*synthetic, real.version]
    _write_records(artifacts, real, all_versions, records, created, rng)
    return SeededRegistry(buckets_root, settings, real.version, all_versions, records)


def _train_real_model(settings: Settings, artifacts: LocalBucket, seed: int) -> ModelCard:
    """Schema and one statically trained, promoted model from a synthetic day: the serving model."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="prodml-seed-") as folder:
        [day] = synthesize(Path(folder), days=1, rows_per_day=REAL_ROWS, seed=seed).day_files
        save_schema(artifacts, infer_schema(pd.read_csv(day), label=LABEL, key=list(KEY)))
        return train_files([day], settings).card


def _lineage_entry(index: int) -> dict[str, Any]:
    return {
        "bucket": "prodml-data",
        "name": f"{INCOMING_PREFIX}day-{index:05d}.csv",
        "generation": FIRST_GENERATION + index,
        "rows": int(FILE_ROWS),
    }


def _quality(real: dict[str, Any], rng: np.random.Generator, rows: float) -> dict[str, Any]:
    """The real model's held-out quality, each metric moved a little, on ``rows`` rows."""
    return {
        k: (rows if k == "rows" else round(float(v) * float(rng.uniform(0.97, 1.03)), 6))
        for k, v in real.items()
        if isinstance(v, float)
    }


def _metrics(real: ModelCard, champion: dict[str, Any] | None, rng: np.random.Generator) -> dict[str, Any]:
    """A card's metrics as the gate writes them: challenger and champion on the same held-out rows."""
    base = real.metrics.get("challenger") or {}
    challenger = _quality(base, rng, HOLDOUT_ROWS)
    return {**real.metrics, "challenger": challenger, "champion": champion, "holdout_files": []}


def _decision(index: int, metrics: dict[str, Any], created: datetime) -> tuple[CardStatus, str]:
    """Mostly promoted; every seventh rejected with the gate's numbers; a few superseded."""
    primary = str(metrics.get("primary", "log_loss"))
    mine = (metrics.get("challenger") or {}).get(primary)
    theirs = (metrics.get("champion") or {}).get(primary)
    if theirs is None:
        return CardStatus.PROMOTED, "no current model: the first model is promoted"
    if index % 7 == 3:
        return (
            CardStatus.REJECTED,
            f"challenger {primary} {mine:.4f} worse than champion {theirs:.4f} beyond tolerance",
        )
    if index % 53 == 5:
        return CardStatus.SUPERSEDED, f"another version was promoted first at {iso(created)}"
    return CardStatus.PROMOTED, f"challenger {primary} {mine:.4f} not worse than champion {theirs:.4f}"


def _write_synthetic_versions(
    artifacts: LocalBucket, real: ModelCard, count: int, last: datetime, rng: np.random.Generator
) -> list[str]:
    """``count`` cards, an hour apart, ending an hour before ``last``; their version ids, oldest first."""
    ids: list[str] = []
    parent: str | None = None
    champion: dict[str, Any] | None = None
    cards: list[ModelCard] = []
    for index in range(count):
        created = last - timedelta(hours=count - index)
        version = new_version_id(created)
        card = dataclasses.replace(
            real,
            version=version,
            created=iso(created),
            by="train",
            parent=parent,
            strategy="full" if index % 3 else "incremental",
            event={"bucket": "prodml-data", **_lineage_entry(index)},
            lineage=[_lineage_entry(i) for i in range(max(0, index - 9), index + 1)],
            trained_on=[_lineage_entry(i)["name"] for i in range(max(0, index - 9), index + 1)],
            metrics=_metrics(real, champion, rng),
            compiled=_compiled(real, version),
            decision=None,
        )
        status, reason = _decision(index, card.metrics, created)
        cards.append(card.decided(status, reason, iso(created)))
        ids.append(version)
        if status == CardStatus.PROMOTED:
            parent, champion = version, card.metrics["challenger"]
    _write_all(lambda card: write_card(artifacts, card), cards)
    return ids


def _compiled(real: ModelCard, version: str) -> CompiledForm | None:
    """The real card's compiled form, naming the synthetic version's own blob."""
    if real.compiled is None:
        return None
    return dataclasses.replace(real.compiled, blob=compiled_name(version))


def _write_records(
    artifacts: LocalBucket,
    real: ModelCard,
    versions: list[str],
    count: int,
    last: datetime,
    rng: np.random.Generator,
) -> None:
    """``count`` monitoring records, spread evenly over ``versions`` and over their time span."""
    features = list((real.reference or {}).get("features", {})) or list(KEY)
    quality = (real.metrics.get("challenger") or {}) if isinstance(real.metrics, dict) else {}
    span = timedelta(hours=len(versions))
    records: list[dict[str, Any]] = []
    for index in range(count):
        version = versions[index * len(versions) // count]
        psi = {name: round(float(rng.gamma(1.2, 0.03)), 5) for name in features}
        drifted = sorted(name for name, value in psi.items() if value > DRIFT_PSI)
        decision = MonitoringDecision.WARNING if drifted else MonitoringDecision.ACCEPTED
        record = make_record(
            f"{INCOMING_PREFIX}day-{index:05d}.csv",
            FIRST_GENERATION + index,
            version,
            _quality(quality, rng, FILE_ROWS),
            psi,
            drifted,
            str(decision),
            rows=int(FILE_ROWS),
            warnings=[],
            training={"outcome": str(EventOutcome.PROMOTED), "version": version, "message": ""},
            time=iso(last - span + span * (index + 1) / count),
        )
        records.append(record)
    _write_all(lambda record: write_record(artifacts, record), records)


def _write_all(write: Callable[[T], object], items: list[T]) -> None:
    """``write`` each item, ``WRITERS`` at a time: each local write waits on its own fsync (which
    releases the GIL), so parallel writers seed in a fraction of the time of one."""
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        for _ in pool.map(write, items):
            pass
