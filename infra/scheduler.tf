# Cloud Scheduler jobs, one per schedule in infra/functions.json: an authenticated POST of the
# declared body to the function, with an OIDC token of the scheduler's service account
# (which may invoke the scheduled functions and nothing else).

resource "google_cloud_scheduler_job" "schedule" {
  for_each = local.schedules

  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  region      = var.region
  description = "Calls ${each.key} on schedule with ${jsonencode(each.value.body)}."
  schedule    = each.value.cron
  time_zone   = var.schedule_time_zone
  # HTTP targets may take at most 30 minutes; a table build that runs longer still finishes,
  # the job only stops waiting.
  attempt_deadline = "1800s"

  retry_config {
    retry_count          = 2
    min_backoff_duration = "60s"
    max_backoff_duration = "600s"
  }

  http_target {
    http_method = "POST"
    # The run.app URL: Cloud Scheduler's calls count as internal there, which the internal-only
    # ingress of the scheduled function requires.
    uri     = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    body    = base64encode(jsonencode(each.value.body))
    headers = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.fn[each.key].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.scheduler_invoker]
}
