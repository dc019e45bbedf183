# The project and the Google APIs the deployment uses. What is deployed is computed in
# locals.tf from infra/functions.json.

resource "google_project_service" "api" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project = var.project_id
  service = each.value
  # Leave APIs on when the deployment is destroyed: other things in the project may use them.
  disable_on_destroy = false
}
