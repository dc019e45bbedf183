"""How a pipeline is started: Beam arguments, the settings it carries, the Dataflow launch request.

Everything here is plain data built from ``Settings``, with no Beam import, so that a function
(which has no Beam) can launch a Dataflow job and a test can check every argument without a
cloud:

- ``settings_env``: a ``Settings`` as the environment variables that parse back to it. A pipeline
  gets them as its ``--settings_json`` argument (workers do not inherit the launcher's
  environment), so it sees the buckets, limits and policies of whoever launched it.
- ``beam_args``: the Beam command-line options of a run on ``direct`` (DirectRunner) or
  ``dataflow`` (DataflowRunner: project, region, temp and staging locations, the workers'
  service account, machine type, autoscaling cap, and the container image the workers run).
- ``template_spec``: the Flex Template spec (``gcloud dataflow flex-template build`` writes the
  same JSON) naming the image and declaring the parameters a launch may pass.
- ``flex_launch_request``: the body of ``projects.locations.flexTemplates.launch`` (Dataflow REST
  API v1b3) that starts a pipeline from that template.

``check_dataflow`` refuses a Dataflow configuration that cannot work (no project, a temp location
that is not ``gs://``, ...) before anything is sent, naming the setting and its value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import SETTINGS, Settings
from shared.contracts import Pipeline, Runner, StorageBackend
from shared.errors import ConfigError

# Dataflow job names: lowercase letters, digits and '-', starting with a letter, at most 63.
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_SERVICE_ACCOUNT = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]@[-a-z0-9.]+\.iam\.gserviceaccount\.com$")
REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository (or the unpacked function source) holding ``shared/``."""

# The parameters of the Flex Template: what ``shared.pipelines.run`` accepts, for every pipeline.
TEMPLATE_PARAMETERS: tuple[dict[str, Any], ...] = (
    {
        "name": "pipeline",
        "label": "Pipeline",
        "helpText": "table (build the static prediction table), validate (bulk validation) or join "
        "(the prediction log joined with the labels)",
        "regexes": ["^(table|validate|join)$"],
    },
    {
        "name": "settings_json",
        "label": "Settings",
        "helpText": "JSON object of prodml environment variables (buckets, limits, policies)",
    },
    {
        "name": "strategy",
        "label": "Table strategy",
        "helpText": "table: auto, full or top_k",
        "isOptional": True,
        "regexes": ["^(auto|full|top_k)$"],
    },
    {"name": "k", "label": "Top K", "helpText": "table: keys of a top_k build", "isOptional": True},
    {
        "name": "force",
        "label": "Force",
        "helpText": "table: rebuild even when the current table is this model's",
        "isOptional": True,
        "regexes": ["^(true|false)$"],
    },
    {
        "name": "objects",
        "label": "Data objects",
        "helpText": "validate: comma-separated object names or prefixes (ending in /) of the data bucket",
        "isOptional": True,
    },
    {
        "name": "shards",
        "label": "Id shards",
        "helpText": "join: shards the prediction ids are spread over (default: by the stored size)",
        "isOptional": True,
        "regexes": ["^[1-9][0-9]{0,3}$"],
    },
    {"name": "run_id", "label": "Run id", "helpText": "names the run's temporary files", "isOptional": True},
)


@dataclass(frozen=True)
class DataflowConfig:
    """Where and as whom a Dataflow job runs (from the ``DATAFLOW_*`` settings)."""

    project: str
    region: str
    temp_location: str
    service_account: str
    template: str
    max_workers: int
    machine_type: str

    @property
    def staging_location(self) -> str:
        """Staging files go beside the temp files."""
        return self.temp_location.rstrip("/") + "/staging"

    @classmethod
    def from_settings(cls, settings: Settings) -> DataflowConfig:
        """The Dataflow part of ``settings``."""
        return cls(
            project=settings.dataflow_project,
            region=settings.dataflow_region,
            temp_location=settings.dataflow_temp_location,
            service_account=settings.dataflow_service_account,
            template=settings.dataflow_template,
            max_workers=settings.dataflow_max_workers,
            machine_type=settings.dataflow_machine_type,
        )


