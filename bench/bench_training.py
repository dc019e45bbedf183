"""Dynamic training speed: where one event's time goes, and how it grows with accumulated data.

Data: the synthetic ad-conversion days (``shared.local.synth``: 6 categories, an hour and a bid; a
one-hot model of ~80 columns), in local buckets under a temp folder.

1. **One event, 10,000-row file** (quick: 2,000): the current model was trained on one earlier
   file of the same size; the new file arrives (``TRAINING_STRATEGY=full``, so the challenger is
   a retrain on both). The whole event is ``on_event.handle_event``, median of repeats (the
   buckets reset in place between runs). Its phases are the trainer's own clock
   (``Outcome.seconds``, also in the event's log line): read+validate (the new file and the
   window's files), train, evaluate (test-then-train on the new file, both models on the held-out
   rows, the paired gate, reference statistics), write (skops, version, compare-and-swap,
   marker, monitoring record), other (schema, loading the current model, checks). Each phase is
   a ratio to the whole event.
2. **Growth**: the current model holds 1, 10 and 50 files of 2,000 rows (quick: 1,000); one more
   file arrives. For ``incremental`` (partial_fit on the new file) and ``full`` (a retrain on all
   accumulated files, ``TRAINING_WINDOW_FILES=100``): the training step alone and the whole
   event, each as a ratio to the same at 1x. Goal for incremental: at most 1.5x at 10x and 50x.
   Expected for full: growing with the data (linear in rows, plus the fixed per-event costs).
   The incremental event's gate reads the champion's stored held-out rows (one small Parquet
   table of its last ``HOLDOUT_WINDOW_FILES`` files), not the files: without that table the
   event grew 1.4x from 1x to 10x (four more files read and validated), flat after.
3. **A wide file in the window**: one of the current model's two files has 100,000 columns (the
   schema's plus extra ones; 100 rows, ~20 MB; ``MAX_COLUMNS`` raised to let it in, the default
   quarantines it). The read phase of the next full retrain, as a ratio to the same without the
   extra columns. The window re-reads an accepted file's schema columns only: before that, this
   read took about 5 s against 0.05 s (~100x).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import Row, goal_row
from shared.contracts import INCOMING_PREFIX, EventOutcome, TrainingStrategy

AREA = "training"
INCREMENTAL_GOAL = 1.5
WIDE_COLUMNS = 100_000
WIDE_ROWS = 100
NEW_FILE = f"{INCOMING_PREFIX}new.csv"  # the file whose event each measured run handles


def _settings(root: Path, **env: str) -> Any:
    from shared.config import load_settings

    return load_settings({"LOCAL_BUCKETS_ROOT": str(root), "LOG_LEVEL": "error", **env})


def _csv_bytes(frame: Any, extra_columns: int = 0) -> bytes:
    """``frame`` as CSV, with ``extra_columns`` columns of zeros the schema does not name."""
    if not extra_columns:
        return frame.to_csv(index=False).encode()
    header = ",".join([*frame.columns, *(f"extra{i}" for i in range(extra_columns))])
    tail = "," + ",".join(["0"] * extra_columns)
    lines = [line + tail for line in frame.to_csv(index=False, header=False).splitlines()]
    return ("\n".join([header, *lines]) + "\n").encode()


def _prepare(
    root: Path, files: int, rows: int, wide_last: tuple[int, int] | None = None, **env: str
) -> tuple[Any, Any]:
    """Buckets with the schema and a current model trained on ``files`` files; the new file dropped.

    ``wide_last``: (rows, extra columns) of the last of those files, stored with that many
    columns the schema does not name.

    Returns (settings, the new file's ObjectInfo).
    """
    from shared.local.synth import day_frame, synth_schema
    from shared.schema import save_schema
    from shared.storage.local import LocalBucket
    from shared.training import registry
    from shared.training.challenger import ChallengerRequest, build_challenger
    from shared.training.window import make_data_file

    settings = _settings(root, **env)
    data = LocalBucket(root, settings.data_bucket)
    artifacts = LocalBucket(root, settings.artifacts_bucket)
    schema = synth_schema()
    save_schema(artifacts, schema)
    accepted = []
    for day in range(1, files + 1):
        wide = wide_last is not None and day == files
        frame = day_frame(seed=0, day=day, rows=wide_last[0] if wide_last and wide else rows)
        name = f"{INCOMING_PREFIX}day-{day:03d}.csv"
        extra = wide_last[1] if wide_last and wide else 0
        generation = data.write(name, _csv_bytes(frame, extra))
        accepted.append(make_data_file(data.name, name, generation, frame, settings))
    version = registry.new_version_id()
    champion = build_challenger(
        ChallengerRequest(
            version=version,
            schema=schema,
            settings=settings,
            data=None,
            new_files=accepted,
            champion=None,
            strategy=TrainingStrategy.FULL,
            event=None,
            by="bench",
            accumulate_lineage=False,
        )
    )
    model_bytes = champion.bundle.to_bytes()
    registry.write_version(artifacts, version, model_bytes, champion.card, champion.holdout_bytes)
    registry.swap_current(artifacts, version, model_bytes, 0, kind="promote", previous=None, by="bench")
    new = day_frame(seed=0, day=files + 1, rows=rows)
    data.write(NEW_FILE, new.to_csv(index=False).encode())
    return settings, data.stat(NEW_FILE)


def _reset(root: Path, env: dict[str, str], champion: str) -> None:
    """Undo one event: the champion current again, the new file not done (its marker removed).

    The buckets are reset in place: a copy of the folder would give every object a new local
    generation (the local store notices a file it did not write), and the lineage would no longer
    match.
    """
    from shared.data import monitoring
    from shared.storage.local import LocalBucket
    from shared.training import ledger, registry

    settings = _settings(root, **env)
    data = LocalBucket(root, settings.data_bucket)
    artifacts = LocalBucket(root, settings.artifacts_bucket)
    new = data.stat(NEW_FILE)
    registry.swap_current(
        artifacts,
        champion,
        artifacts.read(registry.model_name(champion)),
        registry.current_generation(artifacts),
        kind="rollback",
        previous=None,
        by="bench",
    )
    for name in (
        ledger.processed_name(data.name, new.name, new.generation),
        monitoring.record_name(new.name, new.generation),
    ):
        if artifacts.exists(name):
            artifacts.delete(name)


def _event_seconds(root: Path, env: dict[str, str], repeat: int) -> dict[str, float]:
    """Median seconds of ``handle_event`` for the new file, whole and per phase (as the trainer
    times them: ``Outcome.seconds``); the buckets are reset after each run."""
    from shared.events import parse_storage_event, to_cloudevent
    from shared.storage.local import LocalBucket
    from shared.training import registry
    from shared.training.on_event import handle_event

    settings = _settings(root, **env)
    data = LocalBucket(root, settings.data_bucket)
    artifacts = LocalBucket(root, settings.artifacts_bucket)
    current = registry.read_current(artifacts)
    assert current is not None
    runs = []
    for i in range(repeat + 1):
        event = parse_storage_event(to_cloudevent(data.stat(NEW_FILE)))
        outcome = handle_event(event, settings, data=data, artifacts=artifacts)
        if outcome.status not in (EventOutcome.PROMOTED, EventOutcome.REJECTED):
            raise RuntimeError(f"bench event ended {outcome.status}: {outcome.message}")
        if i > 0:  # the first run warms imports and caches
            runs.append(outcome.seconds)
        _reset(root, env, current.version)
    return {phase: statistics.median(r.get(phase, 0.0) for r in runs) for phase in runs[0]}


def _event_rows(work: Path, rows: int, repeat: int) -> list[Row]:
    template = work / "event"
    _prepare(template, files=1, rows=rows)
    seconds = _event_seconds(template, {}, repeat)
    total = seconds.pop("total")
    shutil.rmtree(template)
    what = f"one event, {rows:,}-row file"
    out = [Row(AREA, f"{what}: whole (full retrain on 2 files)", total, "s", "-", 1.0)]
    against = f"whole event ({total:.3f} s)"
    names = {
        "read": "read+validate (new file and window)",
        "train": "train",
        "evaluate": "evaluate (test-then-train, gate, reference stats)",
        "write": "write (model, card, swap, marker, record)",
        "other": "other (schema, current model load, checks)",
    }
    for phase, label in names.items():
        value = seconds.get(phase, 0.0)
        out.append(Row(AREA, f"{what}: {label}", value, "s", against, value / total))
    return out


def _growth_rows(work: Path, rows: int, repeat: int, sizes: tuple[int, ...]) -> list[Row]:
    out: list[Row] = []
    for strategy in (TrainingStrategy.INCREMENTAL, TrainingStrategy.FULL):
        env = {"TRAINING_STRATEGY": strategy, "TRAINING_WINDOW_FILES": "100"}
        measured: dict[int, dict[str, float]] = {}
        for files in sizes:
            template = work / f"{strategy}-{files}"
            _prepare(template, files=files, rows=rows, **env)
            measured[files] = _event_seconds(template, env, repeat)
            shutil.rmtree(template)
        base = measured[sizes[0]]
        step = (
            "update (partial_fit on the new file)"
            if strategy == TrainingStrategy.INCREMENTAL
            else "retrain (fit on all)"
        )
        for phase, label in (("train", f"{strategy} {step}"), ("total", f"{strategy} event")):
            for files in sizes:
                value = measured[files][phase]
                what = f"{label}, model holds {files}x{rows:,} rows"
                against = f"same at {sizes[0]}x ({base[phase]:.4f} s)"
                ratio = value / base[phase]
                if strategy == TrainingStrategy.INCREMENTAL and files != sizes[0]:
                    out.append(goal_row(AREA, what, value, "s", against, ratio, at_most=INCREMENTAL_GOAL))
                else:
                    goal = "~linear" if strategy == TrainingStrategy.FULL and files != sizes[0] else ""
                    out.append(Row(AREA, what, value, "s", against, ratio, goal))
    return out


def _wide_rows(work: Path, rows: int, repeat: int) -> list[Row]:
    from shared.local.synth import synth_schema

    schema_columns = len(synth_schema().feature_names) + 1
    env = {"MAX_COLUMNS": str(WIDE_COLUMNS)}
    measured = {}
    for columns in (0, WIDE_COLUMNS):
        template = work / f"wide-{columns}"
        extra = columns - schema_columns if columns else 0
        _prepare(template, files=2, rows=rows, wide_last=(WIDE_ROWS, extra), **env)
        measured[columns] = _event_seconds(template, env, repeat)["read"]
        shutil.rmtree(template)
    what = f"full retrain after a {WIDE_COLUMNS:,}-column file: read+validate the window"
    against = f"same, the file without extra columns ({measured[0]:.4f} s)"
    return [Row(AREA, what, measured[WIDE_COLUMNS], "s", against, measured[WIDE_COLUMNS] / measured[0])]


def _warm_up(work: Path) -> None:
    """A few throwaway events: the first ones in a process pay for lazy imports and caches."""
    root = work / "warm-up"
    _prepare(root, files=2, rows=500)
    _event_seconds(root, {}, 3)
    _event_seconds(root, {"TRAINING_STRATEGY": TrainingStrategy.INCREMENTAL}, 3)
    shutil.rmtree(root)


def run(quick: bool) -> list[Row]:
    """The rows of this area (see the module docstring)."""
    repeat = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="bench-training-") as folder:
        work = Path(folder)
        _warm_up(work)
        rows = _event_rows(work, 2_000 if quick else 10_000, repeat)
        rows += _growth_rows(work, 1_000 if quick else 2_000, repeat, (1, 10, 50))
        rows += _wide_rows(work, 1_000 if quick else 2_000, repeat)
    return rows
