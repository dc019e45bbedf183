"""Local store speed: write, read (to bytes) and download (to a file) of 1 MB and 100 MB objects
(quick: 1 MB and 20 MB), each as a ratio to ``shutil.copyfile`` of a file of the same size on the
same filesystem. Download is the like-for-like one (file to file); read skips creating a file.

The store's write also fsyncs the temp file (so a crash never leaves a torn object) and takes the
bucket lock for the rename; the baseline does neither, so the write goal allows for that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench.common import Row, goal_row, median_seconds
from shared.storage.local import LocalBucket

MB = 1024 * 1024
WRITE_GOAL = 3.0  # fsync + lock + bookkeeping over a plain page-cache copy


def _rows_for(size: int, root: Path, repeat: int) -> list[Row]:
    data = os.urandom(size)
    src = root / f"src-{size}"
    src.write_bytes(data)
    dst = root / f"dst-{size}"
    bucket = LocalBucket(root / "buckets", "bench-bucket")
    name = f"bench/{size}.bin"
    bucket.write(name, data)

    baseline = median_seconds(lambda: shutil.copyfile(src, dst), repeat=repeat)
    write = median_seconds(lambda: bucket.write(name, data), repeat=repeat)
    read = median_seconds(lambda: bucket.read(name), repeat=repeat)
    download = median_seconds(lambda: bucket.download(name, dst), repeat=repeat)
    dst.unlink()
    label = f"{size // MB} MB"
    against = f"shutil.copyfile {label} ({baseline * 1000:.1f} ms)"
    return [
        goal_row(
            "storage", f"local write {label}", write, "s", against, write / baseline, at_most=WRITE_GOAL
        ),
        goal_row("storage", f"local read {label} (to bytes)", read, "s", against, read / baseline),
        goal_row(
            "storage", f"local download {label} (to a file)", download, "s", against, download / baseline
        ),
    ]


def run(quick: bool) -> list[Row]:
    """The local store's write and read times as ratios to a plain file copy."""
    sizes = [1 * MB, 20 * MB] if quick else [1 * MB, 100 * MB]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        for size in sizes:
            rows += _rows_for(size, Path(tmp), repeat=(15 if size <= MB else 5) if not quick else 5)
    return rows
