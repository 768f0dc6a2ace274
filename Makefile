# platform-control-plane — every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the project with its dev tools

.PHONY: run
run: $(STAMP) ## Run the whole system locally (embedded NATS + Postgres, all seven services)
	$(BIN)/platformd dev

.PHONY: test
test: $(STAMP) ## Run the whole test suite (unit, integration, e2e, reliability)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Run only the fast unit tests
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: typecheck
typecheck: $(STAMP) ## mypy (strict) on libs, contracts and services
	$(BIN)/mypy

.PHONY: check
check: lint typecheck test ## Everything CI runs: lint, types, tests

.PHONY: contracts
contracts: $(STAMP) ## Regenerate JSON Schemas and the AsyncAPI document from the models
	$(BIN)/python -m contracts.generate

.PHONY: bench
bench: $(STAMP) ## Throughput and latency benchmarks (outbox relay, consumers, end to end)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

.PHONY: format
format: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: clean
clean: ## Remove the virtualenv, caches and local state
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache state
