# Thin wrappers over the `kit` command. Every target creates .venv on first use.
#   make demo | make test | make data train COMP=ai-vs-human MODEL=effnetb4
# Two installs into one .venv: `make install` is kit and its runtime dependencies (what the kit targets need);
# `make dev` adds the developer tools (pytest, ruff, import-linter, hadolint, uv, keras-cv, keras-hub), which test, lint
# and bench need. Each has its own stamp, so a user install upgrades to a developer one on the first `make test`.
# Any lower-case key=value on the make command line is passed to kit as a setting:
#   make train MODEL=resnet50 weights=/path/resnet50.weights.h5 train.epochs=3
# COMP and MODEL given on the command line are remembered in .kit-last.mk for the next targets,
# so `make records COMP=ai-vs-human MODEL=effnetb4` then `make train` trains the same pair.

.NOTPARALLEL:
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KIT := $(BIN)/kit
# Each stamp is newer than setup.cfg and pyproject.toml when its install is current; a dev install is also a user one.
STAMP := $(VENV)/.kit-installed
DEV_STAMP := $(VENV)/.kit-dev-installed
# make test-min: a second venv with the lowest versions setup.cfg allows (uv's --resolution lowest-direct).
VENV_MIN ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.kit-min-installed
# The tests test-min runs: the data path (tables, images, records, pipeline), training on tiny data, k-fold,
# predict, evaluate, audit, submission, the CLI and the Kaggle client (fake server). tests/test_install.py first
# checks that the installed versions are exactly the floors.
MIN_TESTS ?= tests/test_install.py tests/test_images.py tests/test_sources.py tests/test_tfrecord.py tests/test_records.py \
             tests/test_pipeline.py tests/test_trainer.py tests/test_kfold.py tests/test_predict.py tests/test_evaluate.py \
             tests/test_audit.py tests/test_submission.py tests/test_config.py tests/test_cli.py tests/test_kaggle.py \
             tests/test_duplicate_groups.py
DOCKER ?= docker

-include .kit-last.mk
COMP ?= demo
MODEL ?= resnet20
TUNER ?=
QUICK ?=
DRY_RUN ?=
ARGS ?=
IMAGE ?= kit-gpu:latest
# The commit docker-build bakes into the image (it has no .git): submit messages and kernel notes name it.
KIT_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null)

ifneq ($(filter command line,$(origin COMP) $(origin MODEL)),)
$(shell printf 'COMP ?= %s\nMODEL ?= %s\n' '$(COMP)' '$(MODEL)' > .kit-last.mk)
endif

# key=value words from the make command line that are kit settings (lower-case or dotted names).
MAKE_VARS := COMP MODEL TUNER QUICK DRY_RUN ARGS PYTHON VENV VENV_MIN MIN_TESTS IMAGE DOCKER KIT_COMMIT GPU_PYTHON
SETTINGS := $(strip $(foreach v,$(filter-out $(MAKE_VARS),$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),'$(v)=$($(v))')))
KIT_ARGS := $(strip comp=$(COMP) model=$(MODEL) $(if $(TUNER),tuner.kind=$(TUNER)) $(SETTINGS) $(ARGS))

.PHONY: help install dev demo data records train tune evaluate predict submit audit runs export lr-find kernel \
        test test-fast test-loaded test-min lint bench gpu-check \
        docker-build docker-train docker-shell clean

# One line per target; `make help` prints them (keep in step with the targets below).
HELP_LINES := \
  "install        create .venv and install kit with its runtime dependencies (every kit target does this on first use)" \
  "dev            install kit with its developer tools too (test, lint and bench do this on first use)" \
  "demo           the whole pipeline offline on the digits demo: data, records, train, evaluate, predict, score" \
  "data           get the competition into data/raw/COMP (comp=demo is written locally) and index it" \
  "records        write the TFRecords for MODEL's image size (train and tune also build missing or stale ones)" \
  "train          train MODEL on COMP (builds the records first when needed); folds=5 for k-fold" \
  "tune           search MODEL's hyperparameters (TUNER=hyperband|random|bayesian); writes best_hparams.yaml" \
  "evaluate       score the newest run on the validation split: metrics.json, threshold, plots" \
  "predict        predict the test split with the newest run (TTA, ensembles) into a validated submission.csv" \
  "submit         upload the newest submission.csv and wait for the score (DRY_RUN=1: check only; a code competition: its kernel)" \
  "audit          audit the data before training: balance, sizes, duplicates, shortcuts; report and plots" \
  "runs           every run of COMP in one table: best val, CV, threshold, public score (ARGS=\"--diff A B\")" \
  "export         export the newest run's best.keras: format=savedmodel|tflite|onnx, checked in its own runtime" \
  "lr-find        the learning-rate range test for MODEL on COMP: lr_find.png and the rate to set" \
  "kernel         build and push a Kaggle kernel that trains and predicts (ARGS=\"--from-run RUN\": predict only)" \
  "test           run the test suite (2 workers)" \
  "test-fast      the tests not marked slow (no subprocess or training): the edit-test loop, under a minute" \
  "test-loaded    run the test suite beside a CPU hog (stress-ng): no test may depend on the machine's speed" \
  "test-min       a fast subset of the tests in $(VENV_MIN), with the lowest versions setup.cfg allows" \
  "lint           ruff check, ruff format --check and the import-layer contracts" \
  "bench          run the benchmarks (QUICK=1 for the short set)" \
  "gpu-check      on a machine with a GPU: step times, input pipeline, jitter, strategies, demo (< 8 min; no install)" \
  "docker-build   build the GPU image (IMAGE=$(IMAGE)) for your uid/gid, with this checkout's commit" \
  "docker-train   train inside the GPU image (data, runs, ~/.keras, ./configs and any weights= path mounted)" \
  "docker-shell   a shell inside the GPU image" \
  "clean          remove build outputs and caches"