def check_dataflow(config: DataflowConfig, *, need_template: bool = False) -> None:
    """Refuse a configuration Dataflow would reject; ``ConfigError`` names the setting and value."""
    if not config.project:
        raise ConfigError("DATAFLOW_PROJECT is empty: set the GCP project Dataflow jobs run in")
    if not _REGION.match(config.region):
        raise ConfigError(f"DATAFLOW_REGION={config.region!r} is not a region such as us-central1")
    if not config.temp_location.startswith("gs://") or len(config.temp_location) <= len("gs://"):
        raise ConfigError(
            f"DATAFLOW_TEMP_LOCATION={config.temp_location!r} must be a gs:// folder (Dataflow stages there)"
        )
    if config.service_account and not _SERVICE_ACCOUNT.match(config.service_account):
        raise ConfigError(
            f"DATAFLOW_SERVICE_ACCOUNT={config.service_account!r} is not a service account email "
            "(NAME@PROJECT.iam.gserviceaccount.com)"
        )
    if need_template and not (config.template.startswith("gs://") and config.template.endswith(".json")):
        raise ConfigError(
            f"DATAFLOW_TEMPLATE={config.template!r} must be the gs://.../*.json Flex Template spec "
            "(terraform output dataflow_template)"
        )


def job_name(pipeline: str, run_id: str) -> str:
    """A valid Dataflow job name for a run: ``prodml-<pipeline>-<run id>``, cut to 63 characters."""
    raw = f"prodml-{pipeline}-{run_id}".lower()
    name = re.sub(r"[^-a-z0-9]+", "-", raw).strip("-")[:63].rstrip("-")
    if not _JOB_NAME.match(name):  # pragma: no cover - the prefix makes it start with a letter
        raise ConfigError(f"cannot make a Dataflow job name from {raw!r}")
    return name


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that ``load_settings`` parses back into ``settings``."""
    out: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(settings, setting.env.lower())
        if isinstance(value, tuple):
            out[setting.env] = ",".join(value)
        elif isinstance(value, Path):
            out[setting.env] = str(value)
        else:
            out[setting.env] = str(value)
    return out


def settings_json(settings: Settings, overrides: Mapping[str, str] | None = None) -> str:
    """``settings_env`` as compact JSON: the ``--settings_json`` argument of a pipeline."""
    env = settings_env(settings)
    if settings.storage_backend == StorageBackend.LOCAL:
        # A pipeline runs in another process (and working directory): give it an absolute root.
        env["LOCAL_BUCKETS_ROOT"] = str(Path(env["LOCAL_BUCKETS_ROOT"]).resolve())
    env.update(overrides or {})
    return json.dumps(env, separators=(",", ":"), sort_keys=True)


def beam_args(
    runner: str, settings: Settings, *, run_id: str, pipeline: str, temp_location: str = "", image: str = ""
) -> list[str]:
    """The Beam options of one run, as ``--name=value`` arguments.

    ``direct``: DirectRunner with ``PIPELINE_DIRECT_WORKERS`` workers (several run as threads of
    one process). ``dataflow``: the
    options DataflowRunner needs, from the ``DATAFLOW_*`` settings (checked first); ``image`` is
    the pipelines' container image (infra/dataflow/Dockerfile) the workers run, which holds
    ``shared`` and the pinned libraries (a Flex Template launch sets it from the template).
    """
    if runner == Runner.DIRECT:
        args = ["--runner=DirectRunner", f"--direct_num_workers={settings.pipeline_direct_workers}"]
        if settings.pipeline_direct_workers > 1:
            args.append("--direct_running_mode=multi_threading")
        if temp_location:
            args.append(f"--temp_location={temp_location}")
        return args
    if runner != Runner.DATAFLOW:
        raise ConfigError(f"runner {runner!r} is not one of {', '.join(Runner)}")
    config = DataflowConfig.from_settings(settings)
    check_dataflow(config)
    args = [
        "--runner=DataflowRunner",
        f"--project={config.project}",
        f"--region={config.region}",
        f"--temp_location={temp_location or config.temp_location}",
        f"--staging_location={config.staging_location}",
        f"--job_name={job_name(pipeline, run_id)}",
        f"--max_num_workers={config.max_workers}",
        "--autoscaling_algorithm=THROUGHPUT_BASED",
        f"--machine_type={config.machine_type}",
        "--experiments=use_runner_v2",
    ]
    if image:
        # The workers run the pipelines' image: Beam, the pinned libraries and shared/ installed.
        args += [f"--sdk_container_image={image}", "--sdk_location=container"]
    if config.service_account:
        args.append(f"--service_account_email={config.service_account}")
    return args


def template_spec(image: str, *, description: str = "") -> dict[str, Any]:
    """The Flex Template spec of the pipelines' image (what ``DATAFLOW_TEMPLATE`` points to)."""
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"template image {image!r} must be a container image reference")
    return {
        "image": image,
        "sdkInfo": {"language": "PYTHON"},
        "metadata": {
            "name": "prodml pipelines",
            "description": description
            or "prodml-functions scale-out: the static table build, bulk data validation and the feedback "
            "join (Apache Beam)",
            "parameters": [dict(p, isOptional=p.get("isOptional", False)) for p in TEMPLATE_PARAMETERS],
        },
        "defaultEnvironment": {},
    }


