# Ablation harness: Siamese vs asymmetric BERT bi-encoders on ArguAna best-counterargument retrieval.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= experiments/quick.yaml
WORKERS ?= auto
# test files run in parallel, one pytest worker each: most of a slow test waits on its processes and services
TEST_WORKERS ?= 2
ARGS ?=
DEVICE ?= cuda
STUDY ?= quick
PORT ?= 5000
DASH_PORT ?= 8080
# The corpus: ARGUANA_DIR if set, else the shared copy beside the repo when present, else data/.
ARGUANA_DIR ?= $(if $(wildcard ../shared/data/arguana-counterargs),$(abspath ../shared/data/arguana-counterargs),$(CURDIR)/data/arguana-counterargs)
export ARGUANA_DIR
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.DEFAULT_GOAL := help
.PHONY: help install lint format test test-fast ablation depth recipe smoke report ui bench gpu-check services dashboard data-stats zero-shot clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  code: ablation/{data → evaluation → training → tracking → study → report → bench}, models/ (README: Layout)"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install the project with test extras

lint: $(VENV)/.installed ## ruff check and ruff format --check (line length 120)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint ## lint, then every test (slow and real-corpus ones included; a missing corpus or browser fails), TEST_WORKERS files at a time
	ABLATION_REQUIRE_ALL=1 $(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-fast: $(VENV)/.installed ## run the tests not marked slow
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

ablation: $(VENV)/.installed ## run the study in EXPERIMENT (default quick) with WORKERS workers, then the report
	$(PY) -m ablation run --config $(EXPERIMENT) --workers $(WORKERS) $(ARGS)

depth: $(VENV)/.installed ## the depth sweep (experiments/depth.yaml: shared vs unshared at 5, 3 and 0 frozen layers) with WORKERS workers, then its report
	$(PY) -m ablation run --config experiments/depth.yaml --workers $(WORKERS) $(ARGS)

recipe: $(VENV)/.installed ## the loss sweep (experiments/recipe.yaml: shared, unshared, shared_projection under the triplet and the in-batch contrastive loss, 128 tokens) with WORKERS workers, then its report
	$(PY) -m ablation run --config experiments/recipe.yaml --workers $(WORKERS) $(ARGS)

smoke: $(VENV)/.installed ## the smoke study (tiny random BERT, seconds)
	$(PY) -m ablation run --config experiments/smoke.yaml

report: $(VENV)/.installed ## rebuild reports/STUDY from MLflow (STUDY=quick)
	$(PY) -m ablation report --study $(STUDY)

ui: $(VENV)/.installed ## mlflow ui on 127.0.0.1:PORT (MLFLOW_TRACKING_URI or mlflow.db); prints the link to STUDY's comparison
	$(PY) -m ablation ui --study $(STUDY) --port $(PORT)

bench: $(VENV)/.installed ## speed/memory benchmark → reports/bench/bench.json
	$(PY) -m ablation bench

dashboard: $(VENV)/.installed ## optuna-dashboard on 127.0.0.1:$(DASH_PORT) over EXPERIMENT's tuning storage (ARGS for --set)
	$(PY) -m ablation dashboard --config $(EXPERIMENT) --port $(DASH_PORT) $(ARGS)

services: $(VENV)/.installed ## PostgreSQL (127.0.0.1:55432) + mlflow server (127.0.0.1:$(PORT)) in .services/ until Ctrl-C
	$(PY) -m ablation services --port $(PORT)

gpu-check: $(VENV)/.installed ## the CUDA path on one GPU (DEVICE=cuda): device tests, P1/P7 in bf16, a repeat → reports/gpu-check/
	$(PY) -m ablation gpu-check --device $(DEVICE)

data-stats: $(VENV)/.installed ## per-task statistics of the test split
	$(PY) -m ablation data-stats --split test

zero-shot: $(VENV)/.installed ## zero-shot all-MiniLM-L6-v2 on the test split
	$(PY) -m ablation evaluate --split test --zero-shot --max-length 128

clean: ## remove caches (keeps .venv, runs, MLflow store and reports)
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
