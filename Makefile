# Edge TPU fleet toolkit. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODEL ?=
ARGS ?=
# install-device: where the agent goes on a device (see scripts/install-device.sh)
PREFIX ?= /opt/edge-agent
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
UDEVDIR ?= /etc/udev/rules.d
SERVICE ?= yes
# Debian packages the tests need; installed with apt-get when missing and run as root.
# The camera tests: GStreamer's RTSP server (run by the system python3) and ffmpeg's MJPEG server;
# skopeo for the OCI artifact tests; systemd-analyze for the unit.
SYSTEM_PACKAGES := mosquitto docker-registry skopeo systemd gir1.2-gst-rtsp-server-1.0 python3-gi \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good ffmpeg

.DEFAULT_GOAL := help
.PHONY: help venv venv-dev system-deps demo test test-fast lint format bench compile models install-device clean

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

system-deps: ## install Mosquitto, the CNCF registry, skopeo, systemd-analyze, GStreamer's RTSP server and ffmpeg when missing (needs root)
	@bash scripts/system-deps.sh $(SYSTEM_PACKAGES)

demo: $(VENV)/.base ## classify the bundled sample images with the bundled model (and publish to MQTT)
	@bash scripts/system-deps.sh mosquitto
	$(PY) scripts/demo.py $(ARGS)

test: system-deps $(VENV)/.dev lint ## install everything, check lint and format, run the whole test suite
	$(PY) -m pytest $(ARGS)

test-fast: $(VENV)/.dev ## the test suite without the slow TensorFlow and fleet tests
	$(PY) -m pytest -m 'not slow and not edgetpu and not coral_data' $(ARGS)

lint: $(VENV)/.dev ## ruff check, ruff format --check and mypy (tests included)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy edge_agent registry compiler release_contract tests bench scripts

format: $(VENV)/.dev ## ruff format the tree and apply ruff's safe fixes
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: system-deps $(VENV)/.dev ## benchmarks: interleaved A/B pairs, medians and spread, one BENCH line each
	@for b in classify mqtt rollout cameras; do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

compile: $(VENV)/.dev ## quantize/check/compile a model: make compile MODEL=path/to/model.tflite
	@test -n "$(MODEL)" || { echo "usage: make compile MODEL=path/to/model.tflite [ARGS='...']"; exit 2; }
	$(VENV)/bin/edge-compile $(MODEL) $(ARGS)

models: $(VENV)/.base ## download Google's MobileNet v2 Edge TPU model and labels (needs internet; never used by tests)
	$(PY) scripts/download_models.py

install-device: ## on a device: venv in /opt/edge-agent, /usr/local/bin/edge-agent, systemd unit, udev rule (sudo)
	PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" SYSCONFDIR="$(SYSCONFDIR)" UNITDIR="$(UNITDIR)" UDEVDIR="$(UDEVDIR)" \
	SERVICE="$(SERVICE)" PYTHON="$(PYTHON)" bash scripts/install-device.sh

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .cache
