# sslops: `make demo` runs the whole pipeline on UCI Adult; `make test` runs the test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/adult.yaml
OUT    ?= runs/demo

.PHONY: help demo test test-slow test-all lint format compile dvc-repro clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision are pinned in pyproject.toml; the local wheel cache serves them offline.
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## run the full pipeline locally (kfp.local) on UCI Adult into runs/demo
	$(BIN)/sslops run --config $(CONFIG) --out $(OUT)

test: $(STAMP)  ## the default test suite (no slow/ddp/gpu tests)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)  ## slow tests: the full-size pipeline and benchmarks' smoke runs
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)  ## every test that can run without a GPU
	$(BIN)/python -m pytest -q -m 'not gpu'

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check src tests components pipelines benchmarks scripts
	$(BIN)/ruff format --check src tests components pipelines benchmarks scripts
	$(BIN)/mypy src

format: $(STAMP)
	$(BIN)/ruff check --fix src tests components pipelines benchmarks scripts
	$(BIN)/ruff format src tests components pipelines benchmarks scripts

compile: $(STAMP)  ## recompile pipelines/compiled/ from the pipeline source
	$(BIN)/python pipelines/ssl_pipeline.py

dvc-repro: $(STAMP)  ## reproduce the stages of dvc.yaml with params.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean:
	rm -rf runs artifacts .pytest_cache .ruff_cache .mypy_cache
