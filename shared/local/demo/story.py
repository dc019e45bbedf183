"""The demo's story, step by step, on synthetic ad-conversion data (``prodml demo``).

Each step prints one progress line. The commands a user would type (``prodml schema infer``,
``train``, ``rollback``, ``monitor``, ``advise``, ``table build``) run in this process through the
same CLI code, with the demo's environment; the functions run as real functions-framework
processes (``shared.local.stack``) and data files reach them by being copied into the incoming
folder, through the file-drop router.

The module stays whole at about 500 lines: ``Demo`` is a linear story, one method a step in the
order they run, and reads best as one script (the feedback loop's helpers are in ``loop.py``, the
shadow chapter's in ``shadow.py``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

from shared.config import get_settings
from shared.contracts import (
    INCOMING_PREFIX,
    LABELS_PREFIX,
    QUARANTINE_PREFIX,
    REASON_SUFFIX,
    SCHEMA_BLOB,
    TRAFFIC_PREFIX,
    EventOutcome,
    LogFormat,
    ServingMode,
    StorageBackend,
    TableStrategy,
)
from shared.errors import DemoError
from shared.local.demo import loop, shadow
from shared.local.demo.probe import (
    Landing,
    ModeRun,
    drop_and_follow,
    follow,
    send_traffic,
    wait_for,
    wait_served,
)
from shared.local.processes import FunctionProcess, free_port
from shared.local.stack import LocalStack, stack_environment
from shared.local.synth import SynthResult, synthesize
from shared.local.synth_keys import KEY
from shared.logs import setup_logging
from shared.schema import Schema
from shared.storage.local import LocalBucket
from shared.training import registry


@dataclass(frozen=True)
class DemoOptions:
    """How big the story is. ``short`` is the CI variant."""

    state: Path = Path(".local/demo")
    short: bool = False
    seed: int = 0

    @property
    def days(self) -> int:
        """Day files: the first trains the first model, the last one drifts."""
        return 3 if self.short else 6

    @property
    def rows_per_day(self) -> int:
        """Rows of each day file."""
        return 1000 if self.short else 3000

    @property
    def traffic(self) -> int:
        """Request instances in traffic.jsonl: half to learn the traffic, half to serve."""
        return 3000 if self.short else 16000

    @property
    def impressions(self) -> int:
        """Impressions served with ids in the feedback loop's chapter, in each of its two streams."""
        return 300 if self.short else 1500

    @property
    def serve_requests(self) -> int:
        """Single-instance requests sent to each serving mode."""
        return 200 if self.short else 1000


# The demo's deployment: a table may hold at most TABLE_MAX_ROWS keys (a memory budget), fewer than
# the 691,200 keys that exist, so only the traffic's most frequent keys can be precomputed.
DEMO_SETTINGS = {
    "STORAGE_BACKEND": StorageBackend.LOCAL,
    "SERVING_MODE": ServingMode.HYBRID,
    "RELOAD_SECONDS": "0.5",
    "TRAFFIC_FLUSH_SECONDS": "1",
    "PREDICTION_LOG_FLUSH_SECONDS": "1",
    "ROUTER_QUIET_SECONDS": "0.3",
    "ROUTER_BACKOFF_SECONDS": "0.5",
    "SCHEDULE_SECONDS": "600",
    "TABLE_MAX_ROWS": "100000",
    "LOG_FORMAT": LogFormat.JSON,
    # the loop's last step: a labels file makes the train function write the matured joined rows
    # back into incoming/feedback/, and that file trains a version (docs/feedback.md)
    "FEEDBACK_TRAINING": "true",
    # the shadow chapter (PROMOTION_POLICY=shadow from then on): its shadow is judged once this many
    # of its impressions' labels matured, fewer than the short demo's impressions (300)
    "SHADOW_MIN_LABELS": "200",
}


