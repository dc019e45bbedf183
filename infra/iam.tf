# Identities and least-privilege grants.
#
# One runtime service account per package (predict, train, build_table: build_table's HTTP and
# event entry points are one code base with one set of needs). Each gets roles on the bucket it
# uses and nothing at project level. Object-name prefixes narrow write access with IAM
# conditions on `resource.name`, which for an object is
# "projects/_/buckets/<bucket>/objects/<name>". Where a condition cannot narrow, it says so.

resource "google_service_account" "function" {
  for_each = local.packages

  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = "prodml ${each.key} function (runtime identity)"
  description  = "Runtime identity of the ${each.key} function: bucket roles only, see infra/iam.tf."
}

# The grants themselves are in local.storage_grants (locals.tf), one entry per role.
resource "google_storage_bucket_iam_member" "function" {
  for_each = local.storage_grants

  bucket = {
    data        = google_storage_bucket.data.name
    artifacts   = google_storage_bucket.artifacts.name
    predictions = google_storage_bucket.predictions.name
  }[each.value.bucket]
  role   = each.value.role
  member = "serviceAccount:${google_service_account.function[each.value.package].email}"

  dynamic "condition" {
    for_each = contains(keys(local.storage_grant_conditions), each.key) ? [each.value.prefixes] : []
    content {
      title       = "${each.key}_prefixes"
      description = "Only objects under ${join(", ", condition.value)}"
      expression  = local.storage_grant_conditions[each.key]
    }
  }
}

# --- storage triggers ----------------------------------------------------------------------
# Eventarc delivers Cloud Storage events through Pub/Sub: the project's Cloud Storage service
# agent publishes them, so it needs Pub/Sub publisher. Eventarc creates the topic itself, so
# the grant cannot be put on a topic that does not exist yet: project level is the only place.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.api]
}

resource "google_project_iam_member" "gcs_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# The identity each trigger delivers events as: it may receive events (project level, where
# Eventarc checks it) and invoke its one function (below, in functions.tf).
resource "google_service_account" "trigger" {
  for_each = local.triggers

  # Service account ids are 6-30 characters and may not end in "-".
  account_id   = trim(substr("${var.name_prefix}-trig-${replace(each.key, "_", "-")}", 0, 30), "-")
  display_name = "prodml ${each.key} trigger (Eventarc delivery identity)"
  description  = "Identity Eventarc uses to deliver ${each.value.bucket}-bucket events to ${each.key}."
}

resource "google_project_iam_member" "trigger_event_receiver" {
  for_each = local.triggers

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.trigger[each.key].email}"
}

# --- scheduler -----------------------------------------------------------------------------
resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "prodml scheduler (calls build_table)"
  description  = "OIDC identity of the Cloud Scheduler job; run.invoker on the scheduled functions only."
}

# --- builds --------------------------------------------------------------------------------
# Cloud Build builds each function's image as this account instead of the project's default
# compute account (which has Editor in many projects): it may write logs, read the sources
# bucket and push to the functions' own Artifact Registry repository, nothing else.
resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "prodml function builds"
  description  = "Cloud Build identity of the function builds: logs, the sources bucket, the images repository."
}

resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

# Cloud Functions stages each build's source in its own bucket, gcf-v2-sources-<number>-<region>,
# which Terraform does not manage; the build reads it there. A project-level grant is the only
# way to reach a bucket that is not ours, so the condition limits it to those buckets.
# (Google's page on custom build accounts lists Storage Object Admin; reading is what a build
# does here, images go to Artifact Registry. If a build reports a storage permission error,
# raise this role to roles/storage.objectAdmin under the same condition.)
resource "google_project_iam_member" "build_read_staged_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.build.email}"

  condition {
    title       = "gcf_v2_sources_only"
    description = "Only the buckets where Cloud Functions stages build sources"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
  }
}

resource "google_storage_bucket_iam_member" "build_read_sources" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_push_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}
