"""The Terraform in infra/: it parses, and it deploys what infra/functions.json and
shared/config.py declare (functions, entry points, triggers, schedules, env vars), privately.

Two levels: every file is parsed with python-hcl2 and its structure checked; and where a
terraform binary is on the machine, the resource-free part (variables.tf + locals.tf, which
compute everything from the declaration) is evaluated by real Terraform, offline (it needs no
provider), and its values checked. `terraform validate` needs the google provider, which
cannot be downloaded here, so it is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from shared.config import SETTINGS, load_settings

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
DECLARATION = json.loads((INFRA / "functions.json").read_text())
SETTING_NAMES = {s.env for s in SETTINGS}
# Settings that only mean something on a developer's machine.
LOCAL_ONLY = {
    s.env
    for s in SETTINGS
    if s.env.endswith("_PORT")
    or s.env.startswith(("LOCAL_", "ROUTER_"))
    or s.env in {"SCHEDULE_SECONDS", "PIPELINE_PYTHON", "PIPELINE_DIRECT_WORKERS"}
    or s.env == "TRAIN_CRASH_FILE"  # a test hook: deployed, it could kill the trainer at will
}
OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary on this machine")


def parse(path: Path) -> dict[str, Any]:
    """One HCL file as python-hcl2 reads it (string quotes stripped, no comments)."""
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=OPTIONS)


@pytest.fixture(scope="module")
def tf() -> dict[str, dict[str, Any]]:
    """Every infra/*.tf file, parsed, by file name."""
    return {path.name: parse(path) for path in sorted(INFRA.glob("*.tf"))}


def blocks(tf: dict[str, dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [block for parsed in tf.values() for block in parsed.get(kind, [])]


def resources(tf: dict[str, dict[str, Any]], rtype: str) -> dict[str, dict[str, Any]]:
    """Name -> body of every resource of type ``rtype``."""
    found: dict[str, dict[str, Any]] = {}
    for block in blocks(tf, "resource"):
        found.update(block.get(rtype, {}))
    return found


def locals_(tf: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in blocks(tf, "locals"):
        merged.update(block)
    return merged


def named(tf: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Name -> body of every ``variable`` or ``output`` block."""
    return {name: body for block in blocks(tf, kind) for name, body in block.items()}


# --- parse level -------------------------------------------------------------------------------


def test_every_terraform_file_parses(tf: dict[str, dict[str, Any]]) -> None:
    stems = ["versions", "variables", "locals", "main", "buckets", "iam", "functions", "scheduler", "outputs"]
    expected = {f"{stem}.tf" for stem in stems}
    assert expected <= set(tf)
    assert all(parsed for parsed in tf.values())
    example = parse(INFRA / "terraform.tfvars.example")
    assert example["project_id"]


def test_google_provider_is_pinned_exactly(tf: dict[str, dict[str, Any]]) -> None:
    (terraform,) = tf["versions.tf"]["terraform"]
    (providers,) = terraform["required_providers"]
    assert providers["google"]["source"] == "hashicorp/google"
    assert re.fullmatch(r"\d+\.\d+\.\d+", providers["google"]["version"])


def test_every_variable_and_output_is_described(tf: dict[str, dict[str, Any]]) -> None:
    variables, outputs = named(tf, "variable"), named(tf, "output")
    assert not [n for n, body in variables.items() if len(body.get("description", "")) < 20]
    assert not [n for n, body in outputs.items() if len(body.get("description", "")) < 20]
    assert {"predict_url", "data_bucket", "artifacts_bucket"} <= set(outputs)
    assert variables["public_predict"]["default"] is False


def test_functions_triggers_and_schedules_come_from_the_declaration(tf: dict[str, dict[str, Any]]) -> None:
    local = locals_(tf)
    assert local["declaration"] == '${jsondecode(file("${path.module}/functions.json"))}'
    assert "local.declaration.functions" in local["functions"]
    assert "local.declaration.triggers" in local["triggers"]
    assert "local.declaration.schedules" in local["schedules"]

    fn = resources(tf, "google_cloudfunctions2_function")["fn"]
    assert fn["for_each"] == "${local.functions}"
    (build,) = fn["build_config"]
    assert build["entry_point"] == "${each.value.entry_point}"
    assert build["runtime"] == "${var.runtime}"
    assert named(tf, "variable")["runtime"]["default"] in {"python311", "python312"}
    (storage_source,) = build["source"][0]["storage_source"]
    assert storage_source["object"] == "${google_storage_bucket_object.source[each.value.package].name}"
    (service,) = fn["service_config"]
    assert service["environment_variables"] == "${local.function_env[each.key]}"
    assert service["service_account_email"] == "${google_service_account.function[each.value.package].email}"

    (trigger,) = [d["event_trigger"] for d in fn["dynamic"] if "event_trigger" in d]
    assert "local.triggers[each.key]" in trigger["for_each"]
    (content,) = trigger["content"]
    assert content["event_type"] == "${event_trigger.value.event_type}"
    assert content["retry_policy"].startswith('${event_trigger.value.retry ? "RETRY_POLICY_RETRY"')
    assert content["event_filters"] == [
        {"attribute": "bucket", "value": "${local.bucket_names[event_trigger.value.bucket]}"}
    ]

    job = resources(tf, "google_cloud_scheduler_job")["schedule"]
    assert job["for_each"] == "${local.schedules}"
    assert job["schedule"] == "${each.value.cron}"
    (target,) = job["http_target"]
    assert target["body"] == "${base64encode(jsonencode(each.value.body))}"
    (oidc,) = target["oidc_token"]
    assert oidc["service_account_email"] == "${google_service_account.scheduler.email}"
    invoker = resources(tf, "google_cloud_run_service_iam_member")["scheduler_invoker"]
    assert invoker["for_each"] == "${local.schedules}"
    assert invoker["member"] == "serviceAccount:${google_service_account.scheduler.email}"


def test_declared_triggers_retry_and_match_their_function_kind() -> None:
    functions = DECLARATION["functions"]
    for trigger in DECLARATION["triggers"]:
        assert trigger["retry"] is True, trigger  # the functions are idempotent; retries are on
        assert functions[trigger["function"]]["signature"] == "cloudevent"
        assert trigger["event_type"] == "google.cloud.storage.object.v1.finalized"


def test_env_vars_are_declared_settings(tf: dict[str, dict[str, Any]]) -> None:
    local = locals_(tf)
    deployable = set(local["deployable_settings"])
    assert deployable <= SETTING_NAMES, sorted(deployable - SETTING_NAMES)
    assert not deployable & LOCAL_ONLY, sorted(deployable & LOCAL_ONLY)
    # Every other setting can be deployed: a new one left out would make `terraform apply` refuse
    # it in extra_env (variables.tf validates the names against this list).
    assert deployable >= SETTING_NAMES - LOCAL_ONLY, sorted(SETTING_NAMES - LOCAL_ONLY - deployable)
    assert set(local["common_env"]) <= deployable
    assert set(local["package_env"]) == {Path(s["source"]).name for s in DECLARATION["functions"].values()}
    for env in local["package_env"].values():
        assert set(env) <= deployable, sorted(set(env) - deployable)
    example = parse(INFRA / "terraform.tfvars.example")
    for env in example["extra_env"].values():
        assert set(env) <= deployable, sorted(set(env) - deployable)
    assert local["common_env"]["STORAGE_BACKEND"] == "gcs"


def test_every_declared_function_has_sizes_within_platform_limits(tf: dict[str, dict[str, Any]]) -> None:
    sizes = locals_(tf)["default_resources"]
    assert set(sizes) == set(DECLARATION["functions"])
    for name, spec in DECLARATION["functions"].items():
        # Event-triggered 2nd gen functions may run 540 s at most; HTTP ones 3600 s.
        limit = 540 if spec["signature"] == "cloudevent" else 3600
        assert 1 <= sizes[name]["timeout_seconds"] <= limit, name
        assert 0 <= sizes[name]["min_instances"] <= sizes[name]["max_instances"], name
        assert sizes[name]["min_instances"] == 0, f"{name} would bill idle instances at rest"


def test_buckets_are_private_versioned_and_expire_their_temporary_objects(
    tf: dict[str, dict[str, Any]],
) -> None:
    buckets = resources(tf, "google_storage_bucket")
    assert set(buckets) == {"data", "artifacts", "predictions", "source"}
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
    assert buckets["artifacts"]["versioning"] == [{"enabled": True}]

    def prefix_rules(bucket: dict[str, Any]) -> dict[str, Any]:
        return {
            prefix: rule["condition"][0]["age"]
            for rule in bucket["lifecycle_rule"]
            for prefix in rule["condition"][0].get("matches_prefix", [])
            if rule["action"] == [{"type": "Delete"}]
        }

    assert prefix_rules(buckets["data"]) == {"quarantine/": "${var.quarantine_retention_days}"}
    assert prefix_rules(buckets["artifacts"]) == {"traffic/": "${var.traffic_retention_days}"}
    assert prefix_rules(buckets["predictions"]) == {"predictions/": "${var.predictions_retention_days}"}
    source = resources(tf, "google_storage_bucket_object")["source"]
    assert "filemd5(" in source["name"]  # a changed zip gets a new name, so its function redeploys


def test_predict_is_private_unless_the_variable_opens_it(tf: dict[str, dict[str, Any]]) -> None:
    public = resources(tf, "google_cloud_run_service_iam_member")["predict_public"]
    assert public["count"] == "${var.public_predict ? 1 : 0}"
    assert public["member"] == "allUsers"
    texts = {path.name: path.read_text() for path in INFRA.glob("*.tf")}
    mentions = [
        name for name, text in texts.items() for _ in re.finditer(r'"all(Users|AuthenticatedUsers)"', text)
    ]
    assert mentions == ["functions.tf"], "allUsers may appear only in the opt-in predict grant"


def test_the_dashboard_is_private_to_its_named_invokers(tf: dict[str, dict[str, Any]]) -> None:
    grants = resources(tf, "google_cloud_run_service_iam_member")
    dashboard = {name: body for name, body in grants.items() if "dashboard" in name}
    assert list(dashboard) == ["dashboard_invoker"]
    assert dashboard["dashboard_invoker"]["for_each"] == "${toset(var.dashboard_invokers)}"
    assert dashboard["dashboard_invoker"]["member"] == "${each.value}"
    assert named(tf, "variable")["dashboard_invokers"]["default"] == []
    assert "dashboard_url" in named(tf, "output")


def test_no_broad_roles_anywhere(tf: dict[str, dict[str, Any]]) -> None:
    project_grants = resources(tf, "google_project_iam_member")
    project_roles = {body["role"] for body in project_grants.values()}
    assert project_roles == {
        "roles/pubsub.publisher",
        "roles/eventarc.eventReceiver",
        "roles/logging.logWriter",
        "roles/storage.objectViewer",
    }
    # The one project-level storage role reaches only the buckets Cloud Functions stages sources in.
    (staged,) = [g for g in project_grants.values() if g["role"].startswith("roles/storage.")]
    (condition,) = staged["condition"]
    assert condition["expression"] == 'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-")'
    text = "\n".join(path.read_text() for path in INFRA.glob("*.tf"))
    for broad in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/cloudfunctions.admin"):
        assert broad not in text


def test_storage_grants_are_bucket_level_per_package(tf: dict[str, dict[str, Any]]) -> None:
    grants = locals_(tf)["storage_grants"]
    packages = {Path(s["source"]).name for s in DECLARATION["functions"].values()}
    assert {g["package"] for g in grants.values()} == packages
    by_package: dict[str, set[tuple[str, str]]] = {}
    for grant in grants.values():
        by_package.setdefault(grant["package"], set()).add((grant["bucket"], grant["role"]))
        # Every object writer is limited to the prefixes it writes.
        if grant["role"] != "roles/storage.objectViewer":
            assert grant["prefixes"], grant
    assert by_package["predict"] == {
        ("artifacts", "roles/storage.objectViewer"),
        ("artifacts", "roles/storage.objectCreator"),
        ("predictions", "roles/storage.objectCreator"),
    }
    assert ("predictions", "roles/storage.objectViewer") in by_package["train"]
    assert {b for b, _ in by_package["build_table"]} == {"artifacts"}
    # The dashboard only reads, and not the prediction log (the live report is in artifacts).
    assert by_package["dashboard"] == {
        ("artifacts", "roles/storage.objectViewer"),
        ("data", "roles/storage.objectViewer"),
    }
    assert ("data", "roles/storage.objectUser") in by_package["train"]
    train_data_writes = [g for g in grants.values() if g["package"] == "train" and g["bucket"] == "data"]
    assert {tuple(g["prefixes"]) for g in train_data_writes if g["role"] == "roles/storage.objectUser"} == {
        ("incoming/", "quarantine/")
    }
    # The loop's stored labels, live report and emissions (shared/feedback/) are train's writes too.
    train_artifact_writes = [
        g for g in grants.values() if g["package"] == "train" and g["bucket"] == "artifacts"
    ]
    assert any("feedback/" in g["prefixes"] for g in train_artifact_writes)


# --- evaluated by real Terraform ----------------------------------------------------------------

PROBE = """
output "probe" {
  value = {
    functions  = local.functions
    env        = local.function_env
    triggers   = local.triggers
    schedules  = local.schedules
    resources  = local.resources
    conditions = local.storage_grant_conditions
    ingress    = local.ingress
    buckets    = local.bucket_names
  }
}
"""


def terraform(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",  # no version check over the network
        "TF_CLI_CONFIG_FILE": "/dev/null",
    }
    assert TERRAFORM is not None
    return subprocess.run(
        [TERRAFORM, f"-chdir={workdir}", *args], capture_output=True, text=True, env=env, timeout=120
    )


def evaluate(workdir: Path, *var_args: str) -> subprocess.CompletedProcess[str]:
    """Apply the resource-free part of infra/ (no provider, no cloud) and read its probe output."""
    workdir.mkdir()
    for name in ("variables.tf", "locals.tf", "functions.json"):
        shutil.copy(INFRA / name, workdir / name)
    (workdir / "probe.tf").write_text(PROBE)
    init = terraform(workdir, "init", "-input=false", "-backend=false")
    assert init.returncode == 0, init.stderr
    applied = terraform(
        workdir, "apply", "-auto-approve", "-input=false", "-var", "project_id=test-proj", *var_args
    )
    if applied.returncode != 0:
        return applied
    return terraform(workdir, "output", "-json", "probe")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = evaluate(tmp_path_factory.mktemp("tf") / "default")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_terraform
def test_terraform_fmt_is_clean() -> None:
    proc = terraform(INFRA, "fmt", "-check", "-diff", "-recursive")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_terraform
def test_every_declared_function_is_deployed_with_its_entry_point(evaluated: dict[str, Any]) -> None:
    functions = evaluated["functions"]
    assert set(functions) == set(DECLARATION["functions"])
    for name, spec in DECLARATION["functions"].items():
        assert functions[name]["entry_point"] == spec["entry_point"]
        assert functions[name]["package"] == Path(spec["source"]).name
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,62}", functions[name]["resource_name"]), "a Cloud Run name"
    assert set(evaluated["resources"]) == set(DECLARATION["functions"])
    # Reached from outside (each by its named invokers only): predict and the dashboard.
    external = {"predict", "dashboard"}
    assert {k for k, v in evaluated["ingress"].items() if v == "ALLOW_ALL"} == external
    assert {v for k, v in evaluated["ingress"].items() if k not in external} == {"ALLOW_INTERNAL_ONLY"}


@needs_terraform
def test_triggers_and_schedules_are_the_declared_ones(evaluated: dict[str, Any]) -> None:
    assert evaluated["triggers"] == {t["function"]: t for t in DECLARATION["triggers"]}
    assert evaluated["schedules"] == {s["function"]: s for s in DECLARATION["schedules"]}
    assert evaluated["buckets"] == {
        "data": "test-proj-prodml-data",
        "artifacts": "test-proj-prodml-artifacts",
        "predictions": "test-proj-prodml-predictions",
    }


@needs_terraform
def test_every_function_env_is_a_valid_configuration(evaluated: dict[str, Any]) -> None:
    """Every env var is a declared Setting, and shared/config.py accepts every value."""
    for name, env in evaluated["env"].items():
        assert set(env) <= SETTING_NAMES, (name, sorted(set(env) - SETTING_NAMES))
        settings = load_settings(env)
        assert settings.storage_backend == "gcs"
        assert (settings.data_bucket, settings.artifacts_bucket) == (
            "test-proj-prodml-data",
            "test-proj-prodml-artifacts",
        )
        assert settings.predictions_bucket == "test-proj-prodml-predictions"
        assert settings.log_format == "json"
    assert evaluated["env"]["predict"]["SERVING_MODE"] == "dynamic"


@needs_terraform
def test_write_grants_are_limited_by_object_prefix_conditions(evaluated: dict[str, Any]) -> None:
    bucket = "projects/_/buckets/test-proj-prodml-artifacts/objects"
    conditions = evaluated["conditions"]
    assert conditions["predict_write_traffic"] == f'resource.name.startsWith("{bucket}/traffic/")'
    log = "projects/_/buckets/test-proj-prodml-predictions/objects/predictions/"
    assert conditions["predict_write_predictions"] == f'resource.name.startsWith("{log}")'
    assert conditions["build_table_write_tables"] == f'resource.name.startsWith("{bucket}/tables/")'
    assert conditions["train_write_artifacts"].split(" || ") == [
        f'resource.name.startsWith("{bucket}/{prefix}/")'
        for prefix in ("models", "registry", "monitoring", "feedback")
    ]


@needs_terraform
def test_extra_env_reaches_only_its_package(tmp_path: Path) -> None:
    out = evaluate(tmp_path / "tf", "-var", 'extra_env={train={PROMOTION_TOLERANCE="0.02"}}')
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout)["env"]
    assert env["train"]["PROMOTION_TOLERANCE"] == "0.02"
    assert "PROMOTION_TOLERANCE" not in env["predict"]
    assert load_settings(env["train"]).promotion_tolerance == 0.02


@needs_terraform
def test_the_example_tfvars_pass_every_variable_validation(tmp_path: Path) -> None:
    out = evaluate(tmp_path / "tf", f"-var-file={INFRA / 'terraform.tfvars.example'}")
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout)["env"]
    example = parse(INFRA / "terraform.tfvars.example")
    for package, extra in example["extra_env"].items():
        for name in (
            n for n, spec in DECLARATION["functions"].items() if Path(spec["source"]).name == package
        ):
            assert extra.items() <= env[name].items()
            load_settings(env[name])


@needs_terraform
@pytest.mark.parametrize("name", ["NOT_A_SETTING", "PREDICT_PORT"])
def test_extra_env_refuses_what_is_not_a_deployable_setting(tmp_path: Path, name: str) -> None:
    out = evaluate(tmp_path / "tf", "-var", f'extra_env={{train={{{name}="1"}}}}')
    assert out.returncode != 0
    assert "not a deployable setting" in " ".join(out.stderr.split())
