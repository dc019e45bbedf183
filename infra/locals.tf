# Everything computed before any resource: the functions, triggers and schedules read from
# infra/functions.json (THE one declaration: the local router and `prodml up` read it through
# shared/local/functions.py, Terraform here), their env vars, sizes, ingress and storage grants.
# This file holds no resource and no data source, so tests/test_infra.py can evaluate it with
# a real terraform binary and no provider (offline).

locals {
  declaration = jsondecode(file("${path.module}/functions.json"))

  # Deployed function name (the declaration's key) -> its spec. A package is a source folder:
  # build_table and build_table_event are two entry points of one zip and one identity.
  functions = {
    for name, spec in local.declaration.functions : name => merge(spec, {
      package       = basename(spec.source)
      resource_name = "${var.name_prefix}-${replace(name, "_", "-")}"
    })
  }
  packages = toset([for spec in local.functions : spec.package])

  # A 2nd gen function has at most one event trigger; keyed by the function it fires.
  triggers  = { for t in local.declaration.triggers : t.function => t }
  schedules = { for s in local.declaration.schedules : s.function => s }

  bucket_names = {
    data      = var.data_bucket != "" ? var.data_bucket : "${var.project_id}-prodml-data"
    artifacts = var.artifacts_bucket != "" ? var.artifacts_bucket : "${var.project_id}-prodml-artifacts"
    # No trigger on it (infra/functions.json names none): every flush of predict's log would
    # otherwise fire an event, and Eventarc cannot filter by prefix.
    predictions = var.predictions_bucket != "" ? var.predictions_bucket : "${var.project_id}-prodml-predictions"
  }

  # Settings of shared/config.py that mean something in the cloud (ports, local folders and
  # the local router's knobs do not; nor TRAIN_CRASH_FILE, a test hook that kills the trainer).
  # tests/test_infra.py checks each is a real Setting.
  deployable_settings = [
    "STORAGE_BACKEND", "DATA_BUCKET", "ARTIFACTS_BUCKET", "PREDICTIONS_BUCKET", "LOG_FORMAT", "LOG_LEVEL",
    "MAX_FILE_BYTES", "MAX_ROWS", "MAX_NULL_SHARE", "UNSEEN_CATEGORY_POLICY",
    "DRIFT_PSI_THRESHOLD", "DRIFT_POLICY", "TRAINING_STRATEGY", "TRAINING_WINDOW_FILES",
    "TRAINING_WINDOW_ROWS", "HOLDOUT_WINDOW_FILES", "PROMOTION_TOLERANCE", "HOLDOUT_FRACTION",
    "CAS_MAX_ATTEMPTS", "TRAIN_CLAIM_SECONDS", "ESTIMATOR", "MAX_MODEL_BYTES", "MAX_TABLE_BYTES",
    "MODEL_TRUSTED_TYPES", "RANDOM_SEED", "COMPILE_MODELS", "SERVING_MODE", "RELOAD_SECONDS", "THREADS",
    "MAX_BODY_BYTES", "MAX_INSTANCES", "TRAFFIC_FLUSH_SECONDS", "TRAFFIC_SKETCH_SIZE",
    "PREDICTION_LOG_RATE", "PREDICTION_LOG_MAX_ROWS", "PREDICTION_LOG_BATCH_ROWS",
    "PREDICTION_LOG_FLUSH_SECONDS", "MODEL_AGE_WARNING_SECONDS", "TABLE_AGE_WARNING_SECONDS", "TABLE_MAX_ROWS",
    "TABLE_CHUNK_ROWS", "TABLE_TOP_K", "TABLE_FUNCTION_BUDGET_SECONDS", "PIPELINE_MAX_ROWS",
    "PIPELINE_RUNNER", "DATAFLOW_PROJECT", "DATAFLOW_REGION", "DATAFLOW_TEMP_LOCATION",
    "DATAFLOW_SERVICE_ACCOUNT", "DATAFLOW_TEMPLATE", "DATAFLOW_MAX_WORKERS", "DATAFLOW_MACHINE_TYPE",
    "LABEL_WINDOW", "LABEL_DEFAULT", "JOIN_MAX_ROWS", "MAX_COLUMNS", "LEAKAGE_AUC", "LEAKAGE_POLICY",
    "LEAKAGE_SAMPLE_ROWS", "FEEDBACK_SHARE_WARNING", "FEEDBACK_LOG_OBJECTS", "FEEDBACK_TRAINING",
    "FEEDBACK_MIN_ROWS", "DASHBOARD_CACHE_SECONDS",
  ]

  # Env vars of every function: the GCS backend, the three buckets, JSON logs for Cloud Logging.
  common_env = {
    STORAGE_BACKEND    = "gcs"
    DATA_BUCKET        = local.bucket_names.data
    ARTIFACTS_BUCKET   = local.bucket_names.artifacts
    PREDICTIONS_BUCKET = local.bucket_names.predictions
    LOG_FORMAT         = "json"
    LOG_LEVEL          = var.log_level
  }
  # Env vars a package needs beyond those; var.extra_env adds or overrides per package.
  package_env = {
    # One gunicorn worker with THREADS request threads, as many as the instance's request
    # concurrency (default_resources below): ONNX Runtime releases the GIL while it computes, so
    # threads share one loaded model. Measured (docs/benchmarks.md, issue 14: 1 or 2 workers x 1,
    # 4 or 8 threads, 8 clients): no setting beat 1 x 8 beyond noise, 1 thread was slowest, and a
    # second worker holds a second model for nothing on 2 cores. Set explicitly: functions-
    # framework's default (4 x the cores it sees) would change with the instance's cpu.
    predict = { SERVING_MODE = var.serving_mode, THREADS = tostring(local.default_resources.predict.concurrency) }
    train   = { TRAINING_STRATEGY = var.training_strategy }
    # Table builds run inside the function: this deployment provisions no Dataflow (template,
    # worker account, roles). To scale out, set PIPELINE_RUNNER and DATAFLOW_* in extra_env
    # and grant what docs/scale-out.md asks.
    build_table = { PIPELINE_RUNNER = "function" }
    # The overview shows the deployment's serving mode: predict's, not the setting's default.
    dashboard = { SERVING_MODE = var.serving_mode }
  }
  function_env = {
    for name, spec in local.functions : name => merge(
      local.common_env,
      lookup(local.package_env, spec.package, {}),
      lookup(var.extra_env, spec.package, {}),
    )
  }

  # Sizes per deployed function. Event functions may run 540 s at most (Eventarc's limit for
  # 2nd gen); an HTTP function up to 3600 s, but Cloud Scheduler waits 1800 s at most.
  # concurrency > 1 needs cpu >= 1; predict serves concurrent requests from one loaded model.
  # predict's memory, measured (docs/deploy.md, "Package and memory sizes"): after warm-up a
  # local predict serving a compiled model holds about 100 MiB (PSS of gunicorn's two
  # processes; 89 dynamic, 100 with a 691,200-key table), one built with
  # PREDICT_SKLEARN_FALLBACK=1 serving a scikit-learn version about 243 MiB. A table is 16 bytes
  # a key and is held twice while it reloads: the in-function build writes at most TABLE_MAX_ROWS
  # (2,000,000) keys, 64 MB at a reload. 512Mi leaves twice the fallback's need; tables built by
  # Dataflow (up to PIPELINE_MAX_ROWS) need predict = { memory = "1Gi" } in function_resources.
  # predict's concurrency (8) and its THREADS: see package_env above.
  default_resources = {
    predict           = { memory = "512Mi", cpu = "1", timeout_seconds = 60, min_instances = 0, max_instances = 10, concurrency = 8 }
    train             = { memory = "2Gi", cpu = "1", timeout_seconds = 540, min_instances = 0, max_instances = 3, concurrency = 1 }
    build_table       = { memory = "2Gi", cpu = "1", timeout_seconds = 1800, min_instances = 0, max_instances = 1, concurrency = 1 }
    build_table_event = { memory = "2Gi", cpu = "1", timeout_seconds = 540, min_instances = 0, max_instances = 1, concurrency = 1 }
    # Pages for people: a few at a time; its caches (shared/dashboard/cache.py) hold the cards
    # and records it read, tens of MB with 1,000 versions and 10,000 records.
    dashboard = { memory = "1Gi", cpu = "1", timeout_seconds = 60, min_instances = 0, max_instances = 2, concurrency = 4 }
  }
  fallback_resources = { memory = "1Gi", cpu = "1", timeout_seconds = 300, min_instances = 0, max_instances = 1, concurrency = 1 }
  resources = {
    for name in keys(local.functions) : name => lookup(
      var.function_resources, name, lookup(local.default_resources, name, local.fallback_resources)
    )
  }

  # Only predict and the dashboard are reached from outside (both need an identity token of a
  # named invoker); event and scheduled functions are called by Eventarc and Cloud Scheduler,
  # which Cloud Run counts as internal traffic of the project.
  external = ["predict", "dashboard"]
  ingress = {
    for name, spec in local.functions : name => contains(local.external, name) ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
  }

  apis = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ]

  # Each grant: whose, on which bucket, which role, and the object prefixes it is limited to
  # (empty: the whole bucket). Bucket-level roles only, never project-level storage roles.
  storage_grants = {
    # predict reads schema, models and tables. A reader needs storage.objects.list, which is
    # checked on the bucket, not on an object, so a prefix condition cannot narrow the read.
    predict_read_artifacts = {
      package = "predict", bucket = "artifacts", role = "roles/storage.objectViewer", prefixes = []
    }
    # ... and writes its key counts under traffic/ only. Each flush creates a new object
    # (if_generation_match=0, shared/serving/traffic.py), never overwrites one: create is enough.
    predict_write_traffic = {
      package = "predict", bucket = "artifacts", role = "roles/storage.objectCreator", prefixes = ["traffic/"]
    }
    # ... and writes its prediction log under predictions/ only: each flush creates a new object
    # (if_generation_match=0, shared/feedback/log_format.py), never overwrites or deletes one.
    predict_write_predictions = {
      package = "predict", bucket = "predictions", role = "roles/storage.objectCreator", prefixes = ["predictions/"]
    }
    # train joins labels to the prediction log: it reads it, never writes it. (The CLI runs with
    # the operator's own credentials, not a service account of this deployment; docs/deploy.md.)
    train_read_predictions = {
      package = "train", bucket = "predictions", role = "roles/storage.objectViewer", prefixes = []
    }
    # train reads incoming files (and lists the bucket, which IAM conditions cannot narrow),
    # copies bad ones to quarantine/ and deletes them from incoming/: write and delete only there.
    train_read_data = {
      package = "train", bucket = "data", role = "roles/storage.objectViewer", prefixes = []
    }
    train_write_data = {
      package  = "train", bucket = "data", role = "roles/storage.objectUser",
      prefixes = ["incoming/", "quarantine/"]
    }
    # train reads the schema and the champion, and writes models, cards, idempotency markers,
    # monitoring records, and the feedback loop's stored labels, live report and emissions
    # (feedback/labels/, feedback/live.json, feedback/emitted/; an emission's data file goes to
    # incoming/feedback/ of the data bucket, within train_write_data).
    train_read_artifacts = {
      package = "train", bucket = "artifacts", role = "roles/storage.objectViewer", prefixes = []
    }
    train_write_artifacts = {
      package  = "train", bucket = "artifacts", role = "roles/storage.objectUser",
      prefixes = ["models/", "registry/", "monitoring/", "feedback/"]
    }
    # build_table reads schema, model and traffic, and writes tables/ (and tables/current.json).
    build_table_read_artifacts = {
      package = "build_table", bucket = "artifacts", role = "roles/storage.objectViewer", prefixes = []
    }
    build_table_write_tables = {
      package = "build_table", bucket = "artifacts", role = "roles/storage.objectUser", prefixes = ["tables/"]
    }
    # The dashboard only reads: the registry, monitoring, tables, traffic and the live report in
    # artifacts, and quarantine/ and incoming/ in data (listing is bucket-level, so no prefix
    # condition can narrow it). It never reads the prediction log itself: the live report is
    # train's summary of it.
    dashboard_read_artifacts = {
      package = "dashboard", bucket = "artifacts", role = "roles/storage.objectViewer", prefixes = []
    }
    dashboard_read_data = {
      package = "dashboard", bucket = "data", role = "roles/storage.objectViewer", prefixes = []
    }
  }

  # The IAM condition of each prefix-limited grant: any of its prefixes. The object's resource
  # name in IAM is "projects/_/buckets/<bucket>/objects/<name>".
  storage_grant_conditions = {
    for key, grant in local.storage_grants : key => join(" || ", [
      for prefix in grant.prefixes :
      "resource.name.startsWith(\"projects/_/buckets/${local.bucket_names[grant.bucket]}/objects/${prefix}\")"
    ]) if length(grant.prefixes) > 0
  }
}
