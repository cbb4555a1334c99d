# The two commands a new user needs: `make demo` and `make test`. Each creates or refreshes the
# project virtualenv (.venv) from the pinned lock, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The stamp is rebuilt whenever the lock or the project metadata changes.
STAMP := $(VENV)/.embedgate-installed

export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := 1

.PHONY: demo test lint venv clean browser mlflow-server s3-test-server

venv: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/embedgate demo

test: $(STAMP) browser mlflow-server s3-test-server
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The drift dashboard test screenshots the Evidently UI with headless Chromium (Debian's package). As root (CI,
# fresh machines here) it is installed; otherwise the test is skipped locally and says how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the dashboard screenshot test ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is not installed (apt-get install chromium); the dashboard screenshot test will be skipped"; fi; }

# The MLflow tracking test starts a real `mlflow server`. Full mlflow pins pyarrow<26, which the project's lock
# cannot take, so the server gets its own environment (the pipeline itself only needs the mlflow-skinny client).
MLFLOW_VENV ?= .venv-mlflow
mlflow-server: $(MLFLOW_VENV)/.installed

$(MLFLOW_VENV)/.installed: requirements/mlflow-server.txt
	@test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install --quiet -r requirements/mlflow-server.txt
	@touch $@

# One formatter (ruff format, configured in pyproject.toml) and one linter; CI runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check training gates service tests benchmarks
	$(VENV)/bin/ruff format --check training gates service tests benchmarks

clean:
	rm -rf artifacts registry .pytest_cache

# moto's S3 server for the registry-on-object-storage tests (tests/service/s3_server.py), in a venv of its own:
# botocore needs python-dateutil<3 and the project lock pins 4.
S3_VENV := .venv-s3
s3-test-server: $(S3_VENV)/.installed

$(S3_VENV)/.installed: requirements/s3-test-server.txt
	@test -x $(S3_VENV)/bin/python || $(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install --quiet -r requirements/s3-test-server.txt
	@touch $@
