# The three buckets of the system (docs/design.md section 3) and the bucket holding function
# sources. All four: uniform bucket-level access (IAM only, no object ACLs; IAM conditions need it) and
# public access prevention enforced (no allUsers grant can ever open them).

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_78:Versioning is off on purpose: data files are write-once drops and the trainer moves bad ones to quarantine/, so noncurrent copies would only double storage of data already kept.
  #checkov:skip=CKV_GCP_62:Access logs (storage logs to another bucket) are a legacy feature; Cloud Audit Logs cover data access and are enabled per project, not per bucket.
  name                        = local.bucket_names.data
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Data is the system's input and its lineage: never let `terraform destroy` empty it.
  force_destroy = false

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_seconds
  }

  lifecycle_rule {
    condition {
      age            = var.quarantine_retention_days
      matches_prefix = ["quarantine/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_storage_bucket" "artifacts" {
  #checkov:skip=CKV_GCP_62:Access logs (storage logs to another bucket) are a legacy feature; Cloud Audit Logs cover data access and are enabled per project, not per bucket.
  name                        = local.bucket_names.artifacts
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # models/current.skops and tables/current.json are overwritten on every promotion or build:
  # versioning keeps the replaced generations for a while, beneath the explicit rollback path
  # (models/versions/<v>/), in case a bad write slips through.
  versioning {
    enabled = true
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_seconds
  }

  # Key counts from predict: evidence for the advisor, worthless when old.
  lifecycle_rule {
    condition {
      age            = var.traffic_retention_days
      matches_prefix = ["traffic/"]
    }
    action {
      type = "Delete"
    }
  }

  # Replaced generations (versioning) are kept for a bounded time only.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

# predict's prediction log (predictions/<date>/...): no trigger (a flush fires no function),
# write-once objects, deleted after var.predictions_retention_days.
resource "google_storage_bucket" "predictions" {
  #checkov:skip=CKV_GCP_78:Versioning is off on purpose: every log object is created once (if_generation_match=0) and never overwritten, so there is no noncurrent copy to keep.
  #checkov:skip=CKV_GCP_62:Access logs (storage logs to another bucket) are a legacy feature; Cloud Audit Logs cover data access and are enabled per project, not per bucket.
  name                        = local.bucket_names.predictions
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_seconds
  }

  lifecycle_rule {
    condition {
      age            = var.predictions_retention_days
      matches_prefix = ["predictions/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api]
}

# Uploaded function sources (dist/<package>.zip). Cloud Build reads them when a function is
# (re)built; a running function never does.
resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_78:Each upload has its content hash in its name and is never overwritten, so versioning would add nothing.
  #checkov:skip=CKV_GCP_62:Access logs (storage logs to another bucket) are a legacy feature; Cloud Audit Logs cover data access.
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Only build inputs live here, all reproducible from the repository by `make package`.
  force_destroy = true

  depends_on = [google_project_service.api]
}

# One object per package, named by its content hash: a changed zip gets a new name, which
# changes the function's build source and so redeploys that function and no other.
resource "google_storage_bucket_object" "source" {
  for_each = local.packages

  name   = "${each.key}-${filemd5("${path.module}/../dist/${each.key}.zip")}.zip"
  bucket = google_storage_bucket.source.name
  source = "${path.module}/../dist/${each.key}.zip"

  # Upload the new object before the old one goes, so a function is never left pointing at
  # a deleted source mid-apply.
  lifecycle {
    create_before_destroy = true
  }
}
