# The commands a user types. Every target bootstraps what it needs on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck bench soak demo up package deploy clean
.PHONY: venv-beam browser screenshots

venv: $(STAMP)

# Reinstall when the pins or the package metadata change.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: venv venv-beam
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check shared functions tests bench infra
	$(BIN)/ruff format --check shared functions tests bench infra

# mypy --strict ([tool.mypy] in pyproject.toml): shared/ in one run, then each function's main.py in
# its own run, because all three are a top-level module named `main`.
typecheck: venv
	$(BIN)/mypy
	for main in functions/*/main.py; do $(BIN)/mypy "$$main" || exit 1; done

bench: venv venv-beam
	$(BIN)/python -m bench

# The local stack under Zipf traffic, file drops (some bad), duplicate deliveries and kill -9 of
# function processes, then its invariants checked; SOAK_SECONDS (default 180) sets how long.
soak: venv
	$(BIN)/python -m bench.soak

# The local stack (functions, file-drop router, scheduler) until Ctrl-C; UP_ARGS e.g. --state DIR.
up: venv
	$(BIN)/prodml up $(UP_ARGS)

# The whole story on synthetic data; DEMO_ARGS e.g. --short.
demo: venv
	$(BIN)/prodml demo $(DEMO_ARGS)

# The dashboard's pages after `make demo`, shot in headless Chromium for the README
# (docs/screenshots/); `make browser` first.
screenshots: venv
	$(BIN)/python -m bench.screenshots .local/demo docs/screenshots

# Headless Chromium for the dashboard's browser tests (tests/dashboard/test_browser.py), from
# Debian's package: Playwright (requirements-dev.txt) drives /usr/bin/chromium, and no browser is
# ever downloaded (`playwright install` is not used). Without it those tests skip, saying so.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then echo "make browser: $(CHROMIUM) is installed"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "make browser: apt-get is not available: install Debian's chromium package (or a Chromium at $(CHROMIUM)) yourself" >&2; exit 1; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "make browser: installing chromium needs root: run 'sudo make browser' (or 'sudo apt-get install chromium')" >&2; exit 1; \
	else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

clean:
	rm -rf $(VENV) $(VENV_BEAM) $(VENV_CHECKOV) .local dist .pytest_cache .ruff_cache .mypy_cache

# The Apache Beam environment (scale-out pipelines, docs/scale-out.md): a second venv, because
# Beam pins pyarrow<26 and protobuf<7 (see requirements-beam.txt). It gets requirements.txt
# minus the packages requirements-beam.txt re-pins, so every scoring library is the same version.
VENV_BEAM := .venv-beam
BEAM_STAMP := $(VENV_BEAM)/.installed
BEAM_PINNED = $$(sed -nE 's/^([A-Za-z0-9_.-]+)(\[.*\])?==.*/\1/p' requirements-beam.txt | paste -sd'|')

venv-beam: $(BEAM_STAMP)

$(BEAM_STAMP): requirements.txt requirements-beam.txt pyproject.toml
	test -x $(VENV_BEAM)/bin/python || $(PYTHON) -m venv $(VENV_BEAM)
	$(VENV_BEAM)/bin/python -m pip install --quiet --upgrade pip
	grep -viE "^($(BEAM_PINNED))==" requirements.txt > $(VENV_BEAM)/requirements-main.txt
	$(VENV_BEAM)/bin/python -m pip install --quiet -r $(VENV_BEAM)/requirements-main.txt -r requirements-beam.txt
	$(VENV_BEAM)/bin/python -m pip install --quiet --no-deps -e .
	touch $(BEAM_STAMP)

# --- deploy to GCP (docs/deploy.md) --------------------------------------------------------------
.PHONY: check-infra
TERRAFORM ?= terraform
VENV_CHECKOV := .venv-checkov
CHECKOV_STAMP := $(VENV_CHECKOV)/.installed

# dist/<function>.zip for each function source folder; reproducible (same sources, same bytes).
# PREDICT_SKLEARN_FALLBACK=1 adds functions/predict/requirements-sklearn.txt to predict's zip, so it
# can serve versions that have no compiled form (docs/deploy.md); `make deploy` passes it on.
PREDICT_SKLEARN_FALLBACK ?= 0
package:
	PREDICT_SKLEARN_FALLBACK=$(PREDICT_SKLEARN_FALLBACK) $(PYTHON) infra/package.py

# Package, then create or update the deployment. Needs terraform >= 1.9, gcloud credentials
# (gcloud auth application-default login) and infra/terraform.tfvars. DEPLOY_ARGS e.g. -auto-approve.
deploy: package
	@command -v $(TERRAFORM) >/dev/null 2>&1 || { echo "make deploy: terraform is not installed (Terraform >= 1.9 is needed; see docs/deploy.md). The zips are built in dist/." >&2; exit 1; }
	@test -f infra/terraform.tfvars || { echo "make deploy: infra/terraform.tfvars is missing: cp infra/terraform.tfvars.example infra/terraform.tfvars and set project_id" >&2; exit 1; }
	$(TERRAFORM) -chdir=infra init -input=false
	$(TERRAFORM) -chdir=infra apply -input=false $(DEPLOY_ARGS)

# checkov scans infra/ in its own venv (checkov pins many packages); every skip has its reason inline.
check-infra: $(CHECKOV_STAMP)
	$(VENV_CHECKOV)/bin/checkov --directory infra --framework terraform --compact --quiet --skip-download

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(VENV_CHECKOV)/bin/python || $(PYTHON) -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_CHECKOV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)
