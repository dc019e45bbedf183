"""bench/bench_dashboard.py: every page it times answers 200 through the dashboard function as
functions-framework loads it, on a seeded history, and each gets a first-request and a warm row
(the warm one against the 300 ms goal)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_dashboard import AREA, _environment, _rows, pages
from bench.seeded_registry import seed_registry


def test_the_bench_times_every_page_and_states_the_goal(tmp_path: Path) -> None:
    seeded = seed_registry(tmp_path / "buckets", versions=60, records=20)
    assert "/versions?page=2" in pages(seeded).values()  # 60 versions: two pages of 50
    environment = {"STORAGE_BACKEND": "local", "LOCAL_BUCKETS_ROOT": str(seeded.buckets_root)}
    with _environment({**environment, "DASHBOARD_CACHE_SECONDS": "0.05"}):
        rows = _rows(seeded, 1, "test", 0.05)  # raises when a page answers anything but 200
    assert len(rows) == 3 * len(pages(seeded))
    assert {row.area for row in rows} == {AREA}
    for kind in (", warm (", ", just past the ttl ("):
        timed = [row for row in rows if kind in row.what]
        assert len(timed) == len(pages(seeded)) and all(row.goal == "<= 1" for row in timed)
    with _environment({**environment, "DASHBOARD_CACHE_SECONDS": "0"}):
        uncached = _rows(seeded, 1, "no cache", None)
    assert len(uncached) == 2 * len(pages(seeded)) and not any(row.goal for row in uncached)
