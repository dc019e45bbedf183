"""The soak (bench/soak.py): the short variant of ``make soak`` holds every invariant, and its
checks fail on the defects they are there to catch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.soak import (
    ClientLog,
    DroppedFile,
    FileOutcomes,
    SoakConfig,
    SoakReport,
    check_exactly_once,
    check_forward,
    run_soak,
)
from shared.storage.base import ObjectInfo


@pytest.mark.slow
def test_the_short_soak_holds_every_invariant(tmp_path: Path) -> None:
    report = run_soak(SoakConfig.from_env({"SOAK_SECONDS": "30"}), tmp_path / "state")

    figures = report.figures
    assert report.failures == []
    assert figures["requests failed"] == 0 and figures["requests answered 200"] > 0
    assert figures["files lost"] == 0
    assert figures["bad files quarantined with a reason"] == figures["bad files"] > 0
    assert figures["versions promoted"] > 0
    assert figures["served versions only move forward"] is True
    assert sum(figures["kills"].values()) > 0  # the faults really happened
    assert figures["restarts by the supervisor"] == figures["kills"]
    assert figures["duplicate deliveries fired"] > 0


def _info(name: str, generation: int) -> ObjectInfo:
    return ObjectInfo("prodml-data", name, 1, generation, "text/csv", None)  # type: ignore[arg-type]


def test_the_forward_check_fails_on_an_older_version_served_after_a_newer_one() -> None:
    report = SoakReport(SoakConfig())
    steady, back = ClientLog(versions=["v1", "v1", "v2"]), ClientLog(versions=["v1", "v2", "v1"])

    check_forward(report, [steady, back], ["v1", "v2"])

    assert report.figures["served versions only move forward"] is False
    assert report.failures == ["client 1 was served an older version after a newer one: [('v2', 'v1')]"]


def test_the_exactly_once_check_fails_on_a_file_trained_twice() -> None:
    report = SoakReport(SoakConfig())
    files = [
        (DroppedFile(f"incoming/{n}.csv", Path("x"), "good"), _info(f"incoming/{n}.csv", n)) for n in (1, 2)
    ]
    keys = [f"prodml-data/incoming/{n}.csv@{n}" for n in (1, 2)]
    outcomes = FileOutcomes(outcome={keys[0]: "promoted", keys[1]: "promoted"})
    lineage = Counter({keys[0]: 2, keys[1]: 1})  # file 1 counted twice
    promotions = [{"version": v} for v in ("a", "b", "c")]  # three promotions for two files

    check_exactly_once(report, files, outcomes, lineage, promotions)

    assert any("counted more than once" in f and keys[0] in f for f in report.failures)
    assert "3 promotions for 2 files whose outcome is 'promoted'" in report.failures
