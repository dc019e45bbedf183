"""Starting a pipeline: a DirectRunner subprocess here, a Dataflow Flex Template job on GCP.

``build_table_routed`` is the table build with the choice of ``shared.pipelines.decide`` in
front: the function (or ``prodml table build``) calls it, and it either runs the in-function
builder or starts the pipeline, and returns what happened together with the decision.

- **direct**: ``PIPELINE_PYTHON -m shared.pipelines.run ...`` (the Beam venv, ``make
  venv-beam``), waited for; its last stdout line is the result JSON. The caller's settings travel
  as ``--settings_json``, so the subprocess sees the same buckets and limits.
- **dataflow**: a ``flexTemplates.launch`` request (``options.flex_launch_request``) sent with the
  function's own credentials (google-auth, already a dependency of google-cloud-storage); the
  job writes the table and switches the pointer itself. ``dry_run`` returns the request instead
  of sending it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.compiled.current import load_current
from shared.config import Settings
from shared.contracts import (
    RUNNER_AUTO,
    BuildStatus,
    LaunchStatus,
    Pipeline,
    Runner,
    TableStrategy,
)
from shared.errors import ConfigError, NotFound, PipelineFailed, ProdMLError
from shared.logs import get_logger
from shared.pipelines.decide import Decision, decide_for_model, planned_rows
from shared.pipelines.options import (
    REPO_ROOT,
    beam_args,
    flex_launch_request,
    launch_url,
    pipeline_python,
    settings_json,
)
from shared.scoring import Scorer
from shared.storage import Bucket
from shared.tables.build import build_table
from shared.tables.format import read_pointer
from shared.tables.plan import BuildRequest, holds_build, newest_traffic
from shared.tables.result import BuildResult, skipped_result

log = get_logger(__name__)

LAUNCH_TIMEOUT_SECONDS = 60.0


@dataclass
class RoutedBuild:
    """A table build and where it ran: the decision, and the builder's or the pipeline's result."""

    decision: Decision | None
    result: dict[str, Any]
    launch: dict[str, Any] = field(default_factory=dict)  # the Dataflow request (dry runs, logs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form: the result with the decision beside it."""
        out = {**self.result, "path": self.decision.to_dict() if self.decision else None}
        if self.launch:
            out["launch"] = self.launch
        return out


def new_run_id() -> str:
    """A short unique id naming a run's temporary files and its Dataflow job."""
    return uuid.uuid4().hex[:12]


def run_direct(settings: Settings, pipeline: str, parameters: Mapping[str, str]) -> dict[str, Any]:
    """Run ``pipeline`` on the DirectRunner in the Beam interpreter; return its result JSON.

    The subprocess's log goes to this process's stderr; ``PipelineFailed`` if it exits non-zero.
    """
    python = pipeline_python(settings)
    if not python.exists():
        raise ConfigError(
            f"PIPELINE_PYTHON={settings.pipeline_python} does not exist ({python}): run `make venv-beam` "
            "or point PIPELINE_PYTHON at an interpreter with apache-beam"
        )
    run_id = parameters.get("run_id") or new_run_id()
    argv = [
        str(python),
        "-m",
        "shared.pipelines.run",
        f"--pipeline={pipeline}",
        f"--run_id={run_id}",
        f"--settings_json={settings_json(settings)}",
        *(f"--{name}={value}" for name, value in parameters.items() if name != "run_id"),
        *beam_args(Runner.DIRECT, settings, run_id=run_id, pipeline=pipeline),
    ]
    log.info(f"starting the {pipeline} pipeline on the DirectRunner", extra={"fields": {"run_id": run_id}})
    # Forward the pipeline's log as it comes (a long build shows progress), keeping its end for
    # the error message; the result goes to a file, so a big report cannot fill a pipe.
    with (
        tempfile.TemporaryFile(mode="w+") as result_file,
        subprocess.Popen(argv, cwd=REPO_ROOT, stdout=result_file, stderr=subprocess.PIPE, text=True) as proc,
    ):
        assert proc.stderr is not None
        tail: deque[str] = deque(maxlen=3)
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
        code = proc.wait()
        result_file.seek(0)
        stdout = result_file.read()
    if code != 0:
        raise PipelineFailed(f"{pipeline} pipeline (run {run_id}) exited {code}: {' | '.join(tail)}")
    lines = stdout.strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (IndexError, ValueError):
        raise PipelineFailed(
            f"{pipeline} pipeline (run {run_id}) printed no result: {stdout[-500:]!r}"
        ) from None


