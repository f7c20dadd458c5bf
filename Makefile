# The front door. Every target sets up the locked environment first (uv, from uv.lock).
#   make run TASK=iflytek METHOD=fgm            one run (fetches data and checkpoint if missing)
#   make test                                   the test suite
SHELL := bash
.DEFAULT_GOAL := help

TASK ?= tnews
METHOD ?= baseline
MODEL ?= bert_base
SEED ?= 0
ARGS ?=

# uv from PATH, else the copy pip installs on first use.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY := .venv/bin/python
ENV_STAMP := .venv/.synced

.PHONY: help env run test
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(ENV_STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

env: $(ENV_STAMP)  ## create .venv from uv.lock

run: $(ENV_STAMP)  ## train one run: TASK= METHOD= MODEL= SEED= ARGS="hydra overrides"
	$(PY) -m experiments.run task=$(TASK) method=$(METHOD) model=$(MODEL) seed=$(SEED) $(ARGS)

test: $(ENV_STAMP)  ## run the test suite
	$(PY) -m pytest
