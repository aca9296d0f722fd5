# sslops: `make demo` runs the whole pipeline on UCI Adult; `make test` runs the test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/adult.yaml
OUT    ?= runs/demo
CHECKOV_VENV := .tools/checkov
CHECKOV      := $(CHECKOV_VENV)/bin/checkov
CHECKOV_VERSION ?= 3.3.30
VERSION  = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= $(or $(SSLOPS_IMAGE_REGISTRY),ghcr.io/sslops)
# The commit an image is built from, recorded in it (Containerfile ARG REVISION).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
# The checkov test fails instead of skipping when the scanner is missing.
CHECKOV_ENV = SSLOPS_CHECKOV=$(CURDIR)/$(CHECKOV) SSLOPS_REQUIRE_CHECKOV=1

.PHONY: help demo test test-slow test-all lint format compile dvc-repro clean test-ddp bench-pretrain bench-gpu checkov image lock dist

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

test: $(STAMP) $(CHECKOV)  ## the default test suite (no slow/ddp/gpu/reliability tests; includes the checkov scan)
	$(CHECKOV_ENV) $(BIN)/python -m pytest -q

test-slow: $(STAMP)  ## slow tests: end-to-end sslops runs (the full-size Adult demo, MNIST, GunPoint, a few more)
	$(BIN)/python -m pytest -q -m slow

test-ddp: $(STAMP)  ## multi-process tests: torchrun pretraining on 2 gloo ranks equals 1 process
	$(BIN)/python -m pytest -q -m 'ddp and not gpu'

bench-pretrain: $(STAMP)  ## SimCLR throughput and quality vs lightly 1.6 (installs the bench extra; ~45 min on 2 cores)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/pretrain_simclr_vs_lightly.py --phase all --rounds 3 --steps 4 \
		--recipe digits --ssl-epochs 12 --supervised-epochs 100 30 --draws 3 \
		--out runs/bench/pretrain_simclr_vs_lightly.json

bench-gpu: $(STAMP)  ## GPU pretraining throughput + share of bf16 peak (SimCLR ResNet-18, MAE ViT-Tiny; needs CUDA)
	$(BIN)/torchrun --standalone --nproc-per-node $(or $(GPUS),1) benchmarks/gpu_pretrain.py \
		--out runs/bench/gpu_pretrain.json

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
	$(BIN)/python pipelines/shadow_pipeline.py
	$(BIN)/python pipelines/predict_pipeline.py

# checkov pins many packages of its own: it lives in its own environment, never in the package's.
$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'

checkov: $(STAMP) $(CHECKOV)  ## checkov scan of the rendered Helm/kustomize manifests and the Containerfile
	$(CHECKOV_ENV) $(BIN)/python -m pytest -q -m checkov tests/test_k8s_checkov.py

lock: $(STAMP)  ## resolve image.lock again: the image's packages besides torch, by version and sha256 (needs the index)
	.venv/bin/python scripts/lock_image.py

dist: $(STAMP)  ## sdist + wheel into dist/ with SHA256SUMS: the same bytes from one commit (scripts/build_dist.py)
	$(BIN)/python scripts/build_dist.py --out dist

image:  ## print the commands that build the CPU and CUDA images (registry: SSLOPS_IMAGE_REGISTRY)
	@echo "docker build -f Containerfile --build-arg VARIANT=cpu --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(REGISTRY)/sslops:$(VERSION) ."
	@echo "docker build -f Containerfile --build-arg VARIANT=cuda --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(REGISTRY)/sslops:$(VERSION)-cuda ."

dvc-repro: $(STAMP)  ## reproduce the stages of dvc.yaml with params.yaml
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean:
	rm -rf runs artifacts .pytest_cache .ruff_cache .mypy_cache

# Reliability and security hygiene (issue 7); docs/reliability.md lists what each target proves.
SECURITY_VENV  := .tools/security
SECURITY_TOOLS := $(SECURITY_VENV)/.installed
PURELIB = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: test-reliability fuzz bandit audit-deps

test-reliability: $(STAMP)  ## fault injection, fuzzing, concurrent runs, secrets (tests/reliability; ~6 min on 2 cores)
	$(BIN)/python -m pytest -q -m 'not gpu' tests/reliability

fuzz: $(STAMP)  ## new random fuzz cases, 5x as many (the suite's own are fixed); a failure prints its @reproduce_failure
	SSLOPS_FUZZ_RANDOM=1 SSLOPS_FUZZ_SCALE=$${SSLOPS_FUZZ_SCALE:-5} $(BIN)/python -m pytest -q -m 'not gpu and not slow' tests/reliability/test_fuzz_inputs.py tests/test_fuzz_*.py

# bandit and pip-audit live in their own environment, like checkov: not the package's dependencies.
$(SECURITY_TOOLS):
	$(PYTHON) -m venv $(SECURITY_VENV)
	$(SECURITY_VENV)/bin/python -m pip install --quiet 'bandit>=1.8' 'pip-audit>=2.7'
	touch $(SECURITY_TOOLS)

bandit: $(SECURITY_TOOLS)  ## bandit over the source; justified skips in pyproject.toml [tool.bandit], the rest `# nosec`
	$(SECURITY_VENV)/bin/bandit -c pyproject.toml -q -r src components pipelines scripts benchmarks

audit-deps: $(STAMP) $(SECURITY_TOOLS)  ## pip-audit of .venv's packages; needs PyPI's vulnerability API (fails when unreachable)
	$(SECURITY_VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off --path "$(PURELIB)"
