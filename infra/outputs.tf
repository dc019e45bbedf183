output "predict_url" {
  description = "URL of the predict function: POST {\"instances\": [...]} with an identity token (see docs/deploy.md)."
  value       = google_cloudfunctions2_function.fn["predict"].url
}

output "function_urls" {
  description = "URL of every deployed function, by declared name."
  value       = { for name, fn in google_cloudfunctions2_function.fn : name => fn.url }
}

output "data_bucket" {
  description = "The DATA bucket: drop data files under incoming/."
  value       = google_storage_bucket.data.name
}

output "artifacts_bucket" {
  description = "The ARTIFACTS bucket: upload schema.json here; models, tables and traffic live here."
  value       = google_storage_bucket.artifacts.name
}

output "predictions_bucket" {
  description = "The PREDICTIONS bucket: predict's prediction log under predictions/ (no trigger)."
  value       = google_storage_bucket.predictions.name
}

output "source_bucket" {
  description = "Bucket of the uploaded function sources (dist/<package>.zip)."
  value       = google_storage_bucket.source.name
}

output "service_accounts" {
  description = "Runtime identity of each package, the trigger and scheduler identities."
  value = merge(
    { for name, sa in google_service_account.function : name => sa.email },
    { for name, sa in google_service_account.trigger : "trigger_${name}" => sa.email },
    { scheduler = google_service_account.scheduler.email, build = google_service_account.build.email },
  )
}

output "scheduler_jobs" {
  description = "Cloud Scheduler job per scheduled function (run one now: gcloud scheduler jobs run NAME --location REGION)."
  value       = { for name, job in google_cloud_scheduler_job.schedule : name => job.name }
}

output "region" {
  description = "Region of the functions, buckets and scheduler job (for gcloud --region / --location)."
  value       = var.region
}

output "dashboard_url" {
  description = "URL of the dashboard function: open it with an identity token of one of var.dashboard_invokers (see docs/deploy.md)."
  value       = google_cloudfunctions2_function.fn["dashboard"].url
}