@dataclass
class Demo:
    """Runs the story; ``steps`` and ``facts`` feed the summary and the report."""

    options: DemoOptions
    steps: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    landings: list[Landing] = field(default_factory=list)
    modes: list[ModeRun] = field(default_factory=list)
    stack: LocalStack | None = None
    extra: list[FunctionProcess] = field(default_factory=list)
    total_steps: int = 13

    def __post_init__(self) -> None:
        self.state = self.options.state.resolve()
        self.out = self.state / "demo"
        # The port `prodml up` will use once the demo is over: the user's, not the free one the
        # demo's own stack takes.
        self.user_dashboard_port = get_settings().dashboard_port
        self.env = self._environment()
        self.pids_file = self.out / "processes.json"
        self._log_file: TextIO | None = None
        # synth, schema, static training, stack, the days between the first and the drifted last,
        # corrupt, rollback, drift, traffic, advisor, table, serving modes, the feedback loop (4),
        # the shadow (3)
        self.total_steps = 18 + self.options.days - 2

    # --- plumbing ------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **DEMO_SETTINGS}
        for setting in (
            "PREDICT_PORT",
            "TRAIN_PORT",
            "BUILD_TABLE_PORT",
            "BUILD_TABLE_EVENT_PORT",
            "DASHBOARD_PORT",
        ):
            env[setting] = str(free_port())  # never collide with a `prodml up` already running
        return stack_environment(self.state, env)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[dict[str, Any]]:
        """One numbered step: prints its line (with what the step reports) and its time."""
        record: dict[str, Any] = {"n": len(self.steps) + 1, "title": title, "detail": ""}
        began = time.monotonic()
        yield record
        record["seconds"] = round(time.monotonic() - began, 2)
        self.steps.append(record)
        number = f"[{record['n']:>2}/{self.total_steps}]"
        print(f"{number} {title:<26} {record['detail']}  ({record['seconds']:.1f} s)", flush=True)
        for line in record.get("more", []):
            print(f"        {line}", flush=True)

    def cli(self, *argv: str) -> Any:
        """Run a ``prodml`` command in this process with the demo's settings; its JSON output."""
        from shared.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--json"])
        self._log_to_file()  # main() pointed logging at the captured stderr
        if code != 0:
            raise DemoError(f"`prodml {' '.join(argv)}` failed ({code}): {err.getvalue().strip()[-500:]}")
        return json.loads(out.getvalue())

    def _log_to_file(self) -> None:
        """This process's logs (router, stack) go to <state>/logs/demo.log, not the terminal."""
        if self._log_file is None:
            (self.state / "logs").mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.state / "logs" / "demo.log", "a")  # noqa: SIM115 - closed in stop()
        setup_logging(LogFormat.JSON, "info", stream=self._log_file)

    def _record_pids(self) -> None:
        processes = list(self.stack.processes.values()) if self.stack else []
        pids = {p.spec.name: p.process.pid for p in processes if p.process is not None}
        pids.update({f"predict-{i}": p.process.pid for i, p in enumerate(self.extra) if p.process})
        known = json.loads(self.pids_file.read_text()) if self.pids_file.exists() else {}
        known.update({"demo": os.getpid(), **pids})
        self.pids_file.write_text(json.dumps(known, indent=2) + "\n")

    def _settle(self, timeout: float = 300.0) -> None:
        """Wait until the router has delivered everything (e.g. the table builds that model
        promotions fired on the artifacts bucket), so the next step sees a quiet system."""
        stack = self.stack
        if stack is None or stack.router is None:
            return  # nothing started: nothing to wait for
        if not stack.router.wait_idle(timeout):
            raise DemoError(f"the stack was still busy after {timeout:g} s (see {stack.logs_dir}/)")

    def stop(self) -> None:
        """Stop every process the demo started."""
        for process in self.extra:
            process.stop()
        if self.stack is not None:
            self.stack.stop()
        if self._log_file is not None:
            setup_logging(LogFormat.JSON, "warning")  # away from the file before closing it
            self._log_file.close()
            self._log_file = None

    # --- the story -----------------------------------------------------------------------------

    def run(self) -> None:
        """Every step in order; the stack is stopped at the end, or on any error or Ctrl-C."""
        os.environ.update(self.env)  # the in-process CLI commands read the same settings
        get_settings.cache_clear()
        self.out.mkdir(parents=True, exist_ok=True)
        self._log_to_file()
        self.pids_file.write_text(json.dumps({"demo": os.getpid()}) + "\n")
        self.artifacts = LocalBucket(Path(self.env["LOCAL_BUCKETS_ROOT"]), get_settings().artifacts_bucket)
        self.data = LocalBucket(Path(self.env["LOCAL_BUCKETS_ROOT"]), get_settings().data_bucket)
        try:
            synth = self.synthesize()
            self.schema(synth)
            self.static_training(synth)
            self.stack_up()
            self.dynamic_training(synth)
            self.quarantine(synth)
            self.rollback()
            self.drift(synth)
            self.learn_traffic(synth)
            self.advise()
            self.build_table()
            self.serve(synth)
            # The feedback loop last, on a version of its own: the Zipf traffic above is not
            # distributed like the training days (every key feature would show as skewed), and
            # its flat impressions, counted in traffic/, would blur the advisor's evidence.
            self.traffic_with_ids(synth)
            # The skewed stream before the labels: with FEEDBACK_TRAINING the labels file leads
            # to a new version, which would otherwise serve the stream meant for this one.
            self.skewed_stream()
            self.labels_arrive()
            self.back_into_training()
            # The shadow last: from here the train function runs under PROMOTION_POLICY=shadow,
            # so every chapter above told its story under the offline policy.
            self.shadow_challenger()
            self.shadow_traffic()
            self.shadow_judged()
        finally:
            self.stop()

    def synthesize(self) -> SynthResult:
        """Step: write the synthetic days, the drifted last day, a corrupt file and traffic."""
        o = self.options
        with self.step("synthetic data") as s:
            synth = synthesize(
                self.state / "synth",
                days=o.days,
                rows_per_day=o.rows_per_day,
                seed=o.seed,
                drift_day=o.days,
                corrupt=True,
                traffic=o.traffic,
            )
            s["detail"] = (
                f"{o.days} days x {o.rows_per_day:,} rows (day {o.days} drifts), corrupt.csv, "
                f"{o.traffic:,} Zipf requests -> {synth.out}"
            )
        return synth

    def schema(self, synth: SynthResult) -> None:
        """Step: infer schema.json from the first day and upload it."""
        with self.step("schema (infer + upload)") as s:
            first = str(synth.day_files[0])
            self.cli("schema", "infer", first, "--label", "converted", "--key", ",".join(KEY), "--upload")
            schema = json.loads(self.artifacts.read(SCHEMA_BLOB))
            cardinality = Schema.from_dict(schema).key_cardinality
            self.facts["key_cardinality"] = cardinality
            s["detail"] = (
                f"{len(schema['features'])} features, label {schema['label']['name']!r}, "
                f"key of {len(schema['key'])} features = {cardinality:,} keys"
            )

    def static_training(self, synth: SynthResult) -> None:
        """Step: the first model, trained offline with ``prodml train``."""
        with self.step("static training") as s:
            self.cli("train", str(synth.day_files[0]))
            models = self.cli("models")
            first = models["versions"][-1]
            self.facts["first_version"] = first["version"]
            s["detail"] = (
                f"prodml train {synth.day_files[0].name}: version {first['version']} "
                f"({first['primary_metric']} {first['challenger']:.4f}, {first['training_rows']:,} rows)"
            )

    def stack_up(self) -> None:
        """Step: the functions, router and scheduler."""
        with self.step("stack up") as s:
            self.stack = LocalStack(state_dir=self.state, env=self.env)
            self.stack.start()
            self._record_pids()
            urls = self.stack.urls
            s["detail"] = (
                f"predict {urls['predict']}, train {urls['train']}, build_table {urls['build_table']}"
            )
            s["more"] = [f"drop folder: {self.stack.drop_folder}/  (logs: {self.stack.logs_dir}/)"]

    def dynamic_training(self, synth: SynthResult) -> None:
        """Step per ordinary day: copy it in; the train function trains and promotes; predict
        serves the new version."""
        assert self.stack is not None
        for day in synth.day_files[1:-1]:
            with self.step(f"drop {day.name}") as s:
                landing = drop_and_follow(self.stack, day, f"{INCOMING_PREFIX}{day.name}")
                self.landings.append(landing)
                s["detail"] = self._landing_line(landing)

    def _landing_line(self, landing: Landing) -> str:
        marker = landing.marker
        line = f"{marker.get('outcome')}"
        if marker.get("version"):
            line += f" {marker['version']}"
        if landing.served is not None:
            score = landing.served["predictions"][0]["score"]
            line += f"; predict answers {score:.3f} with it {landing.total_seconds:.1f} s after the copy"
            line += (
                f" (router {landing.router_seconds:.1f} s, training {landing.training_seconds:.1f} s, "
                f"reload {landing.reload_seconds:.1f} s)"
            )
        elif marker.get("message"):
            line += f": {marker['message']}"
        return line

    def quarantine(self, synth: SynthResult) -> None:
        """Step: the corrupt file is set aside with its reason; the model does not change."""
        assert self.stack is not None and synth.corrupt_file is not None
        with self.step("drop corrupt.csv") as s:
            before = self.cli("models")["current"]
            landing = drop_and_follow(self.stack, synth.corrupt_file, f"{INCOMING_PREFIX}corrupt.csv")
            if landing.marker.get("outcome") != EventOutcome.QUARANTINED:
                raise DemoError(f"corrupt.csv was not quarantined: {landing.marker}")
            reason = json.loads(self.data.read(f"{QUARANTINE_PREFIX}corrupt.csv{REASON_SUFFIX}"))
            after = self.cli("models")["current"]
            self.facts["quarantine"] = {"rule": reason.get("rule"), "message": reason.get("message")}
            s["detail"] = f"quarantined -> {QUARANTINE_PREFIX}corrupt.csv; the model stays {after}"
            s["more"] = [f"reason ({reason.get('rule')}): {reason.get('message')}"]
            if before != after:
                raise DemoError(f"the current model changed from {before} to {after} on a corrupt file")

    def rollback(self) -> None:
        """Step: roll back one version, see predict serve it, and roll forward again."""
        assert self.stack is not None
        with self.step("rollback and back") as s:
            url = self.stack.urls["predict"]
            back = self.cli("rollback")
            began = time.time()
            _, served_at = wait_served(url, back["current"])
            forward = self.cli("rollback", back["previous"])
            _, again_at = wait_served(url, forward["current"])
            self.facts["rollback"] = {"from": back["previous"], "to": back["current"]}
            s["detail"] = (
                f"{back['previous']} -> {back['current']} (served after {served_at - began:.1f} s) "
                f"-> {forward['current']} (served after {again_at - served_at:.1f} s)"
            )

    def traffic_with_ids(self, synth: SynthResult) -> None:
        """Step: a version trained statically on a fresh day, then impressions of another day
        served with their ids; predict logs each one."""
        assert self.stack is not None
        with self.step("traffic with ids") as s:
            url = self.stack.urls["predict"]
            fresh = loop.write_day(
                synth.out, self.options.seed, self.options.days + 1, self.options.rows_per_day
            )
            self.cli("train", str(fresh))
            trained = str(self.cli("models")["current"])
            wait_served(url, trained)
            self._advised_table()  # and its table, so hybrid answers from table and model again
            wait_for(functools.partial(_table_in_use, url), "predict to load the new table", 60)
            self.loop_impressions = loop.impressions(self.options.seed, 100, self.options.impressions, "imp")
            answers = loop.serve_with_ids(url, self.loop_impressions)
            self.loop_version = str(answers[-1]["model_version"])
            if self.loop_version != trained:
                raise DemoError(f"predict answered with {self.loop_version}, not {trained}")
            state = loop.wait_log_flushed(url)
            sources = ", ".join(
                f"{n:,} {k}" for k, n in sorted(Counter(a["source"] for a in answers).items())
            )
            s["detail"] = (
                f"prodml train {fresh.name}: {trained}; {len(answers):,} impressions (ids imp-0...) "
                f"answered by it ({sources})"
            )
            s["more"] = [
                f"predict's log: {state['flushed_rows']:,} rows in {state['flushed_objects']} objects"
            ]

    def labels_arrive(self) -> None:
        """Step: later, the outcomes of most impressions arrive as a labels file; ``prodml live``
        joins them to the log and measures each version on the traffic it served."""
        assert self.stack is not None
        with self.step("labels arrive later") as s:
            path = self.state / "synth" / "labels-imp.csv"
            rows = loop.write_labels(path, self.loop_impressions, 0.7, loop.UNKNOWN_IDS)
            landing = drop_and_follow(self.stack, path, f"{LABELS_PREFIX}{path.name}")
            if landing.marker.get("outcome") != EventOutcome.LABELS_STORED:
                raise DemoError(f"{path.name} was not stored for the join: {landing.marker}")
            self.labels_landing = landing
            report = self.cli("live")
            self.facts["live"] = loop.version_facts(report, self.loop_version)
            self.facts["live"]["unmatched_labels"] = report["labels"]["unmatched"]
            s["detail"] = f"{rows:,} labels in {LABELS_PREFIX}{path.name}; prodml live:"
            s["more"] = loop.report_lines(report)

    def skewed_stream(self) -> None:
        """Step: a stream of impressions with one feature shifted; the live report flags it."""
        assert self.stack is not None
        with self.step("skewed stream") as s:
            url = self.stack.urls["predict"]
            schema = Schema.from_dict(json.loads(self.artifacts.read(SCHEMA_BLOB)))
            stream = loop.impressions(self.options.seed, 101, self.options.impressions, "imp-shifted")
            before = loop.version_facts(self.cli("live"), self.loop_version)
            loop.serve_with_ids(url, loop.shifted(stream, schema))
            loop.wait_log_flushed(url)
            after = loop.version_facts(self.cli("live"), self.loop_version)
            self.facts["skew"] = {"feature": loop.SHIFTED_FEATURE, "before": before["skewed"], **after}
            threshold = get_settings().drift_psi_threshold
            s["detail"] = (
                f"{len(stream.ids):,} impressions with {loop.SHIFTED_FEATURE} x{loop.SHIFT_FACTOR:g} "
                f"-> {self.loop_version} {loop.skew_line(after, threshold)}"
            )
            s["more"] = [f"before this stream: {loop.skew_line(before, threshold)}"]

    def back_into_training(self) -> None:
        """Step (FEEDBACK_TRAINING): the train function wrote the labels file's matured joined rows
        into incoming/feedback/; follow that file to the version trained on it, show its lineage
        entry, and emit again: nothing new."""
        assert self.stack is not None
        with self.step("back into training") as s:
            record = loop.emission_record(self.artifacts)
            if record is None:
                why = self.labels_landing.marker.get("message")
                raise DemoError(f"the labels file led to no emission (FEEDBACK_TRAINING): {why}")
            file = str(record["file"])
            info = self.data.stat(file)  # still there: a trained file stays in incoming/
            landing = follow(self.stack, file, info.generation, info.updated.timestamp())
            outcome, version = landing.marker.get("outcome"), landing.marker.get("version")
            if outcome not in (EventOutcome.PROMOTED, EventOutcome.REJECTED) or not version:
                raise DemoError(f"{file} trained no version: {landing.marker}")
            trained = loop.trained_facts(registry.read_card(self.artifacts, str(version)), file)
            again = self.cli("feedback", "emit")
            if again["emitted"] is not None:
                raise DemoError(f"a second emission wrote rows again: {again['emitted']['file']}")
            self.facts["feedback"] = {"emission": record, "outcome": outcome, **trained, "again": again}
            window = record["window"]
            s["detail"] = (
                f"{record['by']}: {record['rows']:,} joined rows ({record['labelled']:,} labelled, "
                f"{record['defaulted']:,} defaulted) served {window['first']} to {window['last']} "
                f"-> {file}; the train function: {outcome} {version}"
            )
            if landing.total_seconds is not None:
                s["detail"] += f", served {landing.total_seconds:.1f} s after the file was written"
            s["more"] = [
                loop.lineage_line(trained["lineage"]),
                f"gate: {trained['gate']['reason']}",
                *self._warnings(file),
                loop.again_line(again),
            ]

    def _use_settings(self, settings: dict[str, str]) -> None:
        """``settings`` for this process's commands from now on (``prodml shadow status`` says the
        policy in force), as for the function started again with them."""
        self.env.update(settings)
        os.environ.update(settings)
        get_settings.cache_clear()

    def shadow_challenger(self) -> None:
        """Step (PROMOTION_POLICY=shadow): the train function is started again under the shadow
        policy; one more day passes the gate and runs in shadow beside the champion."""
        assert self.stack is not None
        with self.step("shadow challenger") as s:
            self._settle()  # the train function is idle (the last promotion's table build too)
            self.stack.reconfigure("train", shadow.SHADOW_SETTINGS)
            self._use_settings(shadow.SHADOW_SETTINGS)
            self._record_pids()
            o = self.options
            # The market has moved since the champion's days (the drift day's population): the
            # newest day holds it, the champion's files do not. Honest evidence for the shadow.
            day = loop.write_day(self.state / "synth", o.seed, o.days + 2, o.rows_per_day, drift=True)
            landing = drop_and_follow(self.stack, day, f"{INCOMING_PREFIX}{day.name}")
            marker = landing.marker
            if marker.get("outcome") != EventOutcome.SHADOW or not marker.get("version"):
                raise DemoError(f"{day.name} did not become the shadow: {marker}")
            status = self.cli("shadow", "status")
            version, champion = str(marker["version"]), str(status["current"])
            if status["running"] != version:
                raise DemoError(f"`prodml shadow status` shows {status['running']} in shadow, not {version}")
            health = shadow.wait_scored(self.stack.urls["predict"], version)
            self.shadow_run = {"version": version, "champion": champion, "file": day.name}
            self.facts["shadow"] = {**self.shadow_run, "form": status["pointer"]["form"]}
            s["detail"] = (
                f"train function started again with PROMOTION_POLICY=shadow; {day.name} (the market "
                f"moved, as on the drift day): shadow {version} beside the champion {champion}"
            )
            s["more"] = [
                f"the train function: {marker.get('message')}",
                f"prodml shadow status: running {status['running']} ({status['pointer']['form']}), "
                f"serving {champion}; predict: {health['note']}",
            ]

    def shadow_traffic(self) -> None:
        """Step: impressions with ids through predict; it answers with the champion and logs the
        shadow's score of each beside it; ``prodml shadow status`` gives the agreement per source."""
        assert self.stack is not None
        with self.step("shadow on live traffic") as s:
            url, run = self.stack.urls["predict"], self.shadow_run
            self.shadow_impressions = loop.impressions(
                self.options.seed,
                shadow.IMPRESSION_DAY,
                self.options.impressions,
                shadow.IMPRESSION_PREFIX,
                drift=True,  # today's market, as the shadow's newest day
            )
            answers = loop.serve_with_ids(url, self.shadow_impressions)
            answered = sorted({str(a["model_version"]) for a in answers})
            if answered != [run["champion"]]:
                raise DemoError(f"predict answered with {answered}, not only the champion {run['champion']}")
            loop.wait_log_flushed(url)
            comparison = self.cli("shadow", "status")["comparison"]
            agreement, live = comparison["agreement"], comparison["live"]
            self.facts["shadow"] |= {"served": len(answers), "agreement": agreement, "before_labels": live}
            s["detail"] = (
                f"{len(answers):,} impressions ({shadow.IMPRESSION_PREFIX}-0...) answered by "
                f"{run['champion']}, {agreement['all']['rows']:,} scored by the shadow too"
            )
            s["more"] = [*shadow.agreement_lines(agreement), f"live: {live['reason']}"]

    def shadow_judged(self) -> None:
        """Step: the impressions' labels arrive; the train function compares shadow and champion
        on them and decides (promoted when not worse); predict then answers with the winner."""
        assert self.stack is not None
        with self.step("shadow judged on labels") as s:
            run = self.shadow_run
            path = self.state / "synth" / f"labels-{shadow.IMPRESSION_PREFIX}.csv"
            rows = loop.write_labels(path, self.shadow_impressions, 1.0, ())
            landing = drop_and_follow(self.stack, path, f"{LABELS_PREFIX}{path.name}")
            if landing.marker.get("outcome") != EventOutcome.LABELS_STORED:
                raise DemoError(f"{path.name} was not stored for the join: {landing.marker}")
            decided = shadow.decision_facts(self.cli("shadow", "status"), run["version"])
            served = None
            if decided["promoted"]:
                served = str(wait_served(self.stack.urls["predict"], run["version"])[0]["model_version"])
            self.facts["shadow"] |= {**decided, "labels": rows, "served_after": served}
            s["detail"] = (
                f"{rows:,} labels in {LABELS_PREFIX}{path.name} -> {decided['change']}: "
                f"{shadow.live_line(decided['numbers'])}"
            )
            s["more"] = [
                f"why: {decided['reason']}",
                f"history: {' -> '.join(decided['history'])}; serving {decided['current']}",
            ]
            if served is not None:
                s["more"].append(f"predict answers with {served}")
            self._settle()  # the promotion's table build, before the summary reads the registry

    def _warnings(self, name: str) -> list[str]:
        """The test-then-train warnings of data file ``name`` (`prodml monitor`)."""
        record = next((r for r in reversed(self.cli("monitor")) if r.get("object") == name), None)
        return [f"warning: {w}" for w in (record or {}).get("warnings") or []]

    def drift(self, synth: SynthResult) -> None:
        """Step: the drifted day: monitoring flags the features whose distribution moved."""
        assert self.stack is not None and synth.drift_file is not None
        with self.step(f"drop {synth.drift_file.name} (drift)") as s:
            name = f"{INCOMING_PREFIX}{synth.drift_file.name}"
            landing = drop_and_follow(self.stack, synth.drift_file, name)
            self.landings.append(landing)
            record = next(r for r in reversed(self.cli("monitor")) if r.get("object") == name)
            drifted = {f: record["psi"][f] for f in record.get("drifted", [])}
            self.facts["drift"] = {"decision": record.get("decision"), "psi": drifted}
            shown = ", ".join(f"{f} PSI {v:.2f}" for f, v in sorted(drifted.items(), key=lambda kv: -kv[1]))
            s["detail"] = f"{record.get('decision', '?').upper()}: {shown or 'no feature drifted'}"
            s["more"] = [f"then: {self._landing_line(landing)}"]

    def learn_traffic(self, synth: SynthResult) -> None:
        """Step: the first half of the Zipf traffic through predict; its key counts reach traffic/."""
        assert self.stack is not None and synth.traffic_file is not None
        with self.step("zipf traffic") as s:
            self._settle()
            instances = [json.loads(line) for line in synth.traffic_file.read_text().splitlines()]
            half = len(instances) // 2
            self.serve_instances = instances[half:]
            run = send_traffic(self.stack.urls["predict"], instances[:half], ServingMode.HYBRID, batch=50)
            flush = float(self.env["TRAFFIC_FLUSH_SECONDS"])
            time.sleep(2 * flush + 0.5)  # predict flushes its counts every TRAFFIC_FLUSH_SECONDS
            seen = len(list(self.artifacts.list(TRAFFIC_PREFIX)))
            s["detail"] = (
                f"{run.instances:,} instances in {run.requests} requests; {seen} traffic file(s) written"
            )

    def advise(self) -> None:
        """Step: the advisor reads cardinality and peakedness and picks a serving mode."""
        with self.step("advisor") as s:
            png = self.out / "advise-coverage.png"
            advice = self.cli("advise", "--png", str(png))
            self.facts["advice"] = {
                k: advice.get(k) for k in ("recommendation", "reason", "k", "expected_hit_rate", "top_share")
            }
            self.facts["advice_png"] = str(png) if png.exists() else None
            s["detail"] = f"{advice['recommendation']} (K={advice.get('k')})"
            s["more"] = [advice.get("reason", "")]

    def build_table(self) -> None:
        """Step: the table of the advised keys, built with the current model."""
        with self.step("table build") as s:
            built = self._advised_table()
            self.facts["table"] = built
            s["detail"] = ", ".join(
                f"{k} {built[k]}" for k in ("strategy", "rows", "model_version", "seconds") if k in built
            )

    def _advised_table(self) -> Any:
        """Build the table the advisor advised for the current model; the build's summary."""
        self._settle()  # a table build fired by a promotion must not replace the advised one
        advice = self.facts.get("advice", {})
        args = ["table", "build", "--force"]
        if advice.get("recommendation") == ServingMode.HYBRID and advice.get("k"):
            args += ["--strategy", TableStrategy.TOP_K, "--k", str(advice["k"])]
        return self.cli(*args)

    def serve(self, synth: SynthResult) -> None:
        """Step: the held-out half of the traffic against predict in each serving mode."""
        assert self.stack is not None
        with self.step("serving modes") as s:
            table_model = self.facts.get("table", {}).get("model_version")
            instances = self.serve_instances[: self.options.serve_requests]
            urls = {ServingMode.HYBRID.value: self.stack.urls["predict"]}
            spec = self.stack.declaration.functions["predict"]
            for mode in (ServingMode.STATIC.value, ServingMode.DYNAMIC.value):
                env = {**self.env, "SERVING_MODE": mode}
                process = FunctionProcess(spec, free_port(), env, self.stack.logs_dir / f"predict-{mode}.log")
                self.extra.append(process)
                process.start()
                urls[mode] = process.url
            self._record_pids()
            for mode, url in urls.items():
                send_traffic(url, instances[:20], mode)  # warm up: the first request loads model and table
                if table_model and mode != ServingMode.DYNAMIC:
                    wait_for(functools.partial(_table_in_use, url), f"predict ({mode}) to load the table", 60)
                self.modes.append(send_traffic(url, instances, mode))
            s["detail"] = f"{len(instances):,} single-instance requests per mode"
            s["more"] = [
                f"{m.mode:<8} hit rate {m.hit_rate:6.1%}  misses {m.miss_rate:6.1%}  "
                f"p50 {m.median_ms:6.2f} ms  p95 {m.percentile(95):6.2f} ms"
                for m in self.modes
            ]


def _table_in_use(url: str) -> bool | None:
    """True once predict's /health says it answers from a table, else None (keep waiting)."""
    try:
        health = requests.get(f"{url}/health", timeout=10).json()
    except (requests.RequestException, ValueError):
        return None
    return True if (health.get("table") or {}).get("used") else None
