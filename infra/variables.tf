# Inputs of the deployment. Only project_id is required; infra/terraform.tfvars.example shows
# the rest. Env var values set here become the functions' settings (shared/config.py), so each
# variable that feeds one says which.

variable "project_id" {
  description = "The GCP project to deploy into (an existing project with billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of the functions, the buckets and the scheduler job. Storage triggers need the buckets in the functions' region."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every named resource (functions, service accounts, scheduler job, repository). Lowercase letters, digits and '-'."
  type        = string
  default     = "prodml"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 characters of a-z, 0-9 and '-', starting with a letter (it is part of service account ids, at most 30 characters)."
  }
}

variable "data_bucket" {
  description = "Name of the DATA bucket (DATA_BUCKET): data files arrive in incoming/, bad ones go to quarantine/. Globally unique; empty means <project_id>-prodml-data."
  type        = string
  default     = ""
}

variable "artifacts_bucket" {
  description = "Name of the ARTIFACTS bucket (ARTIFACTS_BUCKET): schema, models, tables, traffic, registry. Globally unique; empty means <project_id>-prodml-artifacts."
  type        = string
  default     = ""
}

variable "predictions_bucket" {
  description = "Name of the PREDICTIONS bucket (PREDICTIONS_BUCKET): predict's prediction log under predictions/, no trigger. Globally unique; empty means <project_id>-prodml-predictions."
  type        = string
  default     = ""
}

variable "predictions_retention_days" {
  description = "Days after which objects under predictions/ in the predictions bucket are deleted (the prediction log; keep it longer than the labels take to arrive)."
  type        = number
  default     = 90

  validation {
    condition     = var.predictions_retention_days >= 1
    error_message = "predictions_retention_days must be at least 1."
  }
}

variable "traffic_retention_days" {
  description = "Days after which objects under traffic/ in the artifacts bucket are deleted (predict's key counts; the advisor reads recent ones)."
  type        = number
  default     = 30

  validation {
    condition     = var.traffic_retention_days >= 1
    error_message = "traffic_retention_days must be at least 1."
  }
}

variable "quarantine_retention_days" {
  description = "Days after which objects under quarantine/ in the data bucket (bad files and their .reason.json) are deleted."
  type        = number
  default     = 90

  validation {
    condition     = var.quarantine_retention_days >= 1
    error_message = "quarantine_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced (noncurrent) object version in the versioned artifacts bucket is kept before deletion. Rollback uses models/versions/, which stay current; this is the safety net beneath it."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1
    error_message = "noncurrent_version_retention_days must be at least 1."
  }
}

variable "soft_delete_retention_seconds" {
  description = "Cloud Storage soft-delete window of the data and artifacts buckets, in seconds (0 turns it off, else 604800-7776000). Deleted objects are billed for this long."
  type        = number
  default     = 604800

  validation {
    condition     = var.soft_delete_retention_seconds == 0 || (var.soft_delete_retention_seconds >= 604800 && var.soft_delete_retention_seconds <= 7776000)
    error_message = "soft_delete_retention_seconds must be 0 or between 604800 (7 days) and 7776000 (90 days)."
  }
}

variable "runtime" {
  description = "Cloud Functions Python runtime. The packaging test installs each zip on the local Python (3.11); keep them the same minor version."
  type        = string
  default     = "python311"

  validation {
    condition     = contains(["python311", "python312"], var.runtime)
    error_message = "runtime must be python311 or python312."
  }
}

variable "serving_mode" {
  description = "SERVING_MODE of predict: static (table only), dynamic (model only) or hybrid (table, then model)."
  type        = string
  default     = "dynamic"

  validation {
    condition     = contains(["static", "dynamic", "hybrid"], var.serving_mode)
    error_message = "serving_mode must be static, dynamic or hybrid."
  }
}

variable "training_strategy" {
  description = "TRAINING_STRATEGY of train: full (retrain on the recent window) or incremental (partial_fit on the new file)."
  type        = string
  default     = "full"

  validation {
    condition     = contains(["full", "incremental"], var.training_strategy)
    error_message = "training_strategy must be full or incremental."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of every function: debug, info, warning or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error"], var.log_level)
    error_message = "log_level must be debug, info, warning or error."
  }
}

variable "extra_env" {
  description = "More settings per package (predict, train, build_table, dashboard), e.g. { train = { PROMOTION_TOLERANCE = \"0.02\" } }. Names must be settings of shared/config.py that make sense in the cloud (see local.deployable_settings)."
  type        = map(map(string))
  default     = {}

  validation {
    condition = alltrue(flatten([
      for package, env in var.extra_env : [
        for name in keys(env) : contains(local.deployable_settings, name)
      ]
    ]))
    error_message = "extra_env names a variable that is not a deployable setting of shared/config.py (see local.deployable_settings in infra/locals.tf)."
  }
}

variable "function_resources" {
  description = "Per deployed function (predict, train, build_table, build_table_event, dashboard): memory, cpu, timeout and instance limits, replacing the defaults in local.default_resources for the functions named."
  type = map(object({
    memory          = string
    cpu             = string
    timeout_seconds = number
    min_instances   = number
    max_instances   = number
    concurrency     = number
  }))
  default = {}
}

variable "public_predict" {
  description = "Let anyone on the internet call predict (grants allUsers roles/run.invoker). Off by default: callers need an identity token of a principal with run.invoker."
  type        = bool
  default     = false
}

variable "predict_invokers" {
  description = "Principals allowed to call predict when it is not public, e.g. [\"user:ana@example.com\", \"serviceAccount:app@p.iam.gserviceaccount.com\"]."
  type        = list(string)
  default     = []
}

variable "dashboard_invokers" {
  description = "Principals allowed to open the dashboard (it is never public), e.g. [\"user:ana@example.com\", \"group:ml-ops@example.com\"]."
  type        = list(string)
  default     = []
}

variable "schedule_time_zone" {
  description = "Time zone of the scheduler job's cron (from infra/functions.json)."
  type        = string
  default     = "Etc/UTC"
}

variable "enable_apis" {
  description = "Enable the Google APIs the deployment needs (leave on unless an organisation enables them centrally)."
  type        = bool
  default     = true
}