def launch_dataflow(
    settings: Settings, pipeline: str, parameters: Mapping[str, str], *, dry_run: bool = False
) -> dict[str, Any]:
    """Start ``pipeline`` as a Dataflow Flex Template job; with ``dry_run``, only build the request."""
    run_id = parameters.get("run_id") or new_run_id()
    own = {k: v for k, v in parameters.items() if k != "run_id"}
    body = flex_launch_request(settings, pipeline=pipeline, run_id=run_id, parameters=own)
    url = launch_url(settings)
    if dry_run:
        return {"status": LaunchStatus.DRY_RUN, "url": url, "request": body}
    import google.auth  # a dependency of google-cloud-storage; only needed on GCP
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    response = AuthorizedSession(credentials).post(url, json=body, timeout=LAUNCH_TIMEOUT_SECONDS)
    if response.status_code >= 400:
        raise PipelineFailed(
            f"Dataflow refused to launch {body['launchParameter']['jobName']}: HTTP {response.status_code} "
            f"{response.text[:500]}"
        )
    job = response.json().get("job", {})
    log.info(
        f"launched Dataflow job {job.get('name')} ({job.get('id')}) for the {pipeline} pipeline",
        extra={"fields": {"run_id": run_id, "job_id": job.get("id")}},
    )
    return {
        "status": LaunchStatus.LAUNCHED,
        "message": f"Dataflow job {job.get('name')} ({job.get('id')}) launched",
        "job_id": job.get("id"),
        "run_id": run_id,
    }


def start(
    settings: Settings, runner: str, pipeline: str, parameters: Mapping[str, str], *, dry_run: bool = False
) -> dict[str, Any]:
    """Run (direct) or launch (dataflow) ``pipeline`` with its parameters."""
    if runner == Runner.DIRECT:
        return run_direct(settings, pipeline, parameters)
    if runner == Runner.DATAFLOW:
        return launch_dataflow(settings, pipeline, parameters, dry_run=dry_run)
    raise ConfigError(f"runner {runner!r} is not {Runner.DIRECT} or {Runner.DATAFLOW}")


def table_parameters(request: BuildRequest) -> dict[str, str]:
    """A build request as pipeline parameters."""
    params = {"strategy": request.strategy, "force": "true" if request.force else "false"}
    if request.k is not None:
        params["k"] = str(request.k)
    return params


def already_current(
    artifacts: Bucket, settings: Settings, bundle: Scorer, generation: int, request: BuildRequest
) -> BuildResult | None:
    """The skip answer when the pointer already holds what ``request`` would build, else None.

    The builders' own same-build check (``shared.tables.plan.is_same_build``), from the request alone:
    the strategy as routing resolves it (``planned_rows``), K, and for top_k the newest traffic
    object; no traffic counts read, no rate measured. A miss here costs nothing: the builder that
    runs checks again with its full plan.
    """
    pointer, _ = read_pointer(artifacts)
    if pointer is None or pointer.get("model_generation") != generation:
        return None  # the common case after a promotion: one read, nothing listed
    strategy, _ = planned_rows(bundle, settings, request.strategy, request.k)
    k = (
        None
        if strategy == TableStrategy.FULL
        else min(request.k or settings.table_top_k, settings.pipeline_max_rows)
    )
    through = newest_traffic(artifacts) if strategy == TableStrategy.TOP_K else None
    if not holds_build(pointer, generation, strategy, k, through):
        return None
    return skipped_result(pointer, generation, strategy, bundle.version)


def build_table_routed(
    artifacts: Bucket,
    settings: Settings,
    request: BuildRequest | None = None,
    *,
    runner: str = RUNNER_AUTO,
    dry_run: bool = False,
) -> RoutedBuild:
    """Decide where the table build runs (``decide``), run it there, return both.

    No model yet, or a model that cannot load: the in-function builder says so, as it always has.
    A table already current (``already_current``) is answered before anything is measured or
    started (no decision: ``path`` is None).
    """
    request = request or BuildRequest()
    try:
        loaded = load_current(artifacts, settings)  # the form predict serves: its cost decides
        bundle, info = loaded.scorer, loaded.info
    except (NotFound, ProdMLError):
        return RoutedBuild(None, build_table(artifacts, settings, request).to_dict())
    if not bundle.schema.key:
        result = BuildResult(
            BuildStatus.NOTHING_TO_BUILD, "the model's schema has no key features: there is no table to build"
        )
        return RoutedBuild(None, result.to_dict())
    if not request.force:
        current = already_current(artifacts, settings, bundle, info.generation, request)
        if current is not None:
            log.info(f"table build skipped: {current.message}")
            return RoutedBuild(None, current.to_dict())
    decision = decide_for_model(bundle, settings, strategy=request.strategy, k=request.k, runner=runner)
    log.info(decision.line(), extra={"fields": decision.to_dict()})
    if decision.in_function:
        return RoutedBuild(decision, build_table(artifacts, settings, request).to_dict())
    outcome = start(settings, decision.path, Pipeline.TABLE, table_parameters(request), dry_run=dry_run)
    launch = outcome.pop("request", None)
    return RoutedBuild(decision, outcome, {"request": launch} if launch else {})