help:
	@echo "make TARGET [COMP=$(COMP)] [MODEL=$(MODEL)] [key=value ...]   e.g. make data train COMP=demo MODEL=cnn train.epochs=1"
	@for line in $(HELP_LINES); do echo "  $$line"; done

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e .
	@touch $@

# The dev install includes the user one: its stamp is touched too, so `make install` after `make dev` does nothing.
$(DEV_STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP) $@

install: $(STAMP)

dev: $(DEV_STAMP)

demo: $(STAMP)
	$(KIT) demo $(SETTINGS) $(ARGS)

data: $(STAMP)
	$(KIT) data $(KIT_ARGS)

records: $(STAMP)
	$(KIT) records $(KIT_ARGS)

train: $(STAMP)
	$(KIT) train $(KIT_ARGS)

tune: $(STAMP)
	$(KIT) tune $(KIT_ARGS)

evaluate: $(STAMP)
	$(KIT) evaluate $(KIT_ARGS)

predict: $(STAMP)
	$(KIT) predict $(KIT_ARGS)

# A competition whose YAML says code_competition: true gets its kernel version submitted (kit submit --kernel).
submit: $(STAMP)
	$(KIT) submit $(KIT_ARGS) $(if $(DRY_RUN),--dry-run)

audit: $(STAMP)
	$(KIT) audit $(KIT_ARGS)

runs: $(STAMP)
	$(KIT) runs comp=$(COMP) $(SETTINGS) $(ARGS)

export: $(STAMP)
	$(KIT) export $(KIT_ARGS)

lr-find: $(STAMP)
	$(KIT) lr-find $(KIT_ARGS)

kernel: $(STAMP)
	$(KIT) kernel push $(KIT_ARGS)

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

# The edit-test loop: the tests not marked slow (no subprocess, worker pool or training; tests/conftest.py fails one
# that does without the mark). make test stays the complete suite.
test-fast: $(DEV_STAMP)
	KIT_TEST_FAST=1 $(BIN)/python -m pytest -n 2 -q -m "not slow" tests

# A fresh venv each time the requirements change: nothing left over from earlier floors. uv comes with `make dev`.
$(MIN_STAMP): setup.cfg pyproject.toml | $(DEV_STAMP)
	rm -rf $(VENV_MIN)
	$(BIN)/uv venv -q --python $(PYTHON) $(VENV_MIN)
	$(BIN)/uv pip install -q --python $(VENV_MIN)/bin/python --resolution lowest-direct -e '.[test]'
	@touch $@

test-min: $(MIN_STAMP)
	KIT_TEST_MIN_VERSIONS=1 $(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider $(MIN_TESTS)

# `make test` with a CPU hog beside it (stress-ng --cpu 4): the suite must not depend on how fast the machine is.
# stress-ng is started here and always stopped, whether the tests pass, fail or are interrupted.
test-loaded: $(DEV_STAMP)
	@command -v stress-ng >/dev/null || { echo "test-loaded needs stress-ng: apt-get install stress-ng" >&2; exit 2; }
	@stress-ng --cpu 4 --timeout 3h --quiet & hog=$$!; \
	trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT INT TERM; \
	start=$$(date +%s); $(MAKE) --no-print-directory test; status=$$?; \
	echo "make test beside stress-ng --cpu 4: exit $$status after $$(( $$(date +%s) - start )) s"; exit $$status

lint: $(DEV_STAMP)
	$(BIN)/ruff check kit tests bench
	$(BIN)/ruff format --check kit tests bench
	$(BIN)/lint-imports

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(ARGS)

# The GPU check installs nothing (a lent GPU machine may have no network): it runs with .venv's Python when there is
# one, else $(PYTHON); GPU_PYTHON=... names another that has TensorFlow with CUDA. Without a GPU it says so and exits 0.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m bench --only GPU $(if $(QUICK),--quick) $(ARGS)

# The image's user gets your uid and gid, so the mounted data/, runs/ and ~/.keras stay yours and writable.
docker-build:
	$(DOCKER) build -f docker/Dockerfile.gpu --build-arg UID=$$(id -u) --build-arg GID=$$(id -g) \
	  --build-arg KIT_COMMIT=$(KIT_COMMIT) -t $(IMAGE) .

docker-train:
	scripts/docker-run.sh $(IMAGE) train $(KIT_ARGS)

docker-shell:
	scripts/docker-run.sh $(IMAGE) bash

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
