# cxrlab: `make repro` runs the pipeline, `make test` runs the tests. Both create the
# virtual environment in .venv and install the project on first use.

VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

.PHONY: install repro test lint format
install: $(VENV)/.installed

repro: install
	dvc repro

test: install
	pytest

lint: install
	ruff check . && ruff format --check .

format: install
	ruff check --fix . && ruff format .
