"""Static training (``prodml train FILE...``, docs/design.md section 1): train on local files by hand.

It validates the local files against ``schema.json``, uploads them to ``incoming/`` of the data
bucket (so later full retrains of the train function can read them again, and the lineage names
bucket objects), trains a fresh model on them alone, evaluates it beside the current model on
the same held-out rows, writes a version and promotes it (``gate``: only if the gate passes)
through the one promotion path (``shared.training.promotion``). The files' "done" markers are
written too, so the train function (and ``prodml replay``) do not train on them again; if the
function sees them first, its lineage check makes it harmless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.contracts import INCOMING_PREFIX, STATIC_STRATEGY, TrainingStrategy
from shared.data.validation import validate_file
from shared.errors import ModelNotReady, PreconditionFailed, ProdMLError
from shared.schema import Schema, load_schema
from shared.storage import Bucket, artifacts_bucket, data_bucket
from shared.training import promotion, registry
from shared.training.card import ModelCard
from shared.training.challenger import ChallengerRequest, build_challenger
from shared.training.window import DataFile, make_data_file

TRAINED_BY_CLI = "trained_by_cli"  # the outcome its "done" markers record


@dataclass(frozen=True)
class StaticTraining:
    """What one static training did: the version written, and whether it was promoted."""

    card: ModelCard
    promoted: bool
    reason: str
    files: list[str]  # the uploaded files' keys


def upload_file(data: Bucket, path: Path) -> tuple[str, int]:
    """Put ``path`` at ``incoming/<its name>``; (object name, generation).

    An object already there with the very same bytes is reused (running ``prodml train`` again);
    one with other bytes is an error: overwriting it would orphan the lineage that names it.
    """
    name = INCOMING_PREFIX + path.name
    try:
        return name, data.upload(name, path, if_generation_match=0)
    except PreconditionFailed:
        pass
    with tempfile.TemporaryDirectory(prefix="prodml-cli-") as folder:
        existing = Path(folder) / "existing"
        info = data.download(name, existing)
        if _sha256_file(existing) != _sha256_file(path):
            raise ProdMLError(
                f"{data.name}/{name} already exists with other content than {str(path)!r}; rename the file"
            )
    return name, info.generation


def train_files(paths: list[Path], settings: Settings, *, gate: bool = False) -> StaticTraining:
    """Static training on local files (see the module docstring)."""
    data, artifacts = data_bucket(settings), artifacts_bucket(settings)
    schema = load_schema(artifacts)
    files = _validate_and_upload(paths, data, schema, settings)
    try:
        champion = registry.read_current(artifacts, settings.model_trusted_types)
    except ModelNotReady:
        champion = None
    version = registry.new_version_id()
    challenger = build_challenger(
        ChallengerRequest(
            version=version,
            schema=schema,
            settings=settings,
            data=data,
            new_files=files,
            champion=champion,
            strategy=TrainingStrategy.FULL,
            event=None,
            by="prodml train",
            artifacts=artifacts,
            accumulate_lineage=False,
            force_promote=not gate,
        )
    )
    card = dataclasses.replace(challenger.card, strategy=STATIC_STRATEGY)
    model_bytes = challenger.bundle.to_bytes()
    registry.write_version(
        artifacts, version, model_bytes, card, challenger.holdout_bytes, compiled=challenger.compiled_bytes
    )
    if challenger.promote:
        _, card = promotion.swap_in_over_current(
            artifacts,
            card,
            model_bytes,
            reason=challenger.reason,
            by="prodml train",
            attempts=settings.cas_max_attempts,
            extra_trusted=settings.model_trusted_types,
        )
        record: dict[str, Any] = {"outcome": TRAINED_BY_CLI, "version": version, "message": "prodml train"}
        for f in files:
            promotion.mark_done(artifacts, f.bucket, f.name, f.generation, record)
    return StaticTraining(card, challenger.promote, challenger.reason, [f.key for f in files])


def _validate_and_upload(
    paths: list[Path], data: Bucket, schema: Schema, settings: Settings
) -> list[DataFile]:
    """Validate every file first (a bad one uploads nothing), then upload each to ``incoming/``."""
    for path in paths:
        if not path.is_file():
            raise ProdMLError(f"no such file: {str(path)!r}")
    validated = [validate_file(path, path.name, schema, settings) for path in paths]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ProdMLError(f"two files share a name (they would share incoming/<name>): {names}")
    files = []
    for path, checked in zip(paths, validated, strict=True):
        name, generation = upload_file(data, path)
        files.append(make_data_file(data.name, name, generation, checked.frame, settings))
    return files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
