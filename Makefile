# Edge TPU fleet toolkit. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?=
ARGS ?=
# Debian packages the tests need; installed with apt-get when missing and run as root.
SYSTEM_PACKAGES := mosquitto docker-registry

.DEFAULT_GOAL := help
.PHONY: help venv venv-dev system-deps demo test test-fast lint format bench compile models clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.base: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,compiler,registry]'
	@touch $(VENV)/.base $@

venv: $(VENV)/.base ## create the virtualenv with the agent only (no TensorFlow)

venv-dev: $(VENV)/.dev ## the virtualenv with the compiler, registry and test extras

system-deps: ## install Mosquitto and the CNCF registry with apt-get when missing (needs root)
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

demo: $(VENV)/.base ## classify the bundled sample images with the bundled model (and publish to MQTT)
	@bash scripts/system-deps.sh mosquitto
	$(PY) scripts/demo.py $(ARGS)

test: system-deps $(VENV)/.dev lint ## install everything, check lint and format, run the whole test suite
	$(PY) -m pytest $(ARGS)

test-fast: $(VENV)/.dev ## the test suite without the slow TensorFlow and fleet tests
	$(PY) -m pytest -m 'not slow and not edgetpu' $(ARGS)

lint: $(VENV)/.dev ## ruff check, ruff format --check and mypy (tests included)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy edge_agent registry compiler release_contract tests bench scripts

format: $(VENV)/.dev ## ruff format the tree and apply ruff's safe fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: system-deps $(VENV)/.dev ## benchmarks: interleaved A/B pairs, medians and spread, one BENCH line each
	@for b in classify mqtt rollout; do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

compile: $(VENV)/.dev ## quantize/check/compile a model: make compile MODEL=path/to/model.tflite
	@test -n "$(MODEL)" || { echo "usage: make compile MODEL=path/to/model.tflite [ARGS='...']"; exit 2; }
	$(VENV)/bin/edge-compile $(MODEL) $(ARGS)

models: $(VENV)/.base ## download Google's MobileNet v2 Edge TPU model and labels (needs internet; never used by tests)
	$(PY) scripts/download_models.py

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache
