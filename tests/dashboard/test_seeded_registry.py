"""``bench.seeded_registry``: the long history the dashboard's page timings are measured on reads
back through the CLI as a real deployment's would (``prodml models --json``, ``prodml monitor
--json`` run as processes): every version, the one real model current, gate decisions with their
numbers, each parent an earlier promoted version, every record naming a version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.seeded_registry import seed_registry

PRODML = str(Path(sys.executable).with_name("prodml"))


def cli_json(buckets: Path, *argv: str) -> Any:
    """A ``prodml`` command's ``--json`` output, run as a user would, on the buckets at ``buckets``."""
    env = {**os.environ, "STORAGE_BACKEND": "local", "LOCAL_BUCKETS_ROOT": str(buckets)}
    done = subprocess.run([PRODML, *argv, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_seeded_history_reads_back_through_the_cli(tmp_path: Path) -> None:
    seeded = seed_registry(tmp_path / "buckets", versions=30, records=120)

    models = cli_json(seeded.buckets_root, "models")
    listed = [row["version"] for row in models["versions"]]
    assert listed == seeded.versions  # oldest first, the real one last
    assert models["current"] == seeded.current_version == listed[-1]
    decisions = {row["decision"] for row in models["versions"]}
    assert {"promoted", "rejected"} <= decisions
    promoted_before: set[str] = set()
    for row in models["versions"][:-1]:
        assert row["parent"] is None or row["parent"] in promoted_before
        assert row["primary_metric"] == "log_loss" and 0.0 < row["challenger"] < 2.0
        if row["decision"] == "rejected":
            assert f"{row['challenger']:.4f}" in row["reason"]
            assert f"{row['champion']:.4f}" in row["reason"]
        if row["decision"] == "promoted":
            promoted_before.add(row["version"])
        assert row["files"] >= 1

    records = [
        r for r in cli_json(seeded.buckets_root, "monitor") if r["object"].startswith("incoming/day-0")
    ]
    assert len(records) == 120
    assert {r["model_version"] for r in records} <= set(seeded.versions)
    assert all(set(r["psi"]) >= {"country", "bid"} and r["metrics"]["rows"] == 3000.0 for r in records)
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
