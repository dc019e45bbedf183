"""`prodml demo --short` (what CI runs of `make demo`): the story runs, its summary and report
exist and say what happened, and no process it started is left, after the end or after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PRODML = str(Path(sys.executable).with_name("prodml"))


def gone(pid: int) -> bool:
    """Whether neither a process nor a process group with this id is left."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, 0)
            return False
        except ProcessLookupError:
            continue
        except PermissionError:
            return False
    return True


def test_short_demo_tells_the_story_and_leaves_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [PRODML, "demo", "--short", "--state", str(state)],
        capture_output=True, text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert len(steps) == 19 and steps[11].startswith("[12/19] serving modes")
    assert steps[15].startswith("[16/19] back into training")
    assert steps[-1].startswith("[19/19] shadow judged on labels")

    summary = json.loads((state / "demo" / "summary.json").read_text())
    report = (state / "demo" / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3
    facts = summary["facts"]
    assert facts["quarantine"]["rule"]  # the corrupt file was quarantined, with its reason
    assert facts["drift"]["decision"] == "warning" and facts["drift"]["psi"]
    assert facts["advice"]["recommendation"] == "hybrid"  # 691k keys, peaked traffic
    versions = summary["models"]["versions"]
    assert len(versions) >= 3 and versions[0]["version"] == facts["first_version"]
    serving = {row["mode"]: row for row in summary["serving"]}
    assert serving["hybrid"]["hit_rate"] > 0 and serving["hybrid"]["miss_rate"] == 0
    assert serving["static"]["miss_rate"] > 0
    assert serving["dynamic"]["hit_rate"] == 0
    assert all(row["total_seconds"] is not None for row in summary["freshness"])
    # the loop: impressions with ids; a stream with bids shifted flags bid, only bid; then 70% of
    # the impressions' outcomes in a labels file with two ids never served, measured by `prodml live`
    live = facts["live"]
    assert live["counts"]["labelled"] == 210 and live["counts"]["pending"] == live["counts"]["served"] - 210
    assert live["unmatched_labels"] == 2 and live["metrics"]["rows"] == 210
    # Per source: what the top-K table and the model served (which share each is depends on the
    # run's keys); together every served and every labelled row, once.
    sources = live["by_source"]
    assert set(sources) <= {"model", "table"}
    assert sum(q["counts"]["served"] for q in sources.values()) == live["counts"]["served"]
    assert sum(q["counts"]["labelled"] for q in sources.values()) == 210
    assert facts["skew"]["before"] == [] and facts["skew"]["skewed"] == ["bid"]
    # back into training (FEEDBACK_TRAINING): the labels file made the train function emit the
    # 210 labelled rows (the shifted stream's are pending) as one data file under
    # incoming/feedback/, trained into a new version whose lineage names the loop and its
    # prediction window; a second emission finds nothing new
    feedback = facts["feedback"]
    emitted = feedback["emission"]
    assert emitted["file"].startswith("incoming/feedback/") and emitted["rows"] == 210
    assert (emitted["labelled"], emitted["defaulted"]) == (210, 0)
    newest = versions[-2]  # the shadow chapter's version came after it
    assert feedback["version"] == newest["version"] and newest["parent"] == live["version"]
    assert feedback["outcome"] == newest["decision"] in ("promoted", "rejected")
    champion = newest["version"] if feedback["outcome"] == "promoted" else live["version"]
    assert feedback["gate"]["challenger"] == newest["challenger"] and feedback["gate"]["reason"]
    lineage = feedback["lineage"]
    assert (lineage["name"], lineage["source"], lineage["rows"]) == (emitted["file"], "feedback", 210)
    assert lineage["emitted_rows"] == 210 and lineage["window"] == emitted["window"]
    assert lineage["window"]["first"] < lineage["window"]["last"]
    again = feedback["again"]
    assert again["emitted"] is None and again["finished"] == []
    assert (again["emitted_before"], again["new_rows"]) == (210, 0)
    artifacts = state / "buckets" / "prodml-artifacts"
    assert [p.name for p in (artifacts / "feedback" / "emitted").glob("*.json")] == [
        Path(emitted["record"]).name
    ]
    assert (state / "buckets" / "prodml-data" / emitted["file"]).exists()
    assert f"<th>back into training</th><td>{emitted['rows']} joined rows" in report
    # the shadow (PROMOTION_POLICY=shadow from here): a day of the moved market passes the gate and
    # runs in shadow beside the champion; 300 impressions of that market are answered by the
    # champion and scored by the shadow (agreement per source); their labels arrive and the shadow,
    # better on them, is promoted on the live numbers; predict answers with it
    run = facts["shadow"]
    shadow_version = versions[-1]
    assert run["version"] == shadow_version["version"] and run["champion"] == champion
    assert shadow_version["parent"] == champion and shadow_version["decision"] == "promoted"
    assert run["file"] == "day-05.csv" and run["form"] in ("onnx", "sklearn")
    assert run["served"] == 300 and run["agreement"]["all"]["rows"] == 300
    assert sum(a["rows"] for s, a in run["agreement"].items() if s != "all") == 300
    assert set(run["agreement"]) - {"all"} <= {"model", "table"}
    assert 0 < run["agreement"]["all"]["mean_abs_difference"] < 1
    assert run["before_labels"]["decision"] == "waiting" and run["before_labels"]["rows"] == 0
    assert run["labels"] == 300 and run["change"] == "promoted" and run["promoted"] is True
    numbers = run["numbers"]
    assert (numbers["rows"], numbers["min_rows"], numbers["metric"]) == (300, 200, "log_loss")
    assert numbers["shadow_metric"] < numbers["champion_metric"]  # it won, not only "not worse"
    assert run["history"] == ["started", "promoted"] and run["reason"].startswith("promoted on live labels")
    assert run["current"] == run["served_after"] == run["version"] == summary["models"]["current"]
    shown = f"<th>shadow challenger</th><td>{run['version']} beside {champion}: agreement on 300 rows"
    assert shown in report
    assert "the shadow is better by" in summary["summary"]["shadow challenger"]
    # the buckets stay to look at; no process is left
    assert (state / "buckets" / "prodml-data" / "quarantine" / "corrupt.csv").exists()
    pids = json.loads((state / "demo" / "processes.json").read_text())
    assert {"demo", "predict", "train", "build_table", "build_table_event"} <= set(pids)
    assert all(gone(pid) for pid in pids.values())


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    state = tmp_path / "state"
    demo = subprocess.Popen(
        [PRODML, "demo", "--short", "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "stack up" in line:
                break
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground group
        _, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 130, err[-2000:]
    assert "interrupted; every process it started is stopped" in err
    pids = json.loads((state / "demo" / "processes.json").read_text())
    assert {"predict", "train"} <= set(pids)
    assert all(gone(pid) for pid in pids.values())
