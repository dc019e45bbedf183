"""How pipelines are launched, checked without a cloud: Beam's own option classes and Dataflow
validator accept the arguments (in the Beam venv), the Flex Template declares every parameter the
entry point takes, and the launch request carries the settings that parse back to the caller's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings
from shared.contracts import BuildPath
from shared.errors import ConfigError
from shared.pipelines.decide import decide, decide_for_model, planned_rows
from shared.pipelines.options import (
    TEMPLATE_PARAMETERS,
    beam_args,
    flex_launch_request,
    job_name,
    pipeline_python,
    settings_env,
    template_spec,
)
from shared.pipelines.run import parse_args

DATAFLOW_ENV = {
    "STORAGE_BACKEND": "gcs",
    "DATA_BUCKET": "acme-prodml-data",
    "ARTIFACTS_BUCKET": "acme-prodml-artifacts",
    "DATAFLOW_PROJECT": "acme-ml",
    "DATAFLOW_REGION": "europe-west1",
    "DATAFLOW_TEMP_LOCATION": "gs://acme-prodml-dataflow/tmp",
    "DATAFLOW_SERVICE_ACCOUNT": "prodml-dataflow@acme-ml.iam.gserviceaccount.com",
    "DATAFLOW_TEMPLATE": "gs://acme-prodml-dataflow/templates/pipelines.json",
    "DATAFLOW_MAX_WORKERS": "25",
}

# Run in the Beam venv: parse the arguments with Beam's option classes, then let Beam's own
# validator check them as DataflowRunner would before submitting a job. Beam's --dry_run only
# skips the one step that calls GCS (a soft-delete warning on the temp bucket).
BEAM_CHECK = """
import json, sys
from apache_beam.options.pipeline_options import PipelineOptions, GoogleCloudOptions, WorkerOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
options = PipelineOptions(json.loads(sys.argv[1]) + ["--dry_run=True"])
gcp, workers = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
errors = PipelineOptionsValidator(options, DataflowRunner()).validate()
print(json.dumps({
    "runner": options.view_as(StandardOptions).runner, "project": gcp.project, "region": gcp.region,
    "temp_location": gcp.temp_location, "staging_location": gcp.staging_location,
    "service_account_email": gcp.service_account_email, "job_name": gcp.job_name,
    "max_num_workers": workers.max_num_workers, "machine_type": workers.machine_type,
    "sdk_container_image": workers.sdk_container_image, "errors": errors,
}))
"""


def _dataflow_settings(**overrides: str) -> Settings:
    return load_settings({**DATAFLOW_ENV, **overrides})


def test_dataflow_arguments_pass_beams_own_dataflow_validation() -> None:
    settings = _dataflow_settings()
    python = pipeline_python(settings)
    if not python.exists():
        pytest.skip(f"no Beam interpreter at {python}: `make venv-beam` creates it")
    image = "europe-west1-docker.pkg.dev/acme-ml/prodml-pipelines/pipelines:2.77.0"
    args = beam_args(BuildPath.DATAFLOW, settings, run_id="Run_42", pipeline="table", image=image)
    done = subprocess.run(
        [str(python), "-c", BEAM_CHECK, json.dumps(args)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == []
    assert parsed == {
        "runner": "DataflowRunner",
        "project": "acme-ml",
        "region": "europe-west1",
        "temp_location": "gs://acme-prodml-dataflow/tmp",
        "staging_location": "gs://acme-prodml-dataflow/tmp/staging",
        "service_account_email": "prodml-dataflow@acme-ml.iam.gserviceaccount.com",
        "job_name": "prodml-table-run-42",
        "max_num_workers": 25,
        "machine_type": "n2-standard-4",
        "sdk_container_image": image,
        "errors": [],
    }


def test_the_launch_request_names_the_template_and_carries_the_callers_settings() -> None:
    settings = _dataflow_settings()
    body = flex_launch_request(settings, pipeline="table", run_id="abc123", parameters={"strategy": "full"})
    launch = body["launchParameter"]
    assert body["validateOnly"] is False
    assert launch["jobName"] == "prodml-table-abc123"
    assert launch["containerSpecGcsPath"] == "gs://acme-prodml-dataflow/templates/pipelines.json"
    assert launch["environment"]["serviceAccountEmail"] == "prodml-dataflow@acme-ml.iam.gserviceaccount.com"
    assert launch["environment"]["tempLocation"] == "gs://acme-prodml-dataflow/tmp"
    assert launch["environment"]["maxWorkers"] == 25
    params = launch["parameters"]
    assert all(isinstance(v, str) for v in params.values())  # the API takes a map of strings
    assert load_settings(json.loads(params["settings_json"])) == settings  # workers see what we see
    # The template's entry point accepts exactly these parameters as its own arguments.
    args, beam_rest = parse_args([f"--{k}={v}" for k, v in params.items()])
    assert (
        beam_rest == [] and args.pipeline == "table" and args.strategy == "full" and args.run_id == "abc123"
    )


def test_the_template_declares_every_parameter_of_the_entry_point() -> None:
    spec = template_spec("europe-west1-docker.pkg.dev/acme-ml/prodml/pipelines:2.77.0")
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    declared = {p["name"]: p for p in spec["metadata"]["parameters"]}
    assert set(declared) == {p["name"] for p in TEMPLATE_PARAMETERS}
    assert not declared["pipeline"]["isOptional"] and declared["strategy"]["isOptional"]
    # every declared parameter is an argument of shared.pipelines.run (none falls through to Beam)
    sample = {"pipeline": "validate", "strategy": "top_k", "k": "5", "force": "true", "shards": "3"}
    argv = [f"--{n}={sample.get(n, 'x')}" for n in declared]
    args, rest = parse_args(argv)
    assert rest == [] and args.objects == "x" and args.k == 5 and args.shards == 3
    with pytest.raises(ConfigError, match="image"):
        template_spec("not an image")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"DATAFLOW_PROJECT": ""}, "DATAFLOW_PROJECT is empty"),
        ({"DATAFLOW_TEMP_LOCATION": "/tmp/x"}, "DATAFLOW_TEMP_LOCATION='/tmp/x' must be a gs:// folder"),
        ({"DATAFLOW_REGION": "europe"}, "DATAFLOW_REGION='europe'"),
        ({"DATAFLOW_SERVICE_ACCOUNT": "someone@gmail.com"}, "DATAFLOW_SERVICE_ACCOUNT='someone@gmail.com'"),
        ({"DATAFLOW_TEMPLATE": "gs://b/spec.yaml"}, "DATAFLOW_TEMPLATE='gs://b/spec.yaml'"),
    ],
)
def test_a_dataflow_configuration_that_cannot_work_is_refused_naming_the_setting(
    override: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        flex_launch_request(_dataflow_settings(**override), pipeline="validate", run_id="r", parameters={})


def test_settings_travel_to_a_pipeline_and_parse_back_to_the_same() -> None:
    settings = load_settings(
        {"MODEL_TRUSTED_TYPES": "a.B, c.D", "MAX_ROWS": "77", "LOCAL_BUCKETS_ROOT": "/x"}
    )
    assert load_settings(settings_env(settings)) == settings
    assert job_name("validate", "Backfill_2026.11") == "prodml-validate-backfill-2026-11"
    assert len(job_name("table", "x" * 100)) <= 63
    direct = beam_args(
        BuildPath.DIRECT, load_settings({"PIPELINE_DIRECT_WORKERS": "2"}), run_id="r", pipeline="table"
    )
    assert direct == [
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_threading",
    ]


# --- who decides --------------------------------------------------------------------------------


def test_a_build_within_the_budget_stays_in_the_function_and_says_why() -> None:
    settings = load_settings({"TABLE_MAX_ROWS": "1000", "TABLE_FUNCTION_BUDGET_SECONDS": "10"})
    decision = decide(800, 1000.0, settings, strategy="full")
    assert decision.path == BuildPath.FUNCTION
    assert "800 keys at 1,000 keys/s measured is about 0.8 s" in decision.reason


@pytest.mark.parametrize(("backend", "runner"), [("local", BuildPath.DIRECT), ("gcs", BuildPath.DATAFLOW)])
def test_too_many_keys_or_too_many_seconds_go_to_the_pipeline_of_the_backend(
    backend: str, runner: str
) -> None:
    settings = load_settings(
        {"STORAGE_BACKEND": backend, "TABLE_MAX_ROWS": "1000", "TABLE_FUNCTION_BUDGET_SECONDS": "10"}
    )
    too_many = decide(1001, 1e6, settings, strategy="full")
    assert too_many.path == runner and "over TABLE_MAX_ROWS=1,000" in too_many.reason
    too_slow = decide(900, 50.0, settings, strategy="full")
    assert (
        too_slow.path == runner and "about 18.0 s, over TABLE_FUNCTION_BUDGET_SECONDS=10" in too_slow.reason
    )
    forced = decide(10, 1e6, load_settings({"PIPELINE_RUNNER": "direct"}), strategy="full")
    assert forced.path == BuildPath.DIRECT and "direct asked for" in forced.reason
    assert decide(10**9, 1e6, settings, strategy="full", runner="function").path == BuildPath.FUNCTION


def test_the_decision_measures_the_real_models_rate(table_bundle) -> None:
    settings = load_settings({"TABLE_MAX_ROWS": "100"})  # the 360-key table no longer fits
    assert planned_rows(table_bundle, settings, "auto", None) == ("full", 360)
    decision = decide_for_model(table_bundle, settings)
    assert decision.path == BuildPath.DIRECT and decision.rows == 360
    assert decision.rows_per_second is not None and decision.rows_per_second > 0
    assert decision.line().startswith("table build as a Beam pipeline (direct runner): 360 keys at ")
    functional = load_settings({"TABLE_MAX_ROWS": "100", "PIPELINE_RUNNER": "function", "TABLE_TOP_K": "50"})
    assert planned_rows(table_bundle, functional, "auto", None) == ("top_k", 50)


def test_the_template_command_writes_the_spec(tmp_path: Path) -> None:
    from shared.cli import main

    out = tmp_path / "spec.json"
    assert main(["pipeline", "template", "--image", "example.com/prodml/pipelines:1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["image"] == "example.com/prodml/pipelines:1"


def test_the_dataflow_module_grants_little_and_gives_build_table_what_a_launch_needs() -> None:
    hcl2 = pytest.importorskip("hcl2")
    from hcl2 import SerializationOptions

    repo = Path(__file__).resolve().parents[2]
    options = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    with (repo / "infra" / "dataflow" / "main.tf").open() as handle:
        module = hcl2.load(handle, serialization_options=options)
    outputs = {name: body for block in module["output"] for name, body in block.items()}
    env = outputs["env"]["value"]
    assert set(env) <= set(settings_env(load_settings({})))  # every key is a real setting
    # ... and with them (and the buckets the functions already have) a launch request can be made.
    assert {"DATAFLOW_PROJECT", "DATAFLOW_REGION", "DATAFLOW_TEMP_LOCATION", "DATAFLOW_TEMPLATE"} <= set(env)
    resources: dict[str, dict[str, Any]] = {}
    for block in module["resource"]:
        for rtype, named_bodies in block.items():
            resources.setdefault(rtype, {}).update(named_bodies)
    project_roles = sorted(body["role"] for body in resources["google_project_iam_member"].values())
    assert project_roles == ["roles/dataflow.developer", "roles/dataflow.worker"]
    assert resources["google_storage_bucket_object"]["template"]["name"].endswith(".json")
    grants = resources["google_storage_bucket_iam_member"]
    # The join pipeline reads the prediction log and rewrites the live report, and no more of feedback/.
    assert grants["worker_read_predictions"]["role"] == "roles/storage.objectViewer"
    assert grants["worker_read_predictions"]["bucket"] == "${var.predictions_bucket}"
    expression = grants["worker_write_tables"]["condition"][0]["expression"]
    assert 'resource.name == "${local.artifacts_objects}feedback/live.json"' in expression
    assert "feedback/" not in expression.replace("feedback/live.json", "")
    dockerfile = (repo / "infra" / "dataflow" / "Dockerfile").read_text()
    entry = dockerfile.split("FLEX_TEMPLATE_PYTHON_PY_FILE=/template/", 1)[1].split()[0]
    assert (repo / entry).is_file() and entry == "shared/pipelines/run.py"
    assert "apache/beam_python3.11_sdk:2.77.0" in dockerfile  # the Beam of requirements-beam.txt
    assert "apache-beam[gcp]==2.77.0" in (repo / "requirements-beam.txt").read_text()
