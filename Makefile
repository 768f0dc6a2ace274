# platform-control-plane — every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes for `make test` (pytest-xdist, one module per process at a time, so a
# module's stack is started once). A test mostly waits on its stack, so two workers pay
# even on two cores; TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
RUN_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets with one line each
	@if [ -t 1 ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-14s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

# Installs exactly the lock, with pip (all a newcomer has): every file must match its hash
# and nothing is resolved, so today and next month get the same versions. The project then
# goes in editable, without dependencies and built by the locked setuptools rather than one
# fetched into an isolated build. `pip check` stops a pyproject.toml that asks for more than
# the lock holds. A changed lock or pyproject.toml reinstalls.
$(STAMP): requirements/dev.txt pyproject.toml
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || rm -rf $(VENV)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: Python 3.11 or newer is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1)." \
	       "Name one with PYTHON=, e.g. make $(MAKECMDGOALS) PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
	  echo "pyproject.toml asks for what requirements/dev.txt lacks: run make lock"; exit 1; }
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the locked dependencies, then the project

# The lock files, resolved by uv for every platform and Python >= 3.11 at once (--universal,
# so markers such as helm-python-sdk's stay conditional), with hashes. dev.txt (runtime, dev
# extra, build tools) is resolved first; runtime.txt (the image) and build.txt (the image's
# wheel build) are constrained by it, so the image runs the versions the tests ran against.
# Without UPGRADE uv keeps every current pin that still fits pyproject.toml; UPGRADE=1 takes
# the newest release of everything.
LOCK_FILES := requirements/dev.txt requirements/runtime.txt requirements/build.txt
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 \
	--custom-compile-command 'make lock' $(if $(filter 1,$(UPGRADE)),--upgrade)

# Needs uv, not an up-to-date install: `make lock` must work when pyproject.toml has moved
# past the lock, which is exactly when a reinstall would stop at `pip check`.
$(BIN)/uv:
	$(MAKE) --no-print-directory install

.PHONY: lock
lock: $(BIN)/uv ## Re-resolve requirements/*.txt from pyproject.toml (UPGRADE=1: newest of all)
	@for lock in $(LOCK_FILES); do cp -p $$lock $$lock.before 2>/dev/null || true; done
	$(UV_COMPILE) --extra dev pyproject.toml requirements/build.in -o requirements/dev.txt
	$(UV_COMPILE) -c requirements/dev.txt pyproject.toml -o requirements/runtime.txt
	$(UV_COMPILE) -c requirements/dev.txt requirements/build.in -o requirements/build.txt
	@# A lock that did not change keeps its time, so it does not make the next run reinstall.
	@for lock in $(LOCK_FILES); do \
	  if cmp -s $$lock $$lock.before; then touch -r $$lock.before $$lock; fi; rm -f $$lock.before; done

.PHONY: run
run: $(STAMP) ## Run the whole system locally (embedded NATS + Postgres, all seven services)
	$(BIN)/python -m services.tools.platformd.main dev $(RUN_ARGS)

.PHONY: test
test: $(STAMP) ## Run the whole test suite (unit, integration, e2e, reliability)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

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
	$(BIN)/python -m services.tools.contracts_generator

.PHONY: bench
bench: $(STAMP) ## Throughput and latency benchmarks (outbox relay, consumers, end to end)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

.PHONY: bench-reads
bench-reads: $(STAMP) ## The gateway's reads at a fixed rate (GET /v1/environment-requests/{id}, JWT each)
	$(BIN)/python -m tests.bench_reads $(BENCH_ARGS)

# The same tests run in `make test` at PLATFORM_CHAOS_SCALE=small; PLATFORM_CHAOS_SEED=<n>
# replays a run's random choices (each run prints its seed: here on the terminal, in
# `make test` in a failure's captured output).
.PHONY: chaos
chaos: $(STAMP) ## Fault suite at full size: crashes of replicas, NATS, Postgres, a cluster node, a 2-minute git outage
	PLATFORM_CHAOS_SCALE=full PLATFORM_GIT_OUTAGE_SECONDS=120 $(BIN)/pytest -s tests/reliability/test_chaos.py \
		tests/reliability/test_nats_cluster.py tests/reliability/test_git_remote_outage.py $(PYTEST_ARGS)

.PHONY: format
format: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: clean
clean: ## Remove the virtualenv, caches and local state (stop make run first)
	@# platformd deletes the state (PLATFORM_STATE_DIR) with the embedded Postgres' cluster, which
	@# as root may live outside it (state/postgres/data-location), checking where that points first.
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m services.tools.platformd.main clean-state; \
	elif [ -f state/postgres/data-location ]; then rm -rf -- "$$(cat state/postgres/data-location)"; fi
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache state
