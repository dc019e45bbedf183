# The Dataflow side of the scale-out pipelines, called from infra/dataflow.tf when
# var.enable_dataflow is true. Least privilege:
#
# - the worker account runs the jobs (and the Flex Template launcher VM): roles/dataflow.worker
#   (project level: Dataflow has no narrower grant), its own temp bucket, read of the pipelines'
#   image, read of the artifacts bucket and of the prediction log, writes under tables/ and
#   pipelines/ only (and feedback/live.json, the join's report), and on the data bucket what the
#   train function has (read, quarantine: copy and delete);
# - the launcher (build_table's runtime account) may create jobs (roles/dataflow.developer,
#   project level), act as the worker account (on that account only) and read the template.

terraform {
  required_providers {
    google = {
      source = "hashicorp/google"
    }
  }
}

variable "project_id" {
  description = "The GCP project."
  type        = string
}

variable "region" {
  description = "Region of the jobs, the temp bucket and the image repository."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of named resources."
  type        = string
}

variable "data_bucket" {
  description = "The DATA bucket (validation reads and quarantines its files)."
  type        = string
}

variable "artifacts_bucket" {
  description = "The ARTIFACTS bucket (models, schema and stored labels read; tables/, pipelines/ and feedback/live.json written)."
  type        = string
}

variable "predictions_bucket" {
  description = "The PREDICTIONS bucket (the join pipeline reads the prediction log)."
  type        = string
}

variable "launcher_email" {
  description = "Service account that launches jobs (build_table's runtime identity)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the pipelines' image."
  type        = string
}

variable "template_spec_path" {
  description = "Flex Template spec written by `prodml pipeline template` (its image is replaced here)."
  type        = string

  validation {
    condition     = fileexists(var.template_spec_path)
    error_message = "No Flex Template spec at the given path: run `prodml pipeline template --image x --out dist/dataflow-template.json` first."
  }
}

variable "max_workers" {
  description = "Most workers of one job."
  type        = number
}

locals {
  image     = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.pipelines.repository_id}/pipelines:${var.image_tag}"
  temp_root = "gs://${google_storage_bucket.dataflow.name}"
  # The spec's parameters come from shared/pipelines/options.py; the image is this deployment's,
  # for the launcher and (sdkContainerImage) for the workers alike.
  spec = merge(jsondecode(file(var.template_spec_path)), {
    image              = local.image
    defaultEnvironment = { sdkContainerImage = local.image }
  })
  # Conditions on object names: "projects/_/buckets/<bucket>/objects/<name>".
  artifacts_objects = "projects/_/buckets/${var.artifacts_bucket}/objects/"
}

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-dataflow"
  display_name = "prodml Dataflow worker (scale-out pipelines)"
  description  = "Runs the table build and bulk validation jobs; see infra/dataflow/main.tf."
}

resource "google_project_iam_member" "worker" {
  project = var.project_id
  role    = "roles/dataflow.worker"
  member  = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_project_iam_member" "launcher" {
  #checkov:skip=CKV_GCP_49:Dataflow has no resource-level IAM: launching a job needs dataflow.developer on the project; acting as the worker is granted on that one account only (below).
  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${var.launcher_email}"
}

resource "google_service_account_iam_member" "launcher_acts_as_worker" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${var.launcher_email}"
}

# --- temp, staging and the template -------------------------------------------------------
resource "google_storage_bucket" "dataflow" {
  #checkov:skip=CKV_GCP_62:Access logs are a legacy feature; Cloud Audit Logs cover data access.
  #checkov:skip=CKV_GCP_78:Temporary files only: versioning would keep what jobs delete.
  name                        = "${var.project_id}-${var.name_prefix}-dataflow"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # Beam warns that soft-deleted temp files are billed: jobs write and delete many.
  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["tmp/"]
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_object" "template" {
  bucket       = google_storage_bucket.dataflow.name
  name         = "templates/pipelines.json"
  content      = jsonencode(local.spec)
  content_type = "application/json"
}

resource "google_storage_bucket_iam_member" "worker_temp" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "launcher_template" {
  bucket = google_storage_bucket.dataflow.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${var.launcher_email}"
}

# --- the image ------------------------------------------------------------------------------
resource "google_artifact_registry_repository" "pipelines" {
  #checkov:skip=CKV_GCP_84:The image is built from the public repository's code and holds no data or secrets; Google-managed encryption is enough and avoids a KMS key fee.
  location      = var.region
  repository_id = "${var.name_prefix}-pipelines"
  format        = "DOCKER"
  description   = "The scale-out pipelines' image (infra/dataflow/Dockerfile)."

  # Keep the recent images (a running job's template names one) and delete the rest, so the
  # repository does not grow with every rebuild.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 3
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "worker_pull" {
  location   = google_artifact_registry_repository.pipelines.location
  repository = google_artifact_registry_repository.pipelines.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.worker.email}"
}

# --- the system's buckets -----------------------------------------------------------------
resource "google_storage_bucket_iam_member" "worker_read_artifacts" {
  bucket = var.artifacts_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.worker.email}"
}

# Tables are overwritten on a forced rebuild and the pointer on every build: objectUser, but
# only under tables/ and pipelines/ (the validation and join reports, the joined rows), and the
# one live report the join pipeline rewrites (feedback/live.json; stored labels stay read-only).
resource "google_storage_bucket_iam_member" "worker_write_tables" {
  bucket = var.artifacts_bucket
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"

  condition {
    title       = "tables_and_pipelines"
    description = "Only objects under tables/ and pipelines/, and feedback/live.json"
    expression  = "resource.name.startsWith(\"${local.artifacts_objects}tables/\") || resource.name.startsWith(\"${local.artifacts_objects}pipelines/\") || resource.name == \"${local.artifacts_objects}feedback/live.json\""
  }
}

# The join pipeline reads every object of predict's prediction log.
resource "google_storage_bucket_iam_member" "worker_read_predictions" {
  bucket = var.predictions_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.worker.email}"
}

# Validation reads data files and quarantines bad ones (copy, then delete): as train does.
# Bulk validation reads and quarantines whatever prefix the user names (backfill/, incoming/…),
# so unlike the train function its grant cannot be narrowed to known prefixes.
resource "google_storage_bucket_iam_member" "worker_data" {
  bucket = var.data_bucket
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"
}

output "env" {
  description = "Settings of a function that launches pipelines on Dataflow."
  value = {
    PIPELINE_RUNNER          = "auto"
    DATAFLOW_PROJECT         = var.project_id
    DATAFLOW_REGION          = var.region
    DATAFLOW_TEMP_LOCATION   = "${local.temp_root}/tmp"
    DATAFLOW_SERVICE_ACCOUNT = google_service_account.worker.email
    DATAFLOW_TEMPLATE        = "${local.temp_root}/${google_storage_bucket_object.template.name}"
    DATAFLOW_MAX_WORKERS     = tostring(var.max_workers)
  }
}

output "image" {
  description = "The pipelines' image reference."
  value       = local.image
}
