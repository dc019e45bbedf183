# Terraform and provider versions. The google provider is pinned exactly so that a plan made
# today and one made next month talk to the same resource schemas; bump it deliberately.
terraform {
  required_version = ">= 1.9.0" # variable validations refer to locals (1.9+)

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "6.26.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
