# Scale-out (opt-in): the Dataflow side of the table build and bulk validation pipelines
# (shared/pipelines, docs/scale-out.md). Off by default: the functions build tables in-process.
#
# With enable_dataflow = true, the module in infra/dataflow/ adds a worker service account, a
# temp/staging bucket, an Artifact Registry repository for the pipelines' image, the Flex
# Template spec (rendered by `prodml pipeline template`, one source with the entry point) and the
# grants: the worker may read the artifacts and the prediction log, write tables/, pipelines/
# and feedback/live.json, read and quarantine data files; build_table may launch jobs as that
# worker and nothing more.
# Dataflow has no resource-level IAM: roles/dataflow.worker and roles/dataflow.developer are
# project-level grants, which is why they live in the opt-in module.
#
# The image is built from infra/dataflow/Dockerfile (docs/scale-out.md); then set the
# build_table function's env from output dataflow_env (var.extra_env.build_table).

variable "enable_dataflow" {
  description = "Provision Dataflow for the scale-out pipelines (worker account, temp bucket, image repository, Flex Template). Adds two project-level Dataflow roles."
  type        = bool
  default     = false
}

variable "dataflow_image_tag" {
  description = "Tag of the pipelines' container image in the Dataflow repository (built from infra/dataflow/Dockerfile)."
  type        = string
  default     = "2.77.0"
}

variable "dataflow_template_spec" {
  description = "Path of the Flex Template spec written by `prodml pipeline template --image IMAGE --out PATH`."
  type        = string
  default     = "../dist/dataflow-template.json"
}

variable "dataflow_max_workers" {
  description = "DATAFLOW_MAX_WORKERS: most workers one pipeline job may scale to."
  type        = number
  default     = 10
}

module "dataflow" {
  source = "./dataflow"
  count  = var.enable_dataflow ? 1 : 0

  project_id         = var.project_id
  region             = var.region
  name_prefix        = var.name_prefix
  data_bucket        = google_storage_bucket.data.name
  artifacts_bucket   = google_storage_bucket.artifacts.name
  predictions_bucket = google_storage_bucket.predictions.name
  launcher_email     = google_service_account.function["build_table"].email
  image_tag          = var.dataflow_image_tag
  template_spec_path = abspath("${path.root}/${var.dataflow_template_spec}")
  max_workers        = var.dataflow_max_workers
}

output "dataflow_env" {
  description = "Env vars that let build_table launch pipelines on Dataflow (put them in var.extra_env.build_table); empty when enable_dataflow is false."
  value       = var.enable_dataflow ? module.dataflow[0].env : {}
}

output "dataflow_image" {
  description = "Where to push the pipelines' image (docker build -f infra/dataflow/Dockerfile .); empty when enable_dataflow is false."
  value       = var.enable_dataflow ? module.dataflow[0].image : ""
}
