"""The data window of a training: the files a challenger is trained and judged on.

Data files are ``DataFile``: one validated file, its identity, and which of its rows are held
out (``fitting.holdout_mask``: the same rows for every model, so no model is compared on rows it
trained on). The earlier files come from the champion's lineage (``load_lineage_files``, at most
``TRAINING_WINDOW_ROWS`` of them: ``recent_within_rows``).

Each version stores the held-out rows of its latest files for its successors
(``holdout.parquet``: ``holdout_cache_bytes``, ``read_holdout_cache``), so an incremental event
reads one small table instead of reading and validating five files again.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.config import Settings
from shared.data.validation import validate_file
from shared.errors import NotFound, ValidationFailed
from shared.logs import get_logger
from shared.model import to_frame
from shared.schema import Schema
from shared.storage import Bucket
from shared.training import fitting
from shared.training.ledger import file_key
from shared.training.registry import Current

log = get_logger(__name__)


@dataclass(frozen=True)
class DataFile:
    """One validated data file and its held-out rows."""

    bucket: str
    name: str
    generation: int
    frame: pd.DataFrame
    holdout: np.ndarray  # bool per row of frame: True = held out
    ids: pd.Series | None = None  # its ``id`` column, one per row of frame (first read only)
    origin: Mapping[str, Any] | None = None  # lineage fields of a file the loop wrote (source, window)

    @property
    def key(self) -> str:
        """``bucket/name@generation``."""
        return file_key(self.bucket, self.name, self.generation)

    @property
    def train_rows(self) -> pd.DataFrame:
        """The rows models may learn from."""
        return self.frame[~self.holdout]

    @property
    def holdout_rows(self) -> pd.DataFrame:
        """The rows models are compared on."""
        return self.frame[self.holdout]

    def ref(self) -> dict[str, Any]:
        """This file as a lineage entry."""
        return {
            "bucket": self.bucket,
            "name": self.name,
            "generation": self.generation,
            "rows": len(self.frame),
            "holdout_rows": int(self.holdout.sum()),
            **(self.origin or {}),
        }


def make_data_file(
    bucket: str,
    name: str,
    generation: int,
    frame: pd.DataFrame,
    settings: Settings,
    ids: pd.Series | None = None,
) -> DataFile:
    """A ``DataFile`` with its deterministic held-out rows (``ids``: its ``id`` column, if any)."""
    mask = fitting.holdout_mask(
        len(frame), f"{bucket}/{name}", settings.holdout_fraction, settings.random_seed
    )
    return DataFile(bucket, name, generation, frame, mask, ids)


def load_lineage_files(
    data: Bucket, refs: list[dict[str, Any]], schema: Schema, settings: Settings
) -> tuple[list[DataFile], list[str]]:
    """Read and validate earlier accepted files; (the files, a note per file that was skipped).

    A file is skipped when it is gone, was replaced by a newer generation (its rows are no longer
    there to read), lives in another bucket, or no longer passes validation (a changed schema).
    """
    files: list[DataFile] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prodml-window-") as folder:
        for ref in refs:
            key = file_key(ref["bucket"], ref["name"], ref["generation"])
            if ref["bucket"] != data.name:
                skipped.append(f"{key}: not in data bucket {data.name!r}")
                continue
            path = Path(folder) / "data"
            try:
                info = data.download(ref["name"], path)
                if info.generation != int(ref["generation"]):
                    skipped.append(f"{key}: replaced by generation {info.generation}")
                    continue
                # Accepted before: only the schema's columns are parsed, so a file with many
                # extra columns does not slow every later retrain (issue 12).
                validated = validate_file(path, ref["name"], schema, settings, schema_columns_only=True)
            except NotFound:
                skipped.append(f"{key}: no longer in the bucket")
                continue
            except ValidationFailed as exc:
                skipped.append(f"{key}: no longer valid ({exc.rule}: {exc.message})")
                continue
            finally:
                path.unlink(missing_ok=True)
            files.append(
                make_data_file(ref["bucket"], ref["name"], int(ref["generation"]), validated.frame, settings)
            )
    for note in skipped:
        log.warning(f"training window: skipped {note}")
    return files, skipped


def ref_key(ref: dict[str, Any]) -> str:
    """The file key of a lineage entry."""
    return file_key(ref["bucket"], ref["name"], ref["generation"])


def recent_within_rows(refs: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The most recent of ``refs`` (oldest first) whose recorded rows add up to at most ``budget``."""
    chosen: list[dict[str, Any]] = []
    total = 0
    for ref in reversed(refs):
        total += int(ref.get("rows", 0))
        if total > budget:
            break
        chosen.append(ref)
    return chosen[::-1]


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames as one (an empty frame for none)."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


HOLDOUT_KEY_COLUMN = "__prodml_file__"


def holdout_cache_bytes(files: list[DataFile]) -> bytes:
    """The held-out rows of ``files`` as one Parquet table, each row tagged with its file's key.

    Stored with each version (``models/versions/<v>/holdout.parquet``): the next incremental
    event compares models on these rows without reading and validating the files again, which
    keeps its cost flat however much data the model holds (and the gate working when old files
    are deleted from the bucket).
    """
    frames = []
    for f in files:
        rows = f.holdout_rows.copy()
        rows[HOLDOUT_KEY_COLUMN] = f.key
        frames.append(rows)
    buffer = io.BytesIO()
    concat(frames).to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_holdout_cache(artifacts: Bucket, champion: Current, schema: Schema) -> dict[str, DataFile]:
    """The champion's stored held-out rows by file key (every row held out); empty if unusable."""
    name = champion.card.holdout_cache if champion.card is not None else None
    if not isinstance(name, str):
        return {}
    try:
        frame = pd.read_parquet(io.BytesIO(artifacts.read(name)))
        out: dict[str, DataFile] = {}
        for key, rows in frame.groupby(HOLDOUT_KEY_COLUMN, sort=False):
            rows = rows.drop(columns=[HOLDOUT_KEY_COLUMN]).reset_index(drop=True)
            typed = to_frame(schema, rows)
            typed[schema.label.name] = fitting.labels(rows, schema)
            bucket, rest = str(key).split("/", 1)
            object_name, generation = rest.rsplit("@", 1)
            out[str(key)] = DataFile(bucket, object_name, int(generation), typed, np.ones(len(typed), bool))
    except (NotFound, KeyError, ValueError, TypeError, OSError) as exc:
        # Gone, or written under another schema: the files themselves are read instead.
        log.warning(f"held-out rows of {champion.version} not usable ({exc!r}); reading the files")
        return {}
    return out
