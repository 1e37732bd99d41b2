# Entry points. Every target does its own set-up: `.venv` is created and the pinned stack installed
# (scripts/install.sh, the same script CI and the Dockerfile use) whenever the requirements change.
#
#   make serve [MODEL=slowfast_r50] [CHECKPOINT=path.pyth] [LABELS=labels.json] [NAME=name] [RANDOM_INIT=1]
#   make stop
#   make test            the whole suite (unit, parity, TorchServe integration) plus lint
#   make archive MODEL=... CHECKPOINT=...|RANDOM_INIT=1
#   make download MODEL=...

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL ?= slowfast_r50
CHECKPOINT ?=
LABELS ?=
NAME ?=
RANDOM_INIT ?=
PYTEST_ARGS ?=

weights_args = $(if $(filter 1 yes true,$(RANDOM_INIT)),--random-init,$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)))
model_args = --model $(MODEL) $(weights_args) $(if $(LABELS),--labels $(LABELS)) $(if $(NAME),--name $(NAME))

.PHONY: setup serve stop status archive download test lint clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt scripts/install.sh
	scripts/install.sh --venv $(VENV) --dev
	touch $@

serve: $(STAMP)
	$(PY) scripts/serve.py start $(model_args)

stop: $(STAMP)
	$(PY) scripts/serve.py stop

status: $(STAMP)
	$(PY) scripts/serve.py status

archive: $(STAMP)
	$(PY) scripts/build_archive.py $(model_args)

download: $(STAMP)
	$(PY) scripts/download_weights.py $(MODEL)

lint: $(STAMP)
	$(VENV)/bin/ruff check handler scripts tests
	$(VENV)/bin/ruff format --check handler scripts tests

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build run .pytest_cache .ruff_cache model_store/*.mar model_store/*.build.json
