# The Cloud Functions (2nd gen), one per entry point declared in infra/functions.json, each
# built from its package's zip, running as its package's service account, with its storage
# trigger (if declared) and who may invoke it.

resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Images are built from the public repository's code and hold no data or secrets; Google-managed encryption is enough and avoids a KMS key fee.
  repository_id = "${var.name_prefix}-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "Images of the prodml functions, built by Cloud Build from dist/<package>.zip."

  # Every deploy pushes an image; keep the recent ones (a revision rollback needs its image)
  # and delete the rest, so storage at rest stays a few hundred MB.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions

  name        = each.value.resource_name
  location    = var.region
  description = "prodml ${each.key}: ${each.value.source}/main.py:${each.value.entry_point} (${each.value.signature})"

  build_config {
    runtime           = var.runtime
    entry_point       = each.value.entry_point
    docker_repository = google_artifact_registry_repository.functions.id
    service_account   = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source[each.value.package].name
      }
    }
  }

  service_config {
    available_memory                 = local.resources[each.key].memory
    available_cpu                    = local.resources[each.key].cpu
    timeout_seconds                  = local.resources[each.key].timeout_seconds
    min_instance_count               = local.resources[each.key].min_instances
    max_instance_count               = local.resources[each.key].max_instances
    max_instance_request_concurrency = local.resources[each.key].concurrency
    environment_variables            = local.function_env[each.key]
    ingress_settings                 = local.ingress[each.key]
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.function[each.value.package].email
  }

  # The storage trigger of this function, from the declaration's triggers (at most one).
  dynamic "event_trigger" {
    for_each = contains(keys(local.triggers), each.key) ? [local.triggers[each.key]] : []
    content {
      trigger_region        = var.region
      event_type            = event_trigger.value.event_type
      retry_policy          = event_trigger.value.retry ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.trigger[each.key].email
      event_filters {
        attribute = "bucket"
        value     = local.bucket_names[event_trigger.value.bucket]
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(local.triggers) == length(local.declaration.triggers)
      error_message = "infra/functions.json declares two triggers for one function; a 2nd gen function takes one."
    }
    precondition {
      condition     = contains(keys(local.triggers), each.key) == (each.value.signature == "cloudevent")
      error_message = "infra/functions.json: ${each.key} is a ${each.value.signature} function; event functions need a trigger and HTTP functions must not have one."
    }
  }

  depends_on = [
    google_project_service.api,
    google_project_iam_member.gcs_pubsub_publisher,
    google_project_iam_member.trigger_event_receiver,
    google_project_iam_member.build_log_writer,
    google_storage_bucket_iam_member.build_read_sources,
    google_project_iam_member.build_read_staged_sources,
    google_artifact_registry_repository_iam_member.build_push_images,
  ]
}

# --- who may invoke what -------------------------------------------------------------------
# A 2nd gen function is served by the Cloud Run service of the same name; invoking it needs
# roles/run.invoker on that service.

# Each trigger's identity invokes its one function.
resource "google_cloud_run_service_iam_member" "trigger_invoker" {
  for_each = local.triggers

  project  = var.project_id
  location = google_cloudfunctions2_function.fn[each.key].location
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger[each.key].email}"
}

# The scheduler's identity invokes the scheduled functions only.
resource "google_cloud_run_service_iam_member" "scheduler_invoker" {
  for_each = local.schedules

  project  = var.project_id
  location = google_cloudfunctions2_function.fn[each.key].location
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# Named callers of predict (when it is not public).
resource "google_cloud_run_service_iam_member" "predict_invoker" {
  for_each = toset(var.predict_invokers)

  project  = var.project_id
  location = google_cloudfunctions2_function.fn["predict"].location
  service  = google_cloudfunctions2_function.fn["predict"].name
  role     = "roles/run.invoker"
  member   = each.value
}

# Opt-in only (var.public_predict, default false): anyone may call predict.
resource "google_cloud_run_service_iam_member" "predict_public" {
  #checkov:skip=CKV_GCP_102:Public access is opt-in (var.public_predict defaults to false, count 0); predict validates and size-limits every request and reads no caller data.
  count = var.public_predict ? 1 : 0

  project  = var.project_id
  location = google_cloudfunctions2_function.fn["predict"].location
  service  = google_cloudfunctions2_function.fn["predict"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Named viewers of the dashboard. It has no public option: its pages show object names, metrics
# and sample rows of quarantined files, which are the deployment's own data.
resource "google_cloud_run_service_iam_member" "dashboard_invoker" {
  for_each = toset(var.dashboard_invokers)

  project  = var.project_id
  location = google_cloudfunctions2_function.fn["dashboard"].location
  service  = google_cloudfunctions2_function.fn["dashboard"].name
  role     = "roles/run.invoker"
  member   = each.value
}
