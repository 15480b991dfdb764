# Thin wrappers over the `kit` command. Every target creates .venv on first use.
#   make demo | make test | make data train COMP=ai-vs-human MODEL=effnetb4
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
STAMP := $(VENV)/.kit-installed

-include .kit-last.mk
COMP ?= demo
MODEL ?= resnet20
TUNER ?=
QUICK ?=
DRY_RUN ?=
ARGS ?=
IMAGE ?= kit-gpu:latest

ifneq ($(filter command line,$(origin COMP) $(origin MODEL)),)
$(shell printf 'COMP ?= %s\nMODEL ?= %s\n' '$(COMP)' '$(MODEL)' > .kit-last.mk)
endif

# key=value words from the make command line that are kit settings (lower-case or dotted names).
MAKE_VARS := COMP MODEL TUNER QUICK DRY_RUN ARGS PYTHON VENV IMAGE
SETTINGS := $(strip $(foreach v,$(filter-out $(MAKE_VARS),$(.VARIABLES)),$(if $(filter command line,$(origin $(v))),'$(v)=$($(v))')))
KIT_ARGS := $(strip comp=$(COMP) model=$(MODEL) $(if $(TUNER),tuner.kind=$(TUNER)) $(SETTINGS) $(ARGS))

.PHONY: help install demo data records train tune evaluate predict submit audit kernel test test-loaded lint bench \
        docker-build docker-train docker-shell clean

help:
	@echo "make demo | test | data | records | train | tune | evaluate | predict | submit | audit | kernel | bench | lint"
	@echo "         docker-build | docker-train | docker-shell     (COMP=$(COMP) MODEL=$(MODEL))"

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

install: $(STAMP)

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

submit: $(STAMP)
	$(KIT) submit $(KIT_ARGS) $(if $(DRY_RUN),--dry-run)

audit: $(STAMP)
	$(KIT) audit $(KIT_ARGS)

kernel: $(STAMP)
	$(KIT) kernel push $(KIT_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

# `make test` with a CPU hog beside it (stress-ng --cpu 4): the suite must not depend on how fast the machine is.
# stress-ng is started here and always stopped, whether the tests pass, fail or are interrupted.
test-loaded: $(STAMP)
	@command -v stress-ng >/dev/null || { echo "test-loaded needs stress-ng: apt-get install stress-ng" >&2; exit 2; }
	@stress-ng --cpu 4 --timeout 3h --quiet & hog=$$!; \
	trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT INT TERM; \
	start=$$(date +%s); $(MAKE) --no-print-directory test; status=$$?; \
	echo "make test beside stress-ng --cpu 4: exit $$status after $$(( $$(date +%s) - start )) s"; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check kit tests bench
	$(BIN)/ruff format --check kit tests bench
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(ARGS)

docker-build:
	docker build -f docker/Dockerfile.gpu -t $(IMAGE) .

docker-train:
	scripts/docker-run.sh $(IMAGE) train $(KIT_ARGS)

docker-shell:
	scripts/docker-run.sh $(IMAGE) bash

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