def flex_launch_request(
    settings: Settings,
    *,
    pipeline: str,
    run_id: str,
    parameters: Mapping[str, str],
    validate_only: bool = False,
) -> dict[str, Any]:
    """The ``flexTemplates.launch`` body that starts ``pipeline`` from ``DATAFLOW_TEMPLATE``.

    ``parameters`` are the pipeline's own (``strategy``, ``objects``, ...); ``pipeline``,
    ``run_id`` and ``settings_json`` are added here. Every name must be declared by the template.
    """
    if pipeline not in tuple(Pipeline):
        raise ConfigError(f"pipeline {pipeline!r} is not one of {', '.join(Pipeline)}")
    config = DataflowConfig.from_settings(settings)
    check_dataflow(config, need_template=True)
    declared = {p["name"] for p in TEMPLATE_PARAMETERS}
    full = {
        "pipeline": pipeline,
        "run_id": run_id,
        "settings_json": settings_json(settings, {"STORAGE_BACKEND": StorageBackend.GCS}),
        **parameters,
    }
    unknown = sorted(set(full) - declared)
    if unknown:
        raise ConfigError(f"parameters {unknown} are not declared by the Flex Template ({sorted(declared)})")
    environment: dict[str, Any] = {
        "tempLocation": config.temp_location,
        "stagingLocation": config.staging_location,
        "maxWorkers": config.max_workers,
        "machineType": config.machine_type,
        "autoscalingAlgorithm": "AUTOSCALING_ALGORITHM_BASIC",  # the REST name of THROUGHPUT_BASED
        "additionalUserLabels": {"app": "prodml", "pipeline": pipeline},
    }
    if config.service_account:
        environment["serviceAccountEmail"] = config.service_account
    return {
        "launchParameter": {
            "jobName": job_name(pipeline, run_id),
            "containerSpecGcsPath": config.template,
            "parameters": {k: str(v) for k, v in full.items()},
            "environment": environment,
        },
        "validateOnly": validate_only,
    }


def launch_url(settings: Settings) -> str:
    """The REST endpoint of ``flexTemplates.launch`` for the configured project and region."""
    return (
        "https://dataflow.googleapis.com/v1b3/projects/"
        f"{settings.dataflow_project}/locations/{settings.dataflow_region}/flexTemplates:launch"
    )


def pipeline_python(settings: Settings) -> Path:
    """The interpreter with apache-beam (``PIPELINE_PYTHON``; relative paths from the repo root)."""
    path = settings.pipeline_python
    return path if path.is_absolute() else REPO_ROOT / path
